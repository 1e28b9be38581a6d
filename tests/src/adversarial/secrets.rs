//! The planted secrets: the shapes the contract says every built-in detector finds (GitHub
//! classic, AWS access key id, OpenAI project key, Slack bot, Stripe live, GitLab PAT), each
//! case with its own values so no case passes by matching another's.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gh,
    Aws,
    OpenAi,
    Slack,
    Stripe,
    Gitlab,
}

pub const KINDS: [Kind; 6] = [
    Kind::Gh,
    Kind::Aws,
    Kind::OpenAi,
    Kind::Slack,
    Kind::Stripe,
    Kind::Gitlab,
];

pub const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
pub const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
pub const OPENAI: &str = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";

/// FNV-1a: a stable seed from a case name.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    fn pick(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A secret of `kind`; seed 0 gives the documented example.
pub fn secret(kind: Kind, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let canonical = seed == 0;
    match kind {
        Kind::Gh if canonical => GH.into(),
        Kind::Gh => format!("ghp_{}", r.pick(ALNUM, 36)),
        Kind::Aws if canonical => AWS.into(),
        Kind::Aws => format!("AKIA{}", r.pick(UPPER_B32, 16)),
        Kind::OpenAi if canonical => OPENAI.into(),
        Kind::OpenAi => format!("sk-proj-{}", r.pick(ALNUM, 54)),
        Kind::Slack => format!("xoxb-123456789012-1234567890123-{}", r.pick(ALNUM, 24)),
        Kind::Stripe => format!("sk_live_{}", r.pick(ALNUM, 24)),
        Kind::Gitlab => format!("glpat-{}", r.pick(ALNUM, 20)),
    }
}

/// The rule name the contract promises for a kind, where it names one.
pub fn rule(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Gh => Some("github-classic-token"),
        Kind::Aws => Some("aws-access-key-id"),
        Kind::OpenAi => Some("openai-api-key"),
        _ => None,
    }
}

/// The secret chosen for a case name (and, for `second`, a different kind).
pub fn for_case(name: &str, second: bool) -> (Kind, String) {
    let s = seed_of(name);
    let i = ((s >> 7) % 6) as usize;
    let k = KINDS[if second { (i + 3) % 6 } else { i }];
    (k, secret(k, s ^ if second { 0x5bd1e995 } else { 0 }))
}

/// The secret with its first character and every `_`/`-` as JSON `\u` escapes (still a
/// secret once decoded).
pub fn json_escaped(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 || c == '_' || c == '-' {
                format!("\\u{:04X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}
