//! Built-in secret and identifier detectors.
//!
//! Each detector is a bounded regular expression (every pattern has a finite longest match, so
//! a streaming matcher knows how much it may have to hold back), optionally a capture group `s`
//! (only that part is masked: `password = <s>`), and optionally a confirmation on the match
//! (Luhn, IBAN mod 97, entropy) that turns look-alikes away. Patterns are compiled byte-wise
//! with Unicode off: `\b`, `\s` and classes are ASCII, which the lazy DFA supports.

use super::prefilter::{Cue, is_name, is_word, lit};

/// Confirm a candidate match (the masked part) beyond what the pattern says.
pub type Confirm = fn(&[u8]) -> bool;

pub struct Detector {
    pub name: &'static str,
    pub pattern: &'static str,
    pub confirm: Option<Confirm>,
    /// What the detector finds, for docs and `gateway check`.
    pub what: &'static str,
    /// What every match contains (any one of them), where: the prefilter looks for these and
    /// the regex runs only around them ([`super::prefilter`]). Change them with the pattern;
    /// the tests check every sampled match of the pattern has one.
    pub cues: &'static [Cue],
    /// A credential (a key, token or password), as opposed to a personal or financial
    /// identifier: found anywhere in a request's head (header, cookie, query, path) it is
    /// removed or the request refused whatever the rules say ([`super::credentials`]).
    pub credential: bool,
    /// The match starts inside a credential's name (`FLW_PUBLIC_KEY=`): a name that says
    /// the value is not secret ([`not_secret_name`]) is turned away.
    pub named: bool,
}

impl Detector {
    /// Is `s` (the part a match would mask) what this detector finds? Its own confirmation
    /// (a checksum, an entropy test), and for a credential not a placeholder
    /// ([`placeholder`]): the one place a built-in match is accepted or turned away.
    /// `hay[start..]` is where the match starts (for [`Detector::named`]).
    pub fn accepts(&self, hay: &[u8], start: usize, s: &[u8]) -> bool {
        self.confirm.is_none_or(|c| c(s))
            && !(self.credential && placeholder(s))
            && !(self.named && not_secret_name(hay, start))
    }

    /// A personal or financial identifier, not a credential.
    const fn personal(self) -> Self {
        Detector {
            credential: false,
            ..self
        }
    }

    /// See [`Detector::named`].
    const fn in_a_name(self) -> Self {
        Detector {
            named: true,
            ..self
        }
    }
}

const fn d(
    name: &'static str,
    what: &'static str,
    pattern: &'static str,
    cues: &'static [Cue],
) -> Detector {
    Detector {
        name,
        pattern,
        confirm: None,
        what,
        cues,
        credential: true,
        named: false,
    }
}

const fn dc(
    name: &'static str,
    what: &'static str,
    pattern: &'static str,
    confirm: Confirm,
    cues: &'static [Cue],
) -> Detector {
    Detector {
        name,
        pattern,
        confirm: Some(confirm),
        what,
        cues,
        credential: true,
        named: false,
    }
}

// Necessary conditions on what follows a cue.

/// `"private_key_id"`: after `key`.
fn key_id(r: &[u8]) -> bool {
    r.starts_with(b"_id\"")
}

/// `AccountKey=`: after `Key`.
fn equals(r: &[u8]) -> bool {
    r.first() == Some(&b'=')
}

/// `.eyJ` JWT part: eight token bytes after `eyJ`.
fn token8(r: &[u8]) -> bool {
    r.len() >= 8 && r[..8].iter().all(|b| is_word(*b) || *b == b'-')
}

/// After `://`: `(?:ptb\.|canary\.)?discord`.
fn discord_host(r: &[u8]) -> bool {
    let r = r
        .strip_prefix(b"ptb.")
        .or_else(|| r.strip_prefix(b"canary."))
        .unwrap_or(r);
    r.starts_with(b"discord")
}

/// After `://`: `[A-Za-z0-9._%\-]{1,64}:[^@\s/:]{3,128}@` (a password in a URL).
fn userinfo(r: &[u8]) -> bool {
    let user = r
        .iter()
        .take(65)
        .take_while(|b| b.is_ascii_alphanumeric() || b"._%-".contains(b))
        .count();
    if user == 0 || user > 64 || r.get(user) != Some(&b':') {
        return false;
    }
    let r = &r[user + 1..];
    let pass = r
        .iter()
        .take(129)
        .take_while(|b| !b"@/:\t\n\x0b\x0c\r ".contains(b))
        .count();
    (3..=128).contains(&pass) && r.get(pass) == Some(&b'@')
}

/// A keyword-named assignment: the keyword at the start of a word or after `_` (not after
/// any byte, so that the streaming masker does not hold back the end of every word that
/// ends like a keyword begins; a `.` or `-` before it is a word's start), then
/// `[\w.-]{0,20}` (the rest of the name), an optional
/// quote, `:` / `=` / `:=` / `=>`, then the value as group `s` (the keyword case-insensitive,
/// as in gitleaks' keyword rules). The cue is the keyword, [`Cue::named`].
macro_rules! named {
    ($kw:literal, $value:literal) => {
        concat!(
            r"(?:\b|_)(?i:",
            $kw,
            r#")[\w.\-]{0,20}["']?\s{0,4}(?:[:=]|:=|=>)\s{0,4}["']?(?P<s>"#,
            $value,
            ")"
        )
    };
}

/// A digit.
fn digit(r: &[u8]) -> bool {
    r.first().is_some_and(u8::is_ascii_digit)
}

/// `n` bytes of `class`.
fn run(r: &[u8], n: usize, class: fn(&u8) -> bool) -> bool {
    r.len() >= n && r[..n].iter().all(class)
}

