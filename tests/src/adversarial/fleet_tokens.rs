//! ID-token attack cases for the fleet's sign-in (issue I), written from the public texts:
//! OpenID Connect Core 1.0 §2 (required claims) and §3.1.3.7 (ID token validation), RFC 7515
//! (JWS: `crit`, `jku`, `jwk`, `x5u`, `x5c`), RFC 7518 (algorithms), RFC 7519 (NumericDate,
//! `exp`/`nbf`), RFC 8725 (JWT BCP: alg confusion, `none`, explicit typing), RFC 9068 (access
//! tokens are `at+jwt`), and the OpenID Foundation's RP certification test names where one
//! exists. Each case is a spec for the misbehaving provider (`fleet_op.py`), which mints it.
//!
//! Every case but the controls must be refused wherever a token is accepted: the HTTPS admin
//! API (`Authorization: Bearer`), the Unix admin socket for a caller with no local rights, and
//! the web page's sign-in callback (the token endpoint answers with the case's ID token).

use serde_json::{Value, json};

/// What a token must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted, with approver rights (the controls: without them a refusal proves nothing).
    Approver,
    /// Accepted as a signed-in identity without approver rights (may not list or decide).
    NoRights,
    /// Refused (401/403 at the API; no session at the web page).
    Refused,
}

#[derive(Debug, Clone)]
pub struct TokenCase {
    pub name: &'static str,
    /// Why it must come to `verdict`: the rule and where it is written.
    pub why: &'static str,
    pub spec: Value,
    pub verdict: Verdict,
}

fn case(name: &'static str, why: &'static str, spec: Value, verdict: Verdict) -> TokenCase {
    TokenCase {
        name,
        why,
        spec,
        verdict,
    }
}

fn refused(name: &'static str, why: &'static str, spec: Value) -> TokenCase {
    case(name, why, spec, Verdict::Refused)
}

