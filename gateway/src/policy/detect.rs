//! Built-in secret and identifier detectors.
//!
//! Each detector is a bounded regular expression (every pattern has a finite longest match, so
//! a streaming matcher knows how much it may have to hold back), optionally a capture group `s`
//! (only that part is masked: `password = <s>`), and optionally a confirmation on the match
//! (Luhn, IBAN mod 97, entropy) that turns look-alikes away. Patterns are compiled byte-wise
//! with Unicode off: `\b`, `\s` and classes are ASCII, which the lazy DFA supports.

use super::prefilter::{Cue, assign, is_word, lit};

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
}

impl Detector {
    /// A personal or financial identifier, not a credential.
    const fn personal(self) -> Self {
        Detector {
            credential: false,
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
        &[lit("key").ci().back(18).then(assign)],
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
        &[lit("key").ci().back(9).then(key_id)],
    ),
    d(
        "azure-storage-key",
        "Azure storage account key",
        r"(?i:AccountKey)=(?P<s>[A-Za-z0-9+/]{86}==)",
        &[lit("key").ci().back(7).then(equals)],
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
        r"\bxox[abposr]-[0-9A-Za-z\-]{10,200}\b",
        &[lit("xox[abposr]-").wb()],
    ),
    d(
        "slack-webhook",
        "Slack incoming webhook URL",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}",
        &[lit("://hooks.slack.com/services/T").back(5)],
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
        &[lit("key").ci().back(12).then(assign)],
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
        r"\b[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}\b",
        &[lit(":AA").back(10)],
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
    d(
        "basic-auth-url",
        "password in a URL (scheme://user:password@host)",
        r"\b(?i:https?|ftp|postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|redis|rediss|amqps?)://[A-Za-z0-9._%\-]{1,64}:(?P<s>[^@\s/:]{3,128})@",
        &[lit("://").back(11).then(userinfo)],
    ),
    dc(
        "generic-secret-assignment",
        "password= / secret= / token= with a random-looking value",
        r#"(?i:password|passwd|pwd|secret|api_?key|access_?token|auth_?token|client_?secret)["']?\s{0,4}(?:[:=]|:=|=>)\s{0,4}["']?(?P<s>[^\s"'<>,;`]{8,64})"#,
        password_like,
        &[
            lit("password").ci().then(assign),
            lit("passwd").ci().then(assign),
            lit("pwd").ci().then(assign),
            lit("secret").ci().back(7).then(assign),
            lit("key").ci().back(4).then(assign),
            lit("token").ci().back(7).then(assign),
        ],
    ),
    // Personal and financial identifiers
    dc(
        "credit-card",
        "payment card number (Luhn-checked)",
        r"\b(?:4[0-9]{3}|5[1-5][0-9]{2}|2[2-7][0-9]{2}|3[47][0-9]{2}|6(?:011|5[0-9]{2}))(?:[ \-]?[0-9]{4}){2}[ \-]?[0-9]{1,7}\b",
        luhn,
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

/// Luhn checksum over the digits (separators ignored).
pub fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| (b - b'0') as u32)
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
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
    let t = std::str::from_utf8(s).unwrap_or("");
    let mut it = t.split('-');
    let (Some(a), Some(g), Some(n)) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    a != "000" && a != "666" && !a.starts_with('9') && g != "00" && n != "0000"
}