/// 32 hex digits (lower case).
fn hex32(r: &[u8]) -> bool {
    run(r, 32, |b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// 8 hex digits and `-`: a UUID's start.
fn uuid(r: &[u8]) -> bool {
    run(r, 8, u8::is_ascii_hexdigit) && r.get(8) == Some(&b'-')
}

/// After `dp.`: a Doppler token kind and `.`.
fn doppler_kind(r: &[u8]) -> bool {
    [&b"pt."[..], b"st.", b"sa.", b"ct.", b"scim.", b"audit."]
        .iter()
        .any(|k| r.starts_with(k))
}

/// After `access-`: a Plaid environment and `-`.
fn plaid_env(r: &[u8]) -> bool {
    [&b"sandbox-"[..], b"development-", b"production-"]
        .iter()
        .any(|k| r.starts_with(k))
}

/// After `re_`: 8 letters or digits and `_`.
fn resend_rest(r: &[u8]) -> bool {
    run(r, 8, u8::is_ascii_alphanumeric) && r.get(8) == Some(&b'_')
}

/// After `pat`: 14 letters or digits and `.`.
fn airtable_rest(r: &[u8]) -> bool {
    run(r, 14, u8::is_ascii_alphanumeric) && r.get(14) == Some(&b'.')
}

/// The catalog. Names are stable: rules refer to them.
pub static DETECTORS: &[Detector] = &[
    // Cloud
    d(
        "aws-access-key-id",
        "AWS access key id",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        &[lit("A[3KSBC][TIC]").wb()],
    ),
    dc(
        "aws-secret-access-key",
        "AWS secret access key in an assignment",
        r#"(?i:aws_?secret_?(?:access_?)?key)["']?\s{0,4}[:=]\s{0,4}["']?(?P<s>[A-Za-z0-9/+]{40})\b"#,
        high_entropy,
        &[lit("key").ci().back(18).assigned()],
    ),
    d(
        "google-api-key",
        "Google / GCP / Gemini API key",
        r"\bAIza[0-9A-Za-z_\-]{35}",
        &[lit("AIza").wb()],
    ),
    d(
        "gcp-service-account-key",
        "GCP service account key id (JSON)",
        r#""private_key_id"\s{0,4}:\s{0,4}"(?P<s>[0-9a-f]{40})""#,
        &[lit("key").ci().back(9).then(key_id).in_name(3)],
    ),
    d(
        "azure-storage-key",
        "Azure storage account key",
        r"(?i:AccountKey)=(?P<s>[A-Za-z0-9+/]{86}==)",
        &[lit("key").ci().back(7).then(equals).in_name(0)],
    ),
    d(
        "azure-client-secret",
        "Azure AD client secret",
        r"\b[A-Za-z0-9_~][A-Za-z0-9_~.]{2}8Q~[A-Za-z0-9_~.\-]{31,34}\b",
        &[lit("8Q~").back(3)],
    ),
    d(
        "digitalocean-token",
        "DigitalOcean token",
        r"\bdo[opr]_v1_[a-f0-9]{64}\b",
        &[lit("_v1_").back(3)],
    ),
    // Version control
    d(
        "github-classic-token",
        "GitHub personal access token (classic)",
        r"\bghp_[A-Za-z0-9]{36}\b",
        &[lit("ghp_").wb()],
    ),
    d(
        "github-fine-grained-token",
        "GitHub fine-grained personal access token",
        r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        &[lit("github_pat_").wb()],
    ),
    d(
        "github-oauth-token",
        "GitHub OAuth access token",
        r"\bgho_[A-Za-z0-9]{36}\b",
        &[lit("gho_").wb()],
    ),
    d(
        "github-app-token",
        "GitHub App user-to-server / server-to-server token",
        r"\bgh[us]_[A-Za-z0-9]{36}\b",
        &[lit("gh[us]_").wb()],
    ),
    d(
        "github-refresh-token",
        "GitHub refresh token",
        r"\bghr_[A-Za-z0-9]{36,76}\b",
        &[lit("ghr_").wb()],
    ),
    d(
        "gitlab-token",
        "GitLab personal / project / group access token",
        r"\bglpat-[A-Za-z0-9_\-]{20,50}\b",
        &[lit("glpat-").wb()],
    ),
    d(
        "gitlab-runner-token",
        "GitLab runner or deploy token",
        r"\bgl(?:rt|dt|ptt|cbt)-[A-Za-z0-9_\-]{20,50}\b",
        &[lit("gl[rdpc]").wb()],
    ),
    // Chat, ops, payments, registries
    d(
        "slack-token",
        "Slack bot / user / app token",
        // xoxb-/xoxp-/xoxa-/xoxs-/xoxo-/xoxr-/xoxc-, then a number (team or user id, or the
        // version of `xoxa-2-`): `xoxb-your-bot-token` is not one.
        r"\bxox[abposrc]-[0-9]{1,16}-[0-9A-Za-z\-]{8,200}\b",
        &[lit("xox[abposrc]-").wb().then(digit)],
    ),
    d(
        "slack-webhook",
        "Slack incoming webhook URL",
        // Incoming webhooks, and workflow (Workflow Builder) triggers.
        r"https://hooks\.slack\.com/(?:services/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}|workflows/T[A-Z0-9]{8,12}/A[A-Z0-9]{8,12}/[0-9]{15,20}/[A-Za-z0-9]{24})",
        &[
            lit("://hooks.slack.com/services/T").back(5),
            lit("://hooks.slack.com/workflows/T").back(5),
        ],
    ),
    d(
        "discord-bot-token",
        "Discord bot token",
        r"\b[MN][A-Za-z0-9_\-]{23,25}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}\b",
        &[Cue::DotPair],
    ),
    d(
        "discord-webhook",
        "Discord webhook URL",
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_\-]{60,68}",
        &[lit("://").back(5).then(discord_host)],
    ),
    d(
        "twilio-api-key",
        "Twilio API key",
        r"\bSK[0-9a-f]{32}\b",
        &[lit("SK[0-9a-f]").wb()],
    ),
    d(
        "sendgrid-api-key",
        "SendGrid API key",
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
        &[lit("SG.").wb()],
    ),
    d(
        "stripe-key",
        "Stripe secret or restricted key",
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,99}\b",
        &[lit("[sr]k_live_").wb(), lit("[sr]k_test_").wb()],
    ),
    d(
        "datadog-api-key",
        "Datadog API or app key in an assignment",
        r#"(?i:(?:dd|datadog)_?(?:api|app)_?key)["']?\s{0,4}[:=]\s{0,4}["']?(?P<s>[a-f0-9]{32,40})\b"#,
        &[lit("key").ci().back(12).assigned()],
    ),
    d(
        "npm-token",
        "npm access token",
        r"\bnpm_[A-Za-z0-9]{36}\b",
        &[lit("npm_").wb()],
    ),
    d(
        "pypi-token",
        "PyPI upload token",
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,200}",
        &[lit("pypi-AgEIcHlwaS5vcmc").wb()],
    ),
    d(
        "shopify-token",
        "Shopify access token",
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
        &[lit("shp[acps][atcs]_").wb()],
    ),
    d(
        "telegram-bot-token",
        "Telegram bot token",
        // Also inside the API's URL: `https://api.telegram.org/bot<token>/getMe`.
        r"(?:\b|bot)(?P<s>[0-9]{8,10}:AA[A-Za-z0-9_\-]{33})\b",
        &[lit(":AA").back(13)],
    ),
    d(
        "linear-api-key",
        "Linear API key",
        r"\blin_api_[A-Za-z0-9]{40}\b",
        &[lit("lin_api_").wb()],
    ),
    d(
        "vault-token",
        "HashiCorp Vault token",
        r"\bhv[sb]\.[A-Za-z0-9_\-]{24,200}\b",
        &[lit("hv[sb].").wb()],
    ),
    d(
        "age-secret-key",
        "age encryption secret key",
        r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}\b",
        &[lit("AGE-SECRET-KEY-1").wb()],
    ),
    // LLM providers
    d(
        "openai-api-key",
        "OpenAI API key",
        r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,200}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})\b",
        &[lit("sk-").wb()],
    ),
    d(
        "aws-session-token",
        "AWS STS session token (temporary credentials' token)",
        r"\b(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9/+]{40,4000}={0,2}",
        &[lit("IQoJb3JpZ2luX2Vj").wb(), lit("FwoGZXIvYXdzE").wb()],
    ),
    d(
        "aws-bedrock-api-key",
        "AWS Bedrock API key (long-term ABSK..., short-term bedrock-api-key-...)",
        r"\b(?:ABSK[A-Za-z0-9+/]{32,400}={0,2}|bedrock-api-key-[A-Za-z0-9+/]{32,3000}={0,2})",
        &[lit("ABSK").wb(), lit("bedrock-api-key-").wb()],
    ),
    d(
        "anthropic-api-key",
        "Anthropic API key",
        r"\bsk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_\-]{80,120}",
        &[lit("sk-ant-").wb()],
    ),
    d(
        "groq-api-key",
        "Groq API key",
        r"\bgsk_[A-Za-z0-9]{52}\b",
        &[lit("gsk_").wb()],
    ),
    d(
        "huggingface-token",
        "Hugging Face access token",
        r"\bhf_[A-Za-z]{34}\b",
        &[lit("hf_").wb()],
    ),
    d(
        "xai-api-key",
        "xAI API key",
        r"\bxai-[A-Za-z0-9]{80}\b",
        &[lit("xai-").wb()],
    ),
    d(
        "perplexity-api-key",
        "Perplexity API key",
        r"\bpplx-[A-Za-z0-9]{48}\b",
        &[lit("pplx-").wb()],
    ),
    d(
        "replicate-api-token",
        "Replicate API token",
        r"\br8_[A-Za-z0-9]{37}\b",
        &[lit("r8_").wb()],
    ),
    // Keys and tokens in general
    d(
        "private-key",
        "PEM private key block (also with \\n escapes, as in JSON)",
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s:,\-]|\\n){16,6000}-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        &[lit("-BEGIN ").back(4)],
    ),
    d(
        "jwt",
        "JSON Web Token",
        r"\beyJ[A-Za-z0-9_\-]{8,1000}\.eyJ[A-Za-z0-9_\-]{8,2000}\.[A-Za-z0-9_\-]{16,600}",
        &[lit("eyJ").wb().then(token8)],
    ),
    dc(
        "basic-auth-url",
        "password in a URL (scheme://user:password@host)",
        // Any scheme (RFC 3986 §3.1): snowflake://, git+ssh://, clickhouse://, ...
        // The match starts at `://`: a scheme before it would make the streaming masker hold
        // back every word at the end of a delta.
        r"://[A-Za-z0-9._%\-]{1,64}:(?P<s>[^@\s/:]{3,128})@",
        url_password,
        &[lit("://").then(userinfo)],
    ),
    // A value given to a credential's name, wherever the name is: a keyword, then the rest
    // of the name (`DRONE_TOKEN`, `SECRET_KEY`, `X-Cisco-Meraki-API-Key`, `"routing_key"`), an
    // assignment (`=`, `:`, `:=`, `=>`; a header's `:`), and a value that looks like a
    // credential ([`secret_like`]: not a reference such as `process.env.X`, not a path or URL,
    // not a placeholder). gitleaks' generic-api-key rule is the same idea.
    dc(
        "generic-secret-assignment",
        "a credential's name (password, secret, token, *_key, apikey) given a random-looking value",
        r#"(?i:password|passwd|pwd|secret|token|apikey|[_\-]key)[\w.\-]{0,20}["']?\s{0,4}(?:[:=]|:=|=>)\s{0,4}["']?(?P<s>[^\s"'<>,;`]{8,128})"#,
        secret_like,
        &[
            lit("password").ci().named(),
            lit("passwd").ci().named(),
            lit("pwd").ci().named(),
            lit("secret").ci().named(),
            lit("token").ci().named(),
            lit("apikey").ci().named(),
            lit("[_-]key").ci().named(),
        ],
    )
    .in_a_name(),
    // An `Authorization` header written out (a curl command, a log, an HTTP example): any
    // scheme (`Bearer`, `Basic`, `Token`, `SSWS`, ...) or none, PagerDuty's `token=`.
    dc(
        "authorization-header",
        "credential in an Authorization header written in text",
        r#"(?i:authorization)["']?\s{0,4}[:=]\s{0,4}["']?(?:[A-Za-z][A-Za-z0-9\-]{1,19}\s{1,4})?(?:(?i:token)=)?(?P<s>[A-Za-z0-9._~+/\-]{20,2000}={0,3})"#,
        secret_like,
        &[lit("authorization").ci().assigned()],
    ),
    // A command-line flag naming a credential: `--token X`, `--api-key=X`, `--apikey X`,
    // `--password X`, `ngrok config add-authtoken X`.
    dc(
        "cli-credential-flag",
        "credential passed as a command-line flag",
        r#"(?i:--[a-z\-]{0,20}(?:token|password|passwd|secret|api-?key)|add-authtoken)(?:=|[ \t]{1,4})["']?(?P<s>[^\s"'<>`]{8,200})"#,
        secret_like,
        &[
            lit("token").ci().back(22).then(flag_value),
            lit("password").ci().back(22).then(flag_value),
            lit("passwd").ci().back(22).then(flag_value),
            lit("secret").ci().back(22).then(flag_value),
            lit("apikey").ci().back(22).then(flag_value),
            lit("api-key").ci().back(22).then(flag_value),
        ],
    ),
    // `curl -u user:password`, `--user 'api:key'` (curl's manual, `-u`; gitleaks curl rules).
    dc(
        "cli-user-password",
        "password in a -u / --user user:password flag",
        r#"(?:-u|--user)[ \t]{1,4}["']?[^\s:"']{1,128}:(?P<s>[^\s"']{3,128})"#,
        secret_like,
        &[lit("-u[\t ]"), lit("--user")],
    ),
    // A signature in a URL's query: Azure SAS `sig=`, S3 `X-Amz-Signature=`, GCS
    // `X-Goog-Signature=` (whoever holds the URL holds the access it grants).
    dc(
        "url-signature",
        "signature of a pre-signed URL (Azure SAS sig=, X-Amz-Signature=, X-Goog-Signature=)",
        // From the name on, not from the `?` / `&` before it: a pattern starting with `?`
        // would make the streaming masker hold back every question's end.
        r"\b(?i:sig|signature|x-amz-signature|x-goog-signature)=(?P<s>[A-Za-z0-9%+/_\-]{32,700}={0,2})",
        high_entropy,
        &[
            lit("sig=").ci(),
            lit("signature=").ci().back(7),
        ],
    ),
    // More cloud and infrastructure providers. Formats from each provider's token docs and the
    // gitleaks rule catalogue (MIT, config/gitleaks.toml; rule ids in the comments).
    // gitleaks alibaba-access-key-id; Alibaba Cloud AccessKey docs: `LTAI` + 20.
    d(
        "alibaba-access-key-id",
        "Alibaba Cloud AccessKey id",
        r"\bLTAI[A-Za-z0-9]{20}\b",
        &[lit("LTAI").wb()],
    ),
    // Tencent Cloud API key docs: SecretId `AKID` + 32.
    d(
        "tencent-secret-id",
        "Tencent Cloud SecretId",
        r"\bAKID[A-Za-z0-9]{32}\b",
        &[lit("AKID").wb()],
    ),
    // Amazon MWS auth token: `amzn.mws.` + UUID (Selling Partner docs; trufflehog AmazonMWS).
    d(
        "aws-mws-auth-token",
        "Amazon MWS auth token",
        r"\bamzn\.mws\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        &[lit("amzn.mws.").wb()],
    ),
    // Google OAuth client secret: `GOCSPX-` + 28 (Google Cloud console, since 2021).
    d(
        "gcp-oauth-client-secret",
        "Google OAuth client secret",
        r"\bGOCSPX-[A-Za-z0-9_\-]{28}\b",
        &[lit("GOCSPX-").wb()],
    ),
    // Google OAuth 2.0 access token: `ya29.` (Google Identity docs, "Using OAuth 2.0").
    d(
        "gcp-oauth-access-token",
        "Google OAuth access token",
        r"\bya29\.[A-Za-z0-9_\-]{30,2000}",
        &[lit("ya29.").wb()],
    ),
    // Google OAuth refresh token: `1//0` + base64url (Google Identity docs).
    d(
        "gcp-oauth-refresh-token",
        "Google OAuth refresh token",
        r"\b1//0[A-Za-z0-9_\-]{40,400}",
        &[lit("1//0").wb()],
    ),
    // Firebase Cloud Messaging legacy server key: `AAAA` + 7 + `:APA91b` + 134.
    d(
        "firebase-fcm-server-key",
        "Firebase Cloud Messaging server key",
        r"\bAAAA[A-Za-z0-9_\-]{7}:APA91b[A-Za-z0-9_\-]{134}",
        &[lit(":APA91b").back(11)],
    ),
    // Azure DevOps PAT, 84-character format with the `AZDO` signature at offset 76 (Azure
    // DevOps blog "New Azure DevOps PAT format", 2024).
    // Found beside an Azure / DevOps name, or as a URL's password (basic-auth-url): a
    // pattern starting with 76 free letters would make the streaming masker hold back every
    // word at the end of a delta. The legacy format is 52 base32 letters.
    d(
        "azure-devops-pat",
        "Azure DevOps personal access token in an assignment",
        named!(
            "(?:azure|devops|ado_|ado-)",
            r"(?:[A-Za-z0-9]{76}AZDO[A-Za-z0-9]{4}|[a-z2-7]{52})\b"
        ),
        &[
            lit("azure").ci().back(1).named(),
            lit("devops").ci().back(1).named(),
            lit("ado[_-]").ci().back(1).named(),
        ],
    ),
    // Azure OpenAI / Cognitive Services key: 32 hex in an assignment naming Azure.
    d(
        "azure-openai-key",
        "Azure OpenAI / AI services key in an assignment",
        named!("azure", r"[a-fA-F0-9]{32}\b"),
        &[lit("azure").ci().back(1).named()],
    ),
    // gitleaks databricks-api-token: `dapi` + 32 hex, optional `-N`.
    d(
        "databricks-api-token",
        "Databricks personal access token",
        r"\bdapi[a-f0-9]{32}(?:-[0-9])?\b",
        &[lit("dapi").wb()],
    ),
    // gitleaks cloudflare-origin-ca-key: `v1.0-` + 24 hex + `-` + 146 hex.
    d(
        "cloudflare-origin-ca-key",
        "Cloudflare Origin CA key",
        r"\bv1\.0-[a-f0-9]{24}-[a-f0-9]{146}\b",
        &[lit("v1.0-").wb()],
    ),
    // gitleaks cloudflare-api-key: 40 token bytes in an assignment naming Cloudflare.
    d(
        "cloudflare-api-token",
        "Cloudflare API token in an assignment",
        named!("cloudflare", r"[A-Za-z0-9_\-]{40}\b"),
        &[lit("cloudflare").ci().back(1).named()],
    ),
    // gitleaks cloudflare-global-api-key: 37 hex in an assignment naming Cloudflare.
    d(
        "cloudflare-global-api-key",
        "Cloudflare global API key in an assignment",
        named!("cloudflare", r"[a-fA-F0-9]{37}\b"),
        &[lit("cloudflare").ci().back(1).named()],
    ),
    // gitleaks heroku-api-key-v2: `HRKU-AA` + 58 (Heroku Dev Center, "API tokens").
    d(
        "heroku-api-key",
        "Heroku API key (HRKU- format)",
        r"\bHRKU-AA[0-9A-Za-z_\-]{58}",
        &[lit("HRKU-AA").wb()],
    ),
    // gitleaks heroku-api-key: a UUID in an assignment naming Heroku (the older format).
    d(
        "heroku-api-key-legacy",
        "Heroku API key (UUID) in an assignment",
        named!(
            "heroku",
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        &[lit("heroku").ci().back(1).named()],
    ),
    // Vercel access tokens: `vcp_` personal, `vci_` integration, `vca_` app access, `vcr_` app
    // refresh, `vck_` API key (Vercel changelog, "Vercel tokens are now prefixed", 2025).
    d(
        "vercel-token",
        "Vercel access token",
        r"\bvc[pikar]_[A-Za-z0-9]{24,64}\b",
        &[lit("vc[pikar]_").wb()],
    ),
    // Netlify personal access tokens `nfp_`, OAuth `nfo_`, CLI `nfc_`, ... (Netlify docs).
    d(
        "netlify-token",
        "Netlify access token",
        r"\bnf[pcou]_[A-Za-z0-9]{36,40}\b",
        &[lit("nf[pcou]_").wb()],
    ),
    // gitleaks netlify-access-token: 40..46 token bytes in an assignment naming Netlify.
    d(
        "netlify-access-token-legacy",
        "Netlify access token (unprefixed) in an assignment",
        named!("netlify", r"[A-Za-z0-9=_\-]{40,46}\b"),
        &[lit("netlify").ci().back(1).named()],
    ),
    // Render API key `rnd_` + 32 (Render docs, "API keys").
    d(
        "render-api-key",
        "Render API key",
        r"\brnd_[A-Za-z0-9]{32}\b",
        &[lit("rnd_").wb()],
    ),
    // gitleaks flyio-access-token: `fo1_` + 43, `fm1a_` / `fm1r_` / `fm2_` macaroons.
    d(
        "flyio-access-token",
        "Fly.io access token",
        r"\b(?:fo1_[A-Za-z0-9_\-]{43}|fm1[ar]_[A-Za-z0-9+/]{100,1000}={0,3}|fm2_[A-Za-z0-9+/]{100,1000}={0,3})",
        &[lit("fo1_").wb(), lit("fm1").wb(), lit("fm2_").wb()],
    ),
    // Supabase personal access token `sbp_` + 40 hex (Supabase Management API docs).
    d(
        "supabase-pat",
        "Supabase personal access token",
        r"\bsbp_(?:v0_)?[a-f0-9]{40}\b",
        &[lit("sbp_").wb()],
    ),
    // Supabase secret API key `sb_secret_` (Supabase docs, "API keys", 2025).
    d(
        "supabase-secret-key",
        "Supabase secret API key",
        r"\bsb_secret_[A-Za-z0-9_\-]{31,64}",
        &[lit("sb_secret_").wb()],
    ),
    // Neon API key `napi_` + 64 (Neon docs, "Manage API keys").
    d(
        "neon-api-key",
        "Neon API key",
        r"\bnapi_[a-z0-9]{64}\b",
        &[lit("napi_").wb()],
    ),
    // gitleaks planetscale-api-token / -oauth-token / -password.
    d(
        "planetscale-api-token",
        "PlanetScale service token",
        r"\bpscale_tkn_[A-Za-z0-9_=.\-]{32,64}",
        &[lit("pscale_tkn_").wb()],
    ),
    d(
        "planetscale-oauth-token",
        "PlanetScale OAuth token",
        r"\bpscale_oauth_[A-Za-z0-9_=.\-]{32,64}",
        &[lit("pscale_oauth_").wb()],
    ),
    d(
        "planetscale-password",
        "PlanetScale database password",
        r"\bpscale_pw_[A-Za-z0-9_=.\-]{32,64}",
        &[lit("pscale_pw_").wb()],
    ),
    // gitleaks clickhouse-cloud-api-secret-key: `4b1d` + 38.
    d(
        "clickhouse-cloud-api-key",
        "ClickHouse Cloud API secret key",
        r"\b4b1d[A-Za-z0-9]{38}\b",
        &[lit("4b1d").wb()],
    ),
    // gitleaks dynatrace-api-token: `dt0c01.` + 24 + `.` + 64.
    d(
        "dynatrace-api-token",
        "Dynatrace API token",
        r"\bdt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}\b",
        &[lit("dt0c01.").wb()],
    ),
    // gitleaks new-relic-user-api-key / -insert-key / -browser-api-token; license keys end in
    // `NRAL` (New Relic docs, "API keys").
    d(
        "new-relic-user-api-key",
        "New Relic user API key",
        r"\bNRAK-[A-Z0-9]{27}\b",
        &[lit("NRAK-").wb()],
    ),
    d(
        "new-relic-insert-key",
        "New Relic insert key",
        r"\bNRII-[A-Za-z0-9\-]{32}",
        &[lit("NRII-").wb()],
    ),
    d(
        "new-relic-browser-api-token",
        "New Relic browser API token",
        r"\bNRJS-[a-f0-9]{19}\b",
        &[lit("NRJS-").wb()],
    ),
    d(
        "new-relic-license-key",
        "New Relic ingest license key",
        r"\b[a-f0-9]{36}NRAL\b",
        &[lit("NRAL").back(36)],
    ),
    // gitleaks grafana-api-key / -cloud-api-token / -service-account-token.
    d(
        "grafana-api-key",
        "Grafana API key",
        r"\beyJrIjoi[A-Za-z0-9]{70,400}={0,3}",
        &[lit("eyJrIjoi").wb()],
    ),
    d(
        "grafana-cloud-api-token",
        "Grafana Cloud API token",
        r"\bglc_[A-Za-z0-9+/]{32,400}={0,3}",
        &[lit("glc_").wb()],
    ),
    d(
        "grafana-service-account-token",
        "Grafana service account token",
        r"\bglsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}\b",
        &[lit("glsa_").wb()],
    ),
    // gitleaks sentry-org-token / sentry-user-token: `sntrys_` org auth tokens, `sntryu_` user.
    d(
        "sentry-org-token",
        "Sentry organization auth token",
        r"\bsntrys_eyJpYXQiO[A-Za-z0-9+/]{10,400}={0,2}_[A-Za-z0-9+/]{43}",
        &[lit("sntrys_").wb()],
    ),
    d(
        "sentry-user-token",
        "Sentry user auth token",
        r"\bsntryu_[a-f0-9]{64}\b",
        &[lit("sntryu_").wb()],
    ),
    // gitleaks sentry-access-token: 64 hex in an assignment naming Sentry (older tokens).
    d(
        "sentry-access-token",
        "Sentry auth token (unprefixed) in an assignment",
        named!("sentry", r"[a-fA-F0-9]{64}\b"),
        &[lit("sentry").ci().back(1).named()],
    ),
    // gitleaks sumologic-access-token.
    d(
        "sumologic-access-token",
        "Sumo Logic access key in an assignment",
        named!("sumo", r"[A-Za-z0-9]{64}\b"),
        &[lit("sumo").ci().back(1).named()],
    ),
    // gitleaks doppler-api-token; Doppler docs "Token formats": `dp.pt.` personal, `dp.st.`
    // service, `dp.sa.` service account, `dp.ct.` CLI, `dp.scim.`, `dp.audit.`.
    d(
        "doppler-token",
        "Doppler token",
        r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.(?:[a-z0-9_\-]{1,40}\.)?[A-Za-z0-9]{40,44}\b",
        &[lit("dp.").wb().then(doppler_kind)],
    ),
    // gitleaks pulumi-api-token: `pul-` + 40 hex.
    d(
        "pulumi-access-token",
        "Pulumi access token",
        r"\bpul-[a-f0-9]{40}\b",
        &[lit("pul-").wb()],
    ),
    // gitleaks hashicorp-tf-api-token: 14 + `.atlasv1.` + 60..70.
    d(
        "terraform-cloud-token",
        "Terraform Cloud / Enterprise API token",
        // Masked from `atlasv1.`: the 14 bytes before it are the token's id, and a pattern
        // starting with them (or with the `.`) would make the streaming masker hold back
        // every short word (every sentence's end) at the end of a delta.
        r"\batlasv1\.[A-Za-z0-9_=\-]{60,70}",
        &[lit("atlasv1.").wb()],
    ),
    // gitleaks scalingo-api-token.
    d(
        "scalingo-api-token",
        "Scalingo API token",
        r"\btk-us-[A-Za-z0-9_\-]{48}",
        &[lit("tk-us-").wb()],
    ),
    // Tailscale keys: `tskey-auth-`, `tskey-api-`, `tskey-client-`, ... (Tailscale docs, "Keys").
    d(
        "tailscale-key",
        "Tailscale auth / API / OAuth client key",
        r"\btskey-[a-z]{3,7}-[A-Za-z0-9]{6,20}-[A-Za-z0-9]{16,40}\b",
        &[lit("tskey-").wb()],
    ),
    // gitleaks openshift-user-token: `sha256~` + 43.
    d(
        "openshift-user-token",
        "OpenShift user token",
        r"\bsha256~[A-Za-z0-9_\-]{43}",
        &[lit("sha256~").wb()],
    ),
    // gitleaks octopus-deploy-api-key: `API-` + 26.
    d(
        "octopus-deploy-api-key",
        "Octopus Deploy API key",
        r"\bAPI-[A-Z0-9]{26}\b",
        &[lit("API-").wb()],
    ),
    // Version control, CI and package registries
    // gitleaks gitlab-* rules (GitLab docs, "Token prefixes").
    d(
        "gitlab-feed-token",
        "GitLab feed token",
        r"\bglft-[A-Za-z0-9_\-]{20}\b",
        &[lit("glft-").wb()],
    ),
    d(
        "gitlab-incoming-mail-token",
        "GitLab incoming mail token",
        r"\bglimt-[A-Za-z0-9_\-]{25}\b",
        &[lit("glimt-").wb()],
    ),
    d(
        "gitlab-agent-token",
        "GitLab Kubernetes agent token",
        r"\bglagent-[A-Za-z0-9_\-]{50}\b",
        &[lit("glagent-").wb()],
    ),
    d(
        "gitlab-oauth-app-secret",
        "GitLab OAuth application secret",
        r"\bgloas-[A-Za-z0-9_\-]{64}\b",
        &[lit("gloas-").wb()],
    ),
    d(
        "gitlab-scim-token",
        "GitLab SCIM token",
        r"\bglsoat-[A-Za-z0-9_\-]{20}\b",
        &[lit("glsoat-").wb()],
    ),
    d(
        "gitlab-feature-flag-token",
        "GitLab feature flag client token",
        r"\bglffct-[A-Za-z0-9_\-]{20}\b",
        &[lit("glffct-").wb()],
    ),
    d(
        "gitlab-runner-registration-token",
        "GitLab runner registration token",
        r"\bGR1348941[A-Za-z0-9_\-]{20}\b",
        &[lit("GR1348941").wb()],
    ),
    d(
        "gitlab-session-cookie",
        "GitLab session cookie",
        r"_gitlab_session=(?P<s>[0-9a-z]{32})\b",
        &[lit("_gitlab_session=")],
    ),
    // Bitbucket app passwords carry `ATBB` (Atlassian, "App passwords" / secret scanning).
    d(
        "bitbucket-app-password",
        "Bitbucket app password",
        r"\bATBB[A-Za-z0-9_=\-]{32,60}",
        &[lit("ATBB").wb()],
    ),
    // gitleaks bitbucket-client-secret.
    d(
        "bitbucket-client-secret",
        "Bitbucket OAuth client secret in an assignment",
        named!("bitbucket", r"[A-Za-z0-9=_\-]{64}\b"),
        &[lit("bitbucket").ci().back(1).named()],
    ),
    // gitleaks sourcegraph-access-token: `sgp_` (+ 16 hex instance id or `local_`) + 40 hex.
    d(
        "sourcegraph-access-token",
        "Sourcegraph access token",
        r"\bsgp_(?:[a-fA-F0-9]{16}_|local_)?[a-fA-F0-9]{40}\b",
        &[lit("sgp_").wb()],
    ),
    // Buildkite API access token `bkua_` + 40 hex (Buildkite docs, "API access tokens").
    d(
        "buildkite-token",
        "Buildkite API access token",
        r"\bbkua_[a-f0-9]{40}\b",
        &[lit("bkua_").wb()],
    ),
    // CircleCI personal API token `CCIPAT_` (CircleCI docs, "Managing API tokens").
    d(
        "circleci-token",
        "CircleCI personal API token",
        r"\bCCIPAT_[A-Za-z0-9]{16,30}_[a-f0-9]{40}\b",
        &[lit("CCIPAT_").wb()],
    ),
    // gitleaks travisci-access-token.
    d(
        "travisci-access-token",
        "Travis CI access token in an assignment",
        named!("travis", r"[A-Za-z0-9]{22}\b"),
        &[lit("travis").ci().back(1).named()],
    ),
    // gitleaks codecov-access-token.
    d(
        "codecov-access-token",
        "Codecov access token in an assignment",
        named!("codecov", r"[A-Za-z0-9]{32}\b"),
        &[lit("codecov").ci().back(1).named()],
    ),
    // gitleaks droneci-access-token.
    d(
        "droneci-access-token",
        "Drone CI access token in an assignment",
        named!("droneci", r"[A-Za-z0-9]{32}\b"),
        &[lit("droneci").ci().back(1).named()],
    ),
    // SonarQube tokens `squ_` user, `sqp_` project, `sqa_` global analysis + 40 hex
    // (SonarQube docs, "Managing your tokens"; gitleaks sonar-api-token).
    d(
        "sonarqube-token",
        "SonarQube token",
        r"\bsq[upa]_[a-f0-9]{40}\b",
        &[lit("sq[upa]_").wb()],
    ),
    // gitleaks artifactory-api-key / -reference-token (JFrog docs: `AKCp`, `cmVmd`).
    d(
        "artifactory-api-key",
        "JFrog Artifactory API key",
        r"\bAKCp[A-Za-z0-9]{69}\b",
        &[lit("AKCp").wb()],
    ),
    d(
        "artifactory-reference-token",
        "JFrog Artifactory reference token",
        r"\bcmVmd[A-Za-z0-9]{59}\b",
        &[lit("cmVmd").wb()],
    ),
    // Docker Hub personal / organization access token `dckr_pat_` / `dckr_oat_` (Docker docs).
    d(
        "docker-hub-token",
        "Docker Hub access token",
        r"\bdckr_(?:pat|oat)_[A-Za-z0-9_\-]{27,36}\b",
        &[lit("dckr_").wb()],
    ),
    // gitleaks rubygems-api-token: `rubygems_` + 48 hex.
    d(
        "rubygems-api-token",
        "RubyGems API key",
        r"\brubygems_[a-f0-9]{48}\b",
        &[lit("rubygems_").wb()],
    ),
    // gitleaks clojars-api-token: `CLOJARS_` + 60.
    d(
        "clojars-api-token",
        "Clojars deploy token",
        r"\b(?i:CLOJARS_)[A-Za-z0-9]{60}\b",
        &[lit("CLOJARS_").ci().wb()],
    ),
    // NuGet API key `oy2` + 43 (nuget.org keys; trufflehog NuGet).
    d(
        "nuget-api-key",
        "NuGet API key",
        r"\boy2[a-z0-9]{43}\b",
        &[lit("oy2").wb()],
    ),
    // crates.io API token `cio` + 32 (crates.io, "API tokens").
    d(
        "crates-io-token",
        "crates.io API token",
        r"\bcio[A-Za-z0-9]{32}\b",
        &[lit("cio").wb()],
    ),
    // gitleaks prefect-api-token: `pnu_` + 36.
    d(
        "prefect-api-token",
        "Prefect API key",
        r"\bpnu_[A-Za-z0-9]{36}\b",
        &[lit("pnu_").wb()],
    ),
    // gitleaks readme-api-token: `rdme_` + 70.
    d(
        "readme-api-token",
        "ReadMe API key",
        r"\brdme_[a-z0-9]{70}\b",
        &[lit("rdme_").wb()],
    ),
    // gitleaks infracost-api-token: `ico-` + 32.
    d(
        "infracost-api-token",
        "Infracost API key",
        r"\bico-[A-Za-z0-9]{32}\b",
        &[lit("ico-").wb()],
    ),
    // gitleaks postman-api-token: `PMAK-` + 24 hex + `-` + 34 hex.
    d(
        "postman-api-token",
        "Postman API key",
        r"\bPMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}\b",
        &[lit("PMAK-").wb()],
    ),
    // gitleaks frameio-api-token: `fio-u-` + 64.
    d(
        "frameio-api-token",
        "Frame.io API token",
        r"\bfio-u-[A-Za-z0-9_=\-]{64}",
        &[lit("fio-u-").wb()],
    ),
    // gitleaks typeform-api-token: `tfp_` + 59.
    d(
        "typeform-api-token",
        "Typeform personal access token",
        r"\btfp_[A-Za-z0-9_.=\-]{59}",
        &[lit("tfp_").wb()],
    ),
    // Figma personal access token `figd_` (also `figo_`, `figu_`) (Figma REST API docs).
    d(
        "figma-token",
        "Figma access token",
        r"\bfig[dou]_[A-Za-z0-9_\-]{40,64}",
        &[lit("fig[dou]_").wb()],
    ),
    // Contentful personal access token `CFPAT-` + 43 (Contentful docs, "Personal access tokens").
    d(
        "contentful-pat",
        "Contentful personal access token",
        r"\bCFPAT-[A-Za-z0-9_\-]{43}\b",
        &[lit("CFPAT-").wb()],
    ),
    // gitleaks contentful-delivery-api-token.
    d(
        "contentful-delivery-token",
        "Contentful delivery API token in an assignment",
        named!("contentful", r"[A-Za-z0-9=_\-]{43}\b"),
        &[lit("contentful").ci().back(1).named()],
    ),
    // Identity and secrets management
    // gitleaks 1password-secret-key: `A3-` account secret key.
    d(
        "1password-secret-key",
        "1Password account secret key",
        r"\bA3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}\b",
        &[lit("A3-").wb()],
    ),
    // gitleaks 1password-service-account-token: `ops_eyJ` + base64.
    d(
        "1password-service-account-token",
        "1Password service account token",
        r"\bops_eyJ[A-Za-z0-9+/]{250,4000}={0,3}",
        &[lit("ops_eyJ").wb()],
    ),
    // gitleaks okta-access-token: `00` + 40 in an assignment naming Okta (Okta API tokens).
    d(
        "okta-api-token",
        "Okta API token in an assignment",
        named!("okta", r"00[A-Za-z0-9_=\-]{40}\b"),
        &[lit("okta").ci().back(1).named()],
    ),
    // gitleaks authress-service-client-access-key is left out; Auth0 has no prefix.
    // gitleaks atlassian-api-token: `ATATT3` + 186 (Atlassian API tokens since 2023).
    d(
        "atlassian-api-token",
        "Atlassian (Jira, Confluence) API token",
        r"\bATATT3[A-Za-z0-9_=\-]{186}",
        &[lit("ATATT3").wb()],
    ),
    // gitleaks atlassian-api-token (first alternative): 24-byte token beside Jira / Confluence.
    d(
        "atlassian-api-token-legacy",
        "Atlassian API token (24 bytes) in an assignment naming Jira, Confluence or Atlassian",
        named!("(?:atlassian|confluence|jira)", r"[A-Za-z0-9]{20}[a-fA-F0-9]{4}\b"),
        &[
            lit("atlassian").ci().back(1).named(),
            lit("confluence").ci().back(1).named(),
            lit("jira").ci().back(1).named(),
        ],
    ),
    // gitleaks intra42-client-secret.
    d(
        "intra42-client-secret",
        "42 intra API client secret",
        r"\bs-s4t2(?:ud|af)-[a-f0-9]{64}\b",
        &[lit("s-s4t2").wb()],
    ),
    // gitleaks settlemint-*-access-token.
    d(
        "settlemint-personal-access-token",
        "SettleMint personal access token",
        r"\bsm_pat_[A-Za-z0-9]{16}\b",
        &[lit("sm_pat_").wb()],
    ),
    d(
        "settlemint-application-access-token",
        "SettleMint application access token",
        r"\bsm_aat_[A-Za-z0-9]{16}\b",
        &[lit("sm_aat_").wb()],
    ),
    d(
        "settlemint-service-access-token",
        "SettleMint service access token",
        r"\bsm_sat_[A-Za-z0-9]{16}\b",
        &[lit("sm_sat_").wb()],
    ),
    // More LLM and AI providers
    // OpenRouter API key `sk-or-v1-` + 64 hex (OpenRouter docs, "API keys").
    d(
        "openrouter-api-key",
        "OpenRouter API key",
        r"\bsk-or-v1-[a-f0-9]{64}\b",
        &[lit("sk-or-v1-").wb()],
    ),
    // LangSmith API keys `lsv2_pt_` (personal) / `lsv2_sk_` (service) (LangSmith docs).
    d(
        "langsmith-api-key",
        "LangSmith API key",
        r"\blsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}\b",
        &[lit("lsv2_").wb()],
    ),
    // Tavily API key `tvly-` (Tavily docs).
    d(
        "tavily-api-key",
        "Tavily API key",
        r"\btvly-(?:dev-|prod-)?[A-Za-z0-9]{32}\b",
        &[lit("tvly-").wb()],
    ),
    // Cerebras API key `csk-` + 48 (Cerebras inference docs).
    d(
        "cerebras-api-key",
        "Cerebras API key",
        r"\bcsk-[a-z0-9]{48}\b",
        &[lit("csk-").wb()],
    ),
    // Pinecone API key `pcsk_` (Pinecone docs, "API keys").
    d(
        "pinecone-api-key",
        "Pinecone API key",
        r"\bpcsk_[A-Za-z0-9]{4,10}_[A-Za-z0-9]{40,80}\b",
        &[lit("pcsk_").wb()],
    ),
    // NVIDIA NGC / build.nvidia.com API key `nvapi-` + 64.
    d(
        "nvidia-api-key",
        "NVIDIA API key",
        r"\bnvapi-[A-Za-z0-9_\-]{64}\b",
        &[lit("nvapi-").wb()],
    ),
    // gitleaks huggingface-organization-api-token: `api_org_` + 34 letters.
    d(
        "huggingface-org-token",
        "Hugging Face organization API token",
        r"\bapi_org_[A-Za-z]{34}\b",
        &[lit("api_org_").wb()],
    ),
    // gitleaks cohere-api-token: 40 in an assignment naming Cohere or `CO_API_KEY`.
    d(
        "cohere-api-key",
        "Cohere API key in an assignment",
        named!("(?:cohere|co_api_key)", r"[A-Za-z0-9]{40}\b"),
        &[lit("cohere").ci().back(1).named(), lit("co_api_key").ci().back(1).named()],
    ),
    // Mistral API key: 32 bytes, no prefix (Mistral docs): only in an assignment naming it.
    d(
        "mistral-api-key",
        "Mistral API key in an assignment",
        named!("mistral", r"[A-Za-z0-9]{32}\b"),
        &[lit("mistral").ci().back(1).named()],
    ),
    // Weights & Biases API key: 40 hex (wandb docs), in an assignment naming wandb.
    d(
        "wandb-api-key",
        "Weights & Biases API key in an assignment",
        named!("wandb", r"[a-fA-F0-9]{40}\b"),
        &[lit("wandb").ci().back(1).named()],
    ),
    // Deepgram API key: 40 hex (Deepgram docs), in an assignment naming Deepgram.
    d(
        "deepgram-api-key",
        "Deepgram API key in an assignment",
        named!("deepgram", r"[a-fA-F0-9]{40}\b"),
        &[lit("deepgram").ci().back(1).named()],
    ),
    // ElevenLabs API key `sk_` + 48 hex (ElevenLabs docs), in an assignment naming it.
    d(
        "elevenlabs-api-key",
        "ElevenLabs API key in an assignment",
        named!("(?:elevenlabs|xi_api_key)", r"sk_[a-fA-F0-9]{48}\b"),
        &[lit("elevenlabs").ci().back(1).named(), lit("xi_api_key").ci().back(1).named()],
    ),
    // AssemblyAI API key: 32 hex, in an assignment naming AssemblyAI.
    d(
        "assemblyai-api-key",
        "AssemblyAI API key in an assignment",
        named!("assemblyai", r"[a-fA-F0-9]{32}\b"),
        &[lit("assemblyai").ci().back(1).named()],
    ),
    // Together AI API key: 64 hex (or `tgp_v1_`), in an assignment naming Together.
    d(
        "together-api-key",
        "Together AI API key in an assignment",
        named!("together", r"(?:tgp_v1_[A-Za-z0-9_\-]{43}|[a-fA-F0-9]{64})\b"),
        &[lit("together").ci().back(1).named()],
    ),
    // Chat, email and messaging
    // gitleaks slack-app-token / slack-config-access-token / slack-config-refresh-token.
    d(
        "slack-app-token",
        "Slack app-level token",
        r"\bxapp-[0-9]-[A-Z0-9]{1,20}-[0-9]{1,20}-[a-z0-9]{16,100}\b",
        &[lit("xapp-").wb()],
    ),
    d(
        "slack-config-token",
        "Slack configuration access token",
        r"\bxoxe\.xox[bp]-[0-9]-[A-Za-z0-9]{163,166}\b",
        &[lit("xoxe.xox").wb()],
    ),
    d(
        "slack-config-refresh-token",
        "Slack configuration refresh token",
        r"\bxoxe-[0-9]-[A-Za-z0-9]{146}\b",
        &[lit("xoxe-").wb()],
    ),
    // gitleaks microsoft-teams-webhook.
    d(
        "teams-webhook",
        "Microsoft Teams incoming webhook URL",
        r"https://[a-z0-9]{1,60}\.webhook\.office\.com/webhookb2/[a-z0-9]{8}-(?:[a-z0-9]{4}-){3}[a-z0-9]{12}@[a-z0-9]{8}-(?:[a-z0-9]{4}-){3}[a-z0-9]{12}/IncomingWebhook/[a-z0-9]{32}/[a-z0-9]{8}-(?:[a-z0-9]{4}-){3}[a-z0-9]{12}",
        &[lit(".webhook.office.com/webhookb2/").back(68)],
    ),
    // Google Chat incoming webhook: the `token=` of a spaces/messages URL (Google Chat docs).
    d(
        "google-chat-webhook",
        "Google Chat incoming webhook URL",
        r"https://chat\.googleapis\.com/v1/spaces/[A-Za-z0-9_\-]{11}/messages\?key=[A-Za-z0-9_\-]{39}&token=[A-Za-z0-9_=%\-]{40,60}",
        &[lit("://chat.googleapis.com/v1/spaces/").back(5)],
    ),
    // Zapier catch hook URL (Zapier docs, "Webhooks by Zapier").
    d(
        "zapier-webhook",
        "Zapier webhook URL",
        r"https://hooks\.zapier\.com/hooks/catch/[0-9]{5,10}/[a-z0-9]{6,10}",
        &[lit("://hooks.zapier.com/hooks/catch/").back(5)],
    ),
    // gitleaks discord-client-secret.
    d(
        "discord-client-secret",
        "Discord client secret in an assignment",
        named!("discord", r"[A-Za-z0-9=_\-]{32}\b"),
        &[lit("discord").ci().back(1).named()],
    ),
    // gitleaks mattermost-access-token.
    d(
        "mattermost-access-token",
        "Mattermost access token in an assignment",
        named!("mattermost", r"[A-Za-z0-9]{26}\b"),
        &[lit("mattermost").ci().back(1).named()],
    ),
    // gitleaks gitter-access-token.
    d(
        "gitter-access-token",
        "Gitter access token in an assignment",
        named!("gitter", r"[A-Za-z0-9_\-]{40}\b"),
        &[lit("gitter").ci().back(1).named()],
    ),
    // gitleaks twitch-api-token.
    d(
        "twitch-api-token",
        "Twitch API token in an assignment",
        named!("twitch", r"[A-Za-z0-9]{30}\b"),
        &[lit("twitch").ci().back(1).named()],
    ),
    // gitleaks twitter-bearer-token.
    d(
        "twitter-bearer-token",
        "Twitter / X bearer token in an assignment",
        named!("twitter", r"A{22}[A-Za-z0-9%]{80,100}"),
        &[lit("twitter").ci().back(1).named()],
    ),
    // gitleaks linkedin-client-secret.
    d(
        "linkedin-client-secret",
        "LinkedIn client secret in an assignment",
        named!(r"linked[_\-]?in", r"[A-Za-z0-9]{16}\b"),
        &[lit("linked").ci().back(1).named()],
    ),
    // gitleaks facebook-page-access-token: `EAAM` / `EAAC` + 100.
    d(
        "facebook-access-token",
        "Facebook / Meta access token",
        r"\bEAA[MC][A-Za-z0-9]{100,400}\b",
        &[lit("EAA[MC]").wb()],
    ),
    // gitleaks intercom-api-key.
    d(
        "intercom-api-key",
        "Intercom access token in an assignment",
        named!("intercom", r"[A-Za-z0-9=_\-]{60}\b"),
        &[lit("intercom").ci().back(1).named()],
    ),
    // gitleaks zendesk-secret-key.
    d(
        "zendesk-secret-key",
        "Zendesk API token in an assignment",
        named!("zendesk", r"[A-Za-z0-9]{40}\b"),
        &[lit("zendesk").ci().back(1).named()],
    ),
    // gitleaks sendinblue-api-token: Brevo (Sendinblue) `xkeysib-`; SMTP keys `xsmtpsib-`.
    d(
        "brevo-api-key",
        "Brevo (Sendinblue) API key",
        r"\bxkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}\b",
        &[lit("xkeysib-").wb()],
    ),
    d(
        "brevo-smtp-key",
        "Brevo (Sendinblue) SMTP key",
        r"\bxsmtpsib-[a-f0-9]{64}-[A-Za-z0-9]{16}\b",
        &[lit("xsmtpsib-").wb()],
    ),
    // Mailgun private API key `key-` + 32 hex (Mailgun docs; gitleaks mailgun-private-api-token).
    d(
        "mailgun-api-key",
        "Mailgun private API key",
        r"\bkey-[a-f0-9]{32}\b",
        &[lit("key-").wb().then(hex32)],
    ),
    // gitleaks mailgun-signing-key: 32 hex - 8 hex - 8 hex (also the newer API keys).
    d(
        "mailgun-signing-key",
        "Mailgun API / webhook signing key in an assignment",
        named!("mailgun", r"[a-hA-H0-9]{32}-[a-hA-H0-9]{8}-[a-hA-H0-9]{8}\b"),
        &[lit("mailgun").ci().back(1).named()],
    ),
    // gitleaks mailchimp-api-key: 32 hex + `-us` + data center (Mailchimp docs, "API keys").
    d(
        "mailchimp-api-key",
        "Mailchimp API key",
        r"\b[a-f0-9]{32}-us[0-9]{1,2}\b",
        &[lit("-us").back(32).then(digit)],
    ),
    // Postmark server / account token: a UUID (Postmark docs), beside the Postmark name.
    d(
        "postmark-token",
        "Postmark server or account token in an assignment",
        named!(
            "postmark",
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
        ),
        &[lit("postmark").ci().back(1).named()],
    ),
    // Resend API key `re_` + 8 + `_` + 24 (Resend docs).
    d(
        "resend-api-key",
        "Resend API key",
        r"\bre_[A-Za-z0-9]{8}_[A-Za-z0-9]{24}\b",
        &[lit("re_").wb().then(resend_rest)],
    ),
    // MailerSend API token `mlsn.` + 64 hex (MailerSend docs).
    d(
        "mailersend-api-token",
        "MailerSend API token",
        r"\bmlsn\.[a-f0-9]{64}\b",
        &[lit("mlsn.").wb()],
    ),
    // Twilio auth token: 32 hex (Twilio docs), beside the Twilio name.
    // A Twilio account SID (`AC` + 32 hex) and its auth token side by side, as a client's
    // constructor takes them (`Client("AC...", "token")`; Twilio's quickstarts).
    d(
        "twilio-sid-and-auth-token",
        "Twilio auth token after its account SID",
        r#"\bAC[0-9a-f]{32}["']?\s{0,4}[,:]\s{0,4}["']?(?P<s>[0-9a-f]{32})\b"#,
        &[lit("AC[0-9a-f]").wb()],
    ),
    // Mandrill (Mailchimp Transactional) API key: `md-` + 22 (trufflehog's mandrill detector).
    dc(
        "mandrill-api-key",
        "Mandrill (Mailchimp Transactional) API key",
        r"\bmd-[A-Za-z0-9_\-]{22}\b",
        secret_like,
        &[lit("md-").wb()],
    ),
    // Razorpay key id `rzp_live_` / `rzp_test_` + 14 (Razorpay docs, "API keys").
    d(
        "razorpay-key-id",
        "Razorpay API key id",
        r"\brzp_(?:live|test)_[A-Za-z0-9]{14}\b",
        &[lit("rzp_").wb()],
    ),
    d(
        "twilio-auth-token",
        "Twilio auth token in an assignment",
        named!("twilio", r"[a-fA-F0-9]{32}\b"),
        &[lit("twilio").ci().back(1).named()],
    ),
    // Payments and commerce
    // Stripe webhook signing secret `whsec_` (Stripe docs, "Check the webhook signatures").
    d(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        r"\bwhsec_[A-Za-z0-9]{32,64}\b",
        &[lit("whsec_").wb()],
    ),
    // gitleaks square-access-token; square OAuth secret `sq0csp-` (Square docs).
    d(
        "square-access-token",
        "Square access token",
        r"\b(?:EAAA|sq0atp-)[A-Za-z0-9_\-]{22,60}\b",
        &[lit("EAAA").wb(), lit("sq0atp-").wb()],
    ),
    d(
        "square-oauth-secret",
        "Square OAuth application secret",
        r"\bsq0csp-[A-Za-z0-9_\-]{43}\b",
        &[lit("sq0csp-").wb()],
    ),
    // Braintree / PayPal access token (Braintree docs, "Access tokens").
    d(
        "braintree-access-token",
        "Braintree (PayPal) access token",
        r"\baccess_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}\b",
        &[lit("access_token$").wb()],
    ),
    // Plaid access token (Plaid docs, "Tokens": `access-<env>-<uuid>`).
    d(
        "plaid-access-token",
        "Plaid access token",
        r"\baccess-(?:sandbox|development|production)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        &[lit("access-").wb().then(plaid_env)],
    ),
    // gitleaks plaid-secret-key.
    d(
        "plaid-secret-key",
        "Plaid secret in an assignment",
        named!("plaid", r"[A-Za-z0-9]{30}\b"),
        &[lit("plaid").ci().back(1).named()],
    ),
    // gitleaks flutterwave-secret-key / -encryption-key (Flutterwave docs, "API keys").
    d(
        "flutterwave-secret-key",
        "Flutterwave secret key",
        r"\bFLWSECK(?:_TEST)?-[a-hA-H0-9]{32}-X\b",
        &[lit("FLWSECK").wb()],
    ),
    d(
        "flutterwave-encryption-key",
        "Flutterwave encryption key",
        r"\bFLWSECK_TEST-?[a-hA-H0-9]{12}\b",
        &[lit("FLWSECK").wb()],
    ),
    // gitleaks shippo-api-token.
    d(
        "shippo-api-token",
        "Shippo API token",
        r"\bshippo_(?:live|test)_[a-fA-F0-9]{40}\b",
        &[lit("shippo_").wb()],
    ),
    // gitleaks easypost-api-token / easypost-test-api-token.
    d(
        "easypost-api-key",
        "EasyPost production API key",
        r"\bEZAK[A-Za-z0-9]{54}\b",
        &[lit("EZAK").wb()],
    ),
    d(
        "easypost-test-api-key",
        "EasyPost test API key",
        r"\bEZTK[A-Za-z0-9]{54}\b",
        &[lit("EZTK").wb()],
    ),
    // gitleaks duffel-api-token.
    d(
        "duffel-api-token",
        "Duffel API token",
        r"\bduffel_(?:test|live)_[A-Za-z0-9_=\-]{43}",
        &[lit("duffel_").wb()],
    ),
    // HubSpot private app token `pat-na1-` / `pat-eu1-` + UUID (HubSpot docs, "Private apps").
    d(
        "hubspot-private-app-token",
        "HubSpot private app access token",
        r"\bpat-(?:na|eu|ap)[0-9]-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        &[lit("pat-").wb()],
    ),
    // Salesforce session / access token: org id `00D` + 12..15, `!`, then the session part.
    d(
        "salesforce-access-token",
        "Salesforce access token",
        r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9_.]{80,120}",
        &[lit("00D").wb()],
    ),
    // gitleaks coinbase-access-token.
    d(
        "coinbase-access-token",
        "Coinbase access token in an assignment",
        named!("coinbase", r"[A-Za-z0-9_\-]{64}\b"),
        &[lit("coinbase").ci().back(1).named()],
    ),
    // gitleaks adobe-client-secret: `p8e-` + 32.
    d(
        "adobe-client-secret",
        "Adobe client secret",
        r"\bp8e-[A-Za-z0-9]{32}\b",
        &[lit("p8e-").wb()],
    ),
    // gitleaks airtable-personnal-access-token: `pat` + 14 + `.` + 64 hex.
    d(
        "airtable-pat",
        "Airtable personal access token",
        r"\bpat[A-Za-z0-9]{14}\.[a-f0-9]{64}\b",
        &[lit("pat").wb().then(airtable_rest)],
    ),
    // gitleaks notion-api-token: `ntn_` + 11 digits + 35.
    d(
        "notion-api-token",
        "Notion integration token",
        r"\bntn_[0-9]{11}[A-Za-z0-9]{35}\b",
        &[lit("ntn_").wb()],
    ),
    // Mapbox secret token `sk.eyJ1` (Mapbox docs, "Access tokens"; public `pk.` ones are
    // meant for browsers).
    d(
        "mapbox-secret-token",
        "Mapbox secret access token",
        r"\bsk\.eyJ1[A-Za-z0-9_\-]{20,300}\.[A-Za-z0-9_\-]{20,30}\b",
        &[lit("sk.eyJ1").wb()],
    ),
    // Deno Deploy access tokens `ddp_` / `ddw_` (Deno Deploy docs).
    d(
        "deno-deploy-token",
        "Deno Deploy access token",
        r"\bdd[pw]_[A-Za-z0-9]{36}\b",
        &[lit("dd[pw]_").wb()],
    ),
    // LaunchDarkly SDK / API access keys `sdk-` / `api-` + UUID (LaunchDarkly docs, "Keys").
    d(
        "launchdarkly-key",
        "LaunchDarkly SDK or API access key",
        r"\b(?:sdk|api)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        &[lit("sdk-").wb().then(uuid), lit("api-").wb().then(uuid)],
    ),
    // gitleaks yandex-api-key: `AQVN` + 35..38; yandex-access-token (IAM) `t1.`.
    d(
        "yandex-api-key",
        "Yandex Cloud API key",
        r"\bAQVN[A-Za-z0-9_\-]{35,38}\b",
        &[lit("AQVN").wb()],
    ),
    d(
        "yandex-iam-token",
        "Yandex Cloud IAM token",
        r"\bt1\.[A-Za-z0-9_\-]{10,200}={0,2}\.[A-Za-z0-9_\-]{86}={0,2}",
        &[lit("t1.").wb()],
    ),
    // gitleaks algolia-api-key.
    d(
        "algolia-api-key",
        "Algolia API key in an assignment",
        named!("algolia", r"[A-Za-z0-9]{32}\b"),
        &[lit("algolia").ci().back(1).named()],
    ),
    // gitleaks asana-client-secret.
    d(
        "asana-client-secret",
        "Asana client secret in an assignment",
        named!("asana", r"[A-Za-z0-9]{32}\b"),
        &[lit("asana").ci().back(1).named()],
    ),
    // gitleaks confluent-secret-key.
    d(
        "confluent-secret-key",
        "Confluent Cloud API secret in an assignment",
        named!("confluent", r"[A-Za-z0-9+/]{64}\b"),
        &[lit("confluent").ci().back(1).named()],
    ),
    // gitleaks fastly-api-token.
    d(
        "fastly-api-token",
        "Fastly API token in an assignment",
        named!("fastly", r"[A-Za-z0-9=_\-]{32}\b"),
        &[lit("fastly").ci().back(1).named()],
    ),
    // gitleaks snyk-api-token: a UUID beside the Snyk name.
    d(
        "snyk-api-token",
        "Snyk API token in an assignment",
        named!(
            "snyk",
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
        ),
        &[lit("snyk").ci().back(1).named()],
    ),
    // gitleaks dropbox-short-lived-api-token: `sl.` + 135, beside the Dropbox name.
    d(
        "dropbox-api-token",
        "Dropbox access token in an assignment",
        named!("dropbox", r"sl\.[A-Za-z0-9_=\-]{135,1400}"),
        &[lit("dropbox").ci().back(1).named()],
    ),
    // gitleaks rapidapi-access-token.
    d(
        "rapidapi-access-token",
        "RapidAPI key in an assignment",
        named!("rapidapi", r"[A-Za-z0-9_\-]{50}\b"),
        &[lit("rapidapi").ci().back(1).named()],
    ),
    // gitleaks freshbooks-access-token.
    d(
        "freshbooks-access-token",
        "FreshBooks access token in an assignment",
        named!("freshbooks", r"[A-Za-z0-9]{64}\b"),
        &[lit("freshbooks").ci().back(1).named()],
    ),
    // Personal and financial identifiers
    dc(
        "credit-card",
        "payment card number (Luhn-checked)",
        // Every issuer's range starts with 2..6 (ISO/IEC 7812; Visa, Mastercard, Amex, Diners,
        // Discover, JCB, UnionPay, Maestro); `card` checks the issuer's lengths and Luhn. Amex
        // is also written 4-6-5.
        r"\b(?:[2-6][0-9]{3}(?:[ \-]?[0-9]{4}){2}[ \-]?[0-9]{1,7}|3[47][0-9]{2}[ \-]?[0-9]{6}[ \-]?[0-9]{5})\b",
        card,
        &[Cue::CardDigits],
    )
    .personal(),
    dc(
        "iban",
        "IBAN (checksum-verified)",
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        iban,
        &[Cue::IbanHead],
    )
    .personal(),
    dc(
        "us-ssn",
        "US social security number",
        r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        ssn,
        &[Cue::Ssn],
    )
    .personal(),
    // Nine digits without dashes only beside the name (`"ssn": "123456789"`): alone they are
    // any number.
    dc(
        "us-ssn-named",
        "US social security number in an assignment",
        named!(
            r"(?:ssn|social[_\- ]?security)",
            r"[0-9]{3}-?[0-9]{2}-?[0-9]{4}\b"
        ),
        ssn,
        &[
            lit("ssn").ci().back(1).named(),
            // `social[_\- ]?security`: the name may hold a space, `security` lies in it.
            lit("security").ci().back(8).named(),
        ],
    )
    .personal(),
];