/// The case table. Names are stable: findings and `KNOWN` lists refer to them.
pub fn token_cases() -> Vec<TokenCase> {
    use Verdict::*;
    vec![
        // Controls.
        case(
            "ok-alice",
            "control: a correctly signed ID token of an approver",
            json!({}),
            Approver,
        ),
        case(
            "ok-bob-no-rights",
            "control: a correctly signed ID token of a user outside llm-approvers",
            json!({"claims": {"sub": "adv-bob", "email": "bob@adv.test", "preferred_username": "bob", "groups": ["developers"]}}),
            NoRights,
        ),
        // Algorithms (RFC 8725 §2.1, §3.1, §3.2; RFC 7518 §3.6; rp-id_token-sig-none).
        refused(
            "alg-none",
            "alg none: an unsecured JWS is never an ID token from a provider that signs (RFC 8725 3.2; OIDC Core 3.1.3.7 step 6)",
            json!({"sign": "none"}),
        ),
        refused(
            "alg-None-case",
            "alg names are case-sensitive; 'None' is no registered alg (RFC 7518 3.1) and must not be read as none-or-anything",
            json!({"sign": "none", "header": {"alg": "None"}}),
        ),
        refused(
            "alg-NONE-case",
            "as alg-None-case",
            json!({"sign": "none", "header": {"alg": "NONE"}}),
        ),
        refused(
            "alg-none-with-sig",
            "alg none with the provider's valid RS256 signature still appended: the header decides nothing in the verifier's favour",
            json!({"sign": "op", "header": {"alg": "none"}}),
        ),
        refused(
            "alg-rs256-sig-stripped",
            "alg RS256 with an empty signature (rp-id_token-bad-sig-rs256)",
            json!({"sign": "op-strip"}),
        ),
        refused(
            "alg-rs256-bad-sig",
            "one bit of the RS256 signature flipped (rp-id_token-bad-sig-rs256)",
            json!({"sign": "op-flip"}),
        ),
        refused(
            "alg-hs256-pubkey-pem",
            "HS256 keyed with the provider's RSA public key (PEM): the algorithm-confusion attack (RFC 8725 2.1, 3.1)",
            json!({"sign": "hs-pub-pem"}),
        ),
        refused(
            "alg-hs256-pubkey-der",
            "as alg-hs256-pubkey-pem, the key as DER",
            json!({"sign": "hs-pub-der"}),
        ),
        refused(
            "alg-hs256-pubkey-jwk",
            "as alg-hs256-pubkey-pem, the key as its JWK JSON",
            json!({"sign": "hs-pub-jwk"}),
        ),
        refused(
            "alg-hs256-client-secret",
            "HS256 with the client secret: the provider advertises RS256 only (id_token_signing_alg_values_supported), the client registered no HS alg (OIDC Core 10.1, 3.1.3.7 step 7)",
            json!({"sign": "hs-client-secret"}),
        ),
        refused(
            "alg-hs256-empty-key",
            "HS256 with an empty key",
            json!({"sign": "hs-empty"}),
        ),
        refused(
            "alg-es256-attacker",
            "ES256 by a key the provider never published",
            json!({"sign": "attacker-ec"}),
        ),
        refused(
            "alg-ps256-label-on-rs256",
            "header says PS256 over an RS256 signature: the signature must verify under the alg the key allows",
            json!({"sign": "op", "header": {"alg": "PS256"}}),
        ),
        // Keys (RFC 7515 4.1.2-4.1.6; RFC 8725 3.10).
        refused(
            "key-attacker-same-kid",
            "signed by an attacker key, kid naming the provider's key",
            json!({"sign": "attacker", "header": {"kid": "op-rsa-1"}}),
        ),
        refused(
            "key-attacker-unknown-kid",
            "signed by an attacker key whose kid is in no JWKS (a refresh of the JWKS finds nothing either)",
            json!({"sign": "attacker"}),
        ),
        refused(
            "key-attacker-no-kid",
            "signed by an attacker key, no kid (a verifier that tries 'any key' must still find none)",
            json!({"sign": "attacker", "header": {"kid": null}}),
        ),
        refused(
            "kid-path-traversal-hs",
            "kid ../../../../../../dev/null with HS256 keyed by the empty file: the kid is a name, never a path",
            json!({"sign": "hs-empty", "header": {"kid": "../../../../../../dev/null"}}),
        ),
        refused(
            "kid-path-traversal-attacker",
            "kid ../../jwks with an attacker signature",
            json!({"sign": "attacker", "header": {"kid": "../../../../../../etc/passwd"}}),
        ),
        refused(
            "kid-sqlish",
            "kid x' OR '1'='1 with an attacker signature",
            json!({"sign": "attacker", "header": {"kid": "x' OR '1'='1"}}),
        ),
        refused(
            "kid-not-a-string",
            "kid as an object (RFC 7515 4.1.4: a case-sensitive string)",
            json!({"sign": "attacker", "header": {"kid": {"$ne": null}}}),
        ),
        refused(
            "jku-attacker-origin",
            "jku pointing at an attacker's JWKS, signed by that key: keys come from the issuer's discovered jwks_uri only (RFC 8725 3.10)",
            json!({"sign": "attacker", "header": {"jku": "$ATT/jwks.json"}}),
        ),
        refused(
            "jku-issuer-origin",
            "jku on the issuer's own origin but not its jwks_uri (/attacker/jwks serves the attacker's key)",
            json!({"sign": "attacker", "header": {"jku": "$ISS/attacker/jwks"}}),
        ),
        refused(
            "x5u-attacker",
            "x5u pointing at an attacker's certificate",
            json!({"sign": "attacker", "header": {"x5u": "$ATT/cert.pem"}}),
        ),
        refused(
            "jwk-embedded-attacker",
            "the attacker's public key embedded in the header (jwk; CVE-2018-0114)",
            json!({"sign": "attacker", "header": {"jwk": "$ATT_JWK"}}),
        ),
        refused(
            "x5c-embedded-attacker",
            "an attacker's self-signed certificate in x5c",
            json!({"sign": "attacker", "header": {"x5c": "$ATT_X5C"}}),
        ),
        refused(
            "crit-unknown",
            "a crit header naming an extension the verifier does not implement: the JWS MUST be rejected (RFC 7515 4.1.11)",
            json!({"header": {"crit": ["urn:adv:must-understand"], "urn:adv:must-understand": true}}),
        ),
        refused(
            "crit-b64-false",
            "b64=false (RFC 7797) under crit: the signature covers the raw payload; a verifier without RFC 7797 must reject",
            json!({"header": {"crit": ["b64"], "b64": false}}),
        ),
        // Time (RFC 7519 4.1.4-4.1.6; OIDC Core 2, 3.1.3.7 steps 9-10).
        refused(
            "exp-past",
            "expired 10 minutes ago",
            json!({"claims": {"exp": {"$now": -600}, "iat": {"$now": -1200}, "auth_time": {"$now": -1200}}}),
        ),
        refused(
            "exp-missing",
            "exp is REQUIRED in an ID token (OIDC Core 2)",
            json!({"claims": {"exp": null}}),
        ),
        refused(
            "exp-string",
            "exp as a string: a NumericDate is a JSON number (RFC 7519 2)",
            json!({"claims": {"exp": "9999999999"}}),
        ),
        refused("exp-null", "exp null", json!({"claims": {"exp": "$NULL"}})),
        refused(
            "nbf-future",
            "nbf an hour ahead: not yet valid (RFC 7519 4.1.5)",
            json!({"claims": {"nbf": {"$now": 3600}}}),
        ),
        refused(
            "iat-far-future",
            "issued a day in the future (OIDC Core 3.1.3.7 step 10)",
            json!({"claims": {"iat": {"$now": 86400}, "exp": {"$now": 90000}}}),
        ),
        refused(
            "iat-missing",
            "iat is REQUIRED (OIDC Core 2; rp-id_token-iat)",
            json!({"claims": {"iat": null}}),
        ),
        // Issuer (OIDC Core 3.1.3.7 step 2: exact match; rp-id_token-issuer-mismatch).
        refused(
            "iss-other",
            "another issuer",
            json!({"claims": {"iss": "https://accounts.evil.example"}}),
        ),
        refused(
            "iss-trailing-slash",
            "the issuer with a trailing slash added: issuer comparison is exact (OIDC Discovery 4.3)",
            json!({"claims": {"iss": "$ISS/"}}),
        ),
        refused(
            "iss-http-scheme",
            "the issuer spelled with http://",
            json!({"claims": {"iss": "$ISS_HTTP"}}),
        ),
        refused(
            "iss-prefix",
            "the issuer as a prefix of a longer URL",
            json!({"claims": {"iss": "$ISS.evil.example"}}),
        ),
        refused(
            "iss-path-suffix",
            "the issuer with a path appended",
            json!({"claims": {"iss": "$ISS/other-tenant"}}),
        ),
        refused(
            "iss-missing",
            "iss is REQUIRED",
            json!({"claims": {"iss": null}}),
        ),
        refused(
            "iss-array",
            "iss as an array holding the issuer",
            json!({"claims": {"iss": ["$ISS"]}}),
        ),
        // Audience (OIDC Core 3.1.3.7 steps 3-5; rp-id_token-aud).
        refused(
            "aud-other",
            "another client's token",
            json!({"claims": {"aud": "other-client"}}),
        ),
        refused(
            "aud-array-without-client",
            "aud array not containing the client",
            json!({"claims": {"aud": ["other-client", "another"]}}),
        ),
        refused(
            "aud-array-extra-no-azp",
            "aud holds the client plus an untrusted audience and no azp: MUST be rejected when it contains additional audiences not trusted by the client (step 3); azp SHOULD be present (step 4)",
            json!({"claims": {"aud": ["$CLIENT", "untrusted-rp"]}}),
        ),
        refused(
            "azp-other",
            "azp names another client: the ID token was issued to that client (step 5)",
            json!({"claims": {"aud": ["$CLIENT", "untrusted-rp"], "azp": "untrusted-rp"}}),
        ),
        refused(
            "aud-case-variant",
            "aud is the client id in upper case: client ids compare exactly",
            json!({"claims": {"aud": "$CLIENT_UPPER"}}),
        ),
        refused(
            "aud-missing",
            "aud is REQUIRED",
            json!({"claims": {"aud": null}}),
        ),
        refused(
            "sub-missing",
            "sub is REQUIRED (OIDC Core 2)",
            json!({"claims": {"sub": null}}),
        ),
        // Token kinds (RFC 8725 3.11 explicit typing; RFC 9068; OIDC Back-Channel Logout 2.4).
        refused(
            "typ-at-jwt",
            "an access token (typ at+jwt, RFC 9068) signed by the same provider, with the client in aud: not an ID token",
            json!({"header": {"typ": "at+jwt"}, "claims": {"client_id": "$CLIENT", "scope": "openid groups", "jti": "at-1"}}),
        ),
        refused(
            "typ-logout-jwt",
            "a back-channel logout token (typ logout+jwt, events claim) signed by the provider",
            json!({"header": {"typ": "logout+jwt"}, "claims": {"events": {"http://schemas.openid.net/event/backchannel-logout": {}}, "jti": "lo-1"}}),
        ),
        // Group claims: the approver right must come from exactly the groups array.
        case(
            "groups-string-substring",
            "groups as one string that contains the approver group's name: never a substring match",
            json!({"claims": {"groups": "not-llm-approvers-at-all"}}),
            NoRights,
        ),
        case(
            "groups-csv-string",
            "groups as a comma-separated string",
            json!({"claims": {"groups": "developers,llm-approvers"}}),
            NoRights,
        ),
        case(
            "groups-nested",
            "groups as an array of arrays",
            json!({"claims": {"groups": [["llm-approvers"]]}}),
            NoRights,
        ),
        case(
            "groups-object",
            "groups as an object keyed by the group",
            json!({"claims": {"groups": {"llm-approvers": true}}}),
            NoRights,
        ),
        case(
            "groups-case-variant",
            "LLM-Approvers is another group: group names are case-sensitive strings",
            json!({"claims": {"groups": ["LLM-Approvers"]}}),
            NoRights,
        ),
        case(
            "groups-whitespace",
            "' llm-approvers' with a leading space",
            json!({"claims": {"groups": [" llm-approvers"]}}),
            NoRights,
        ),
        case(
            "groups-nul-suffix",
            "'llm-approvers\\u0000x': a NUL must not end the name",
            json!({"claims": {"groups": ["llm-approvers\u{0}x"]}}),
            NoRights,
        ),
        case(
            "groups-homoglyph",
            "llm‐approvers with U+2010 HYPHEN",
            json!({"claims": {"groups": ["llm\u{2010}approvers"]}}),
            NoRights,
        ),
        case(
            "groups-prefixed",
            "'@oidc:llm-approvers' as the group value: the config's syntax is not the claim's",
            json!({"claims": {"groups": ["@oidc:llm-approvers"]}}),
            NoRights,
        ),
        case(
            "groups-other-claim",
            "the group under roles (not the configured groups claim)",
            json!({"claims": {"groups": null, "roles": ["llm-approvers"]}}),
            NoRights,
        ),
        case(
            "groups-in-nested-claim",
            "the group under realm_access.roles",
            json!({"claims": {"groups": null, "realm_access": {"roles": ["llm-approvers"]}}}),
            NoRights,
        ),
        case(
            "groups-sub-is-group-name",
            "a user whose sub is the approver group's name and who has no groups",
            json!({"claims": {"sub": "llm-approvers", "groups": []}}),
            NoRights,
        ),
        // Garbage (RFC 7515 7.1 compact serialization).
        refused("garbage-empty", "an empty bearer token", json!({"raw": ""})),
        refused("garbage-word", "one word", json!({"raw": "approved"})),
        refused(
            "garbage-two-parts",
            "two parts",
            json!({"raw": "eyJhbGciOiJub25lIn0.e30"}),
        ),
        refused(
            "garbage-jwe-five-parts",
            "a JWE-shaped five-part token (alg dir): an ID token here is a JWS",
            json!({"raw": "eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"}),
        ),
        refused(
            "garbage-valid-plus-part",
            "a valid token with a fourth part appended",
            json!({"raw": "{OK}.AAAA"}),
        ),
        refused(
            "garbage-valid-with-whitespace",
            "a valid token with a space inside its signature",
            json!({"raw": "{OK}", "insert_space": true}),
        ),
        refused(
            "garbage-huge",
            "a 1 MiB token: refused with a clear 4xx, the daemon unharmed",
            json!({"raw": "{OK}", "pad_to": 1_048_576}),
        ),
        refused(
            "garbage-deep-json",
            "a header of 100000 nested arrays (parser depth)",
            json!({"raw_header_depth": 100000}),
        ),
    ]
}

/// Cases that only mean something at the sign-in callback (the nonce the page sent).
pub fn callback_cases() -> Vec<TokenCase> {
    vec![
        refused(
            "nonce-missing",
            "the page sent a nonce, the ID token has none (OIDC Core 3.1.3.7 step 11; rp-nonce-invalid)",
            json!({"claims": {"nonce": null}}),
        ),
        refused(
            "nonce-wrong",
            "the ID token's nonce is not the one the page sent (OIDC Core 3.1.3.7 step 11)",
            json!({"claims": {"nonce": "attacker-chosen-nonce-0001"}}),
        ),
    ]
}