pub fn by_name(name: &str) -> Option<&'static Detector> {
    DETECTORS.iter().find(|d| d.name == name)
}

/// Shannon entropy in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in s {
        counts[*b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// How many of lower case, upper case, digits and other bytes occur in `s`.
fn classes(s: &[u8]) -> usize {
    [
        s.iter().any(u8::is_ascii_lowercase),
        s.iter().any(u8::is_ascii_uppercase),
        s.iter().any(u8::is_ascii_digit),
        s.iter().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|x| **x)
    .count()
}

/// Random-looking: enough entropy, letters mixed with digits or symbols, not a placeholder.
pub fn high_entropy(s: &[u8]) -> bool {
    let lower = s.to_ascii_lowercase();
    for placeholder in [
        &b"xxxx"[..],
        b"changeme",
        b"example",
        b"placeholder",
        b"your_",
        b"your-",
        b"<",
        b"${",
        b"{{",
        b"****",
        b"redacted",
        b"masked",
    ] {
        if lower.windows(placeholder.len()).any(|w| w == placeholder) {
            return false;
        }
    }
    classes(s) >= 2 && entropy(s) >= 3.0
}

/// A literal password, not code: three character classes, random-looking, and none of the
/// brackets or sigils of an expression (`os.environ["X"]`, `getenv(..)`, `${X}`).
pub fn password_like(s: &[u8]) -> bool {
    classes(s) >= 3 && !s.iter().any(|b| b"()[]{}$%".contains(b)) && high_entropy(s)
}

/// The whole name around `hay[at]` (word bytes, `-`, `.`; at most 64 before) says its value
/// is not secret: it is public (`*_PUBLIC_KEY`, `*_PUBLISHABLE_KEY`, `ssh_public_key`), an
/// id (`*_KEY_ID`, `keyId`; ids are found by their own formats, e.g. `AKIA...`), or a key
/// that names data rather than opens anything (`prompt_cache_key`, an API parameter;
/// `idempotency_key`; a database's `primary_key`, `partition_key`, `sort_key`).
fn not_secret_name(hay: &[u8], at: usize) -> bool {
    let start = at
        - hay[at.saturating_sub(64)..at]
            .iter()
            .rev()
            .take_while(|b| is_name(**b))
            .count();
    let end = at
        + hay[at..]
            .iter()
            .take(64)
            .take_while(|b| is_name(**b))
            .count();
    let name = &hay[start..end];
    let lower = name.to_ascii_lowercase();
    let has = |w: &[u8]| lower.windows(w.len()).any(|x| x == w);
    let names_data = [
        &b"cache_key"[..],
        b"cache-key",
        b"cachekey",
        b"idempotency",
        b"primary_key",
        b"foreign_key",
        b"partition_key",
        b"sort_key",
    ];
    has(b"public")
        || has(b"publishable")
        || names_data.iter().any(|w| has(w))
        || [&b"_id"[..], b"-id", b".id"]
            .iter()
            .any(|e| lower.ends_with(e))
        || name.ends_with(b"Id")
        || name.ends_with(b"ID")
}

/// A placeholder where a credential would be: the longest run of letters and digits (at
/// least six) is more than half one byte (`ghp_xxxx...`, `API-XXXX...`, `.../XXXXXXXX`).
/// Random credentials are not (a Dropbox token's run of `A`s is a fifth of it).
pub fn placeholder(s: &[u8]) -> bool {
    s.split(|b| !b.is_ascii_alphanumeric())
        .max_by_key(|r| r.len())
        .filter(|r| r.len() >= 6)
        .is_some_and(|r| {
            let mut counts = [0usize; 256];
            r.iter().for_each(|b| counts[*b as usize] += 1);
            counts.iter().any(|c| 2 * c > r.len())
        })
}

/// A value given to a credential's name that looks like a credential: not a reference to
/// one (`process.env.API_KEY`, `${TOKEN}`, `os.environ["X"]`, `getenv(..)`), not a path or
/// URL, not an identifier (`user.passwordHint`, `YOUR_TOKEN`, `tls-cert-2024`: every part
/// between `_ . -` all letters or all digits); random-looking ([`high_entropy`]) from 16
/// bytes, and below that also three kinds of characters ([`password_like`]).
pub fn secret_like(s: &[u8]) -> bool {
    if s.len() < 8
        || s.starts_with(b"$")
        || s.starts_with(b"@")
        || s.iter().any(|b| b"()[]{}<>".contains(b))
        || s.windows(3).any(|w| w == b"...")
        || s.windows(2).any(|w| w == b"%(" || w == b"%s")
        || s.windows(3).any(|w| w == b"://")
        || [&b"/"[..], b"./", b"../", b"~/"]
            .iter()
            .any(|p| s.starts_with(p))
    {
        return false;
    }
    let identifier = s.split(|b| b"_.-".contains(b)).all(|part| {
        part.iter().all(u8::is_ascii_alphabetic) || part.iter().all(u8::is_ascii_digit)
    });
    !identifier
        && if s.len() >= 16 {
            high_entropy(s)
        } else {
            password_like(s)
        }
}

/// A URL's password that is one ([`secret_like`] is too strict for passwords people
/// choose): not a placeholder (`password`, `<db_password>`, `${GIT_PASSWORD}`, `$PASS`,
/// `****`, `%s`).
fn url_password(s: &[u8]) -> bool {
    let lower = s.to_ascii_lowercase();
    let word = [
        &b"password"[..],
        b"passwd",
        b"pass",
        b"pwd",
        b"secret",
        b"pw",
    ]
    .contains(&&lower[..]);
    let filler = s.iter().all(|b| *b == s[0]);
    !(word
        || filler
        || s.starts_with(b"$")
        || s.starts_with(b"<")
        || s.windows(2).any(|w| w == b"${" || w == b"{{" || w == b"%s"))
}

/// After a flag's credential name: `=` or spaces, then the value.
fn flag_value(r: &[u8]) -> bool {
    let spaces = r
        .iter()
        .take(5)
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    match r.first() {
        Some(b'=') => true,
        _ => (1..=4).contains(&spaces) && r.get(spaces).is_some_and(|b| !b.is_ascii_whitespace()),
    }
}

/// A payment card number: an issuer's range and one of its lengths (ISO/IEC 7812; the
/// issuers' published ranges), and the Luhn check.
pub fn card(s: &[u8]) -> bool {
    let d: Vec<u8> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    let n = d.len();
    if n < 13 {
        return false;
    }
    let p = |k: usize| d[..k].iter().fold(0u32, |a, x| a * 10 + u32::from(*x));
    let lengths_ok = match (p(1), p(2), p(3), p(4)) {
        (4, ..) => matches!(n, 13 | 16 | 19),
        (_, 34 | 37, ..) => n == 15,
        (_, 51..=55, ..) | (.., 2221..=2720) => n == 16,
        (_, 36 | 38 | 39, ..) | (_, _, 300..=305, _) => (14..=19).contains(&n),
        (.., 6011) | (_, _, 644..=649, _) | (_, 65, ..) => (16..=19).contains(&n),
        (.., 3528..=3589) | (_, 62, ..) => (16..=19).contains(&n),
        (_, 50 | 56..=69, ..) => (13..=19).contains(&n),
        _ => false,
    };
    lengths_ok && luhn_digits(&d)
}

/// Luhn checksum over the digits (separators ignored).
pub fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u8> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect();
    (13..=19).contains(&digits.len()) && luhn_digits(&digits)
}

/// The Luhn check over digit values (0..=9).
fn luhn_digits(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN: ISO 13616 mod-97 check (spaces ignored).
pub fn iban(s: &[u8]) -> bool {
    let v: Vec<u8> = s.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&v.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for b in v[4..].iter().chain(&v[..4]) {
        let n = match b {
            b'0'..=b'9' => (b - b'0') as u32,
            b'A'..=b'Z' => (b - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if n >= 10 {
            (rem * 100 + n) % 97
        } else {
            (rem * 10 + n) % 97
        };
    }
    rem == 1
}

/// US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn(s: &[u8]) -> bool {
    let d: Vec<u8> = s.iter().copied().filter(u8::is_ascii_digit).collect();
    if d.len() != 9 {
        return false;
    }
    let (a, g, n) = (&d[..3], &d[3..5], &d[5..]);
    a != b"000" && a != b"666" && a[0] != b'9' && g != b"00" && n != b"0000"
}
