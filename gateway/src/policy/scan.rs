//! Rules compiled into one scanner: every rule's patterns in one multi-pattern regex (one pass
//! over the text, the pattern id says which rule hit), plus a lazy DFA over the same patterns,
//! anchored, that tells whether a match could still start at a position if more text came —
//! what a streaming masker must hold back ([`StreamMasker`]).
//!
//! Streaming gives the same text as masking the whole answer at once: the masker releases text
//! only up to the first position where a match is still possible, and a match is only applied
//! once no longer match can start before it.

use std::sync::Arc;

use regex_automata::{
    Anchored, Input, PatternID,
    hybrid::dfa::{Cache, DFA},
    meta,
    util::{pool::Pool, syntax},
};
use regex_syntax::hir::Hir;
use serde::{Deserialize, Serialize};

use super::{
    detect,
    prefilter::{self, Prefilter, Source},
};
use crate::redirect::identity::Identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Mask,
    Block,
    Hold,
    /// Record only; never alters traffic.
    Monitor,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Block => "block",
            Action::Hold => "hold",
            Action::Monitor => "monitor",
        }
    }

    /// What a hit of a rule with this action does to traffic going `dir`: the one place that
    /// decides it. An answer already streaming cannot be refused or held, so `block` and
    /// `hold` mask there (and the record says which rule asked for what).
    pub fn effect(self, dir: Direction) -> Effect {
        match (self, dir) {
            (Action::Monitor, _) => Effect::Record,
            (Action::Mask, _) | (_, Direction::Response) => Effect::Mask,
            (Action::Block, Direction::Request) => Effect::Block,
            (Action::Hold, Direction::Request) => Effect::Hold,
        }
    }
}

/// What one hit does (see [`Action::effect`]), strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Recorded only; the text passes unchanged.
    Record,
    /// Replaced by the rule's replacement.
    Mask,
    /// The request waits for approval (what is recorded and shown is masked; what goes out
    /// once approved is the text as sent).
    Hold,
    /// The request is refused.
    Block,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Record => "monitor",
            Effect::Mask => "mask",
            Effect::Hold => "hold",
            Effect::Block => "block",
        }
    }
}

/// Which hits a rendering replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Render {
    /// What goes to the other side: `mask` effects only (a held request, once approved, goes
    /// out as the client wrote it).
    #[default]
    Forward,
    /// What people and the journal see: every hit but `monitor` ones.
    Record,
}

impl Render {
    fn replaces(self, e: Effect) -> bool {
        match self {
            Render::Forward => e == Effect::Mask,
            Render::Record => e != Effect::Record,
        }
    }
}

/// Whose traffic a rule applies to: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Who {
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// A group name: the caller's primary group, or the user is a listed member.
    pub group: Option<String>,
    pub unit: Option<String>,
    /// cgroup path prefix, as in the logs (relative to the cgroup v2 root).
    pub cgroup: Option<String>,
    pub pod_uid: Option<String>,
    /// A `[groups]` name: the workload is in that group.
    pub workload_group: Option<String>,
}

impl Who {
    pub fn matches(&self, id: &Identity) -> bool {
        crate::redirect::identity::Match {
            uid: self.uid,
            user: self.user.as_deref(),
            unit: self.unit.as_deref(),
            cgroup: self.cgroup.as_deref(),
            pod_uid: self.pod_uid.as_deref(),
        }
        .matches(id)
            && self.group.as_ref().is_none_or(|g| in_group(g, id))
            && self
                .workload_group
                .as_ref()
                .is_none_or(|g| id.groups.iter().any(|have| have == g))
    }
}

/// The caller's primary gid is the group's, or its user is a listed member.
pub fn in_group(group: &str, id: &Identity) -> bool {
    match group_entry(group) {
        Some((gid, members)) => {
            gid == id.gid || id.user.as_ref().is_some_and(|u| members.contains(u))
        }
        None => false,
    }
}

/// A group's gid and members, from a cache refreshed every 30 s: the lookup reads /etc/group
/// (or NSS), which blocks, and it is asked on the connection threads for every request.
fn group_entry(group: &str) -> Option<(u32, Arc<Vec<String>>)> {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock},
        time::{Duration, Instant},
    };
    type Entry = (Instant, Option<(u32, Arc<Vec<String>>)>);
    static CACHE: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    const FRESH: Duration = Duration::from_secs(30);
    let cache = CACHE.get_or_init(Default::default);
    if let Some((at, e)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(group)
        && at.elapsed() < FRESH
    {
        return e.clone();
    }
    let e = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some((g.gid.as_raw(), Arc::new(g.mem))),
        _ => None,
    };
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() > 1024 {
        c.clear();
    }
    c.insert(group.to_string(), (Instant::now(), e.clone()));
    e
}

/// `[[rule]]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// A built-in detector's name, or "all" for every one of them.
    #[serde(default)]
    pub detector: Option<String>,
    /// A regular expression of your own (bounded: every repetition needs an upper limit).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default = "both")]
    pub on: Vec<Direction>,
    #[serde(default)]
    pub action: Action,
    /// Replacement for `mask`; `<rule>` and `<detector>` are filled in. Default `[MASKED:<rule>]`.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Matches equal to one of these are left alone.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Matches matching one of these (whole match) are left alone.
    #[serde(default)]
    pub allow_regex: Vec<String>,
    #[serde(default, rename = "match")]
    pub who: Option<Who>,
}

fn both() -> Vec<Direction> {
    vec![Direction::Request, Direction::Response]
}

/// `[policy]`: allow-lists that hold for every rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub allow: Vec<String>,
    pub allow_regex: Vec<String>,
    /// Every built-in detector masks both ways beside the `[[rule]]`s. Turned off only by
    /// saying so: `builtin_detectors = false`.
    pub builtin_detectors: bool,
    /// A request body that does not parse as what it looks like.
    pub unreadable: Unreadable,
}

/// `[policy] unreadable`: what happens to a body the gateway cannot parse as what it looks
/// like (broken JSON, a malformed multipart body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreadable {
    /// Refused (the default).
    #[default]
    Refuse,
    /// Scanned as raw bytes: forwarded unchanged when nothing is found, refused otherwise.
    ScanRaw,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            allow_regex: Vec::new(),
            builtin_detectors: true,
            unreadable: Unreadable::Refuse,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("rule `{rule}`: {reason}")]
    Rule { rule: String, reason: String },
    #[error("policy.allow_regex[{index}]: {reason}")]
    Allow { index: usize, reason: String },
    #[error("cannot compile the rules: {0}")]
    Build(String),
}

pub struct Rule {
    pub name: String,
    pub action: Action,
    request: bool,
    response: bool,
    who: Option<Who>,
    allow: Vec<String>,
    allow_regex: Vec<meta::Regex>,
}

/// One pattern of the combined regex: a built-in detector (shared by every rule that names
/// it), a custom `pattern` rule, or a vault key.
struct Pat {
    detector: &'static str,
    /// The rules this pattern serves, in config order, each with its replacement (`<rule>`
    /// and `<detector>` filled in).
    rules: Vec<(usize, String)>,
    /// The built-in detector, which accepts or turns away each match
    /// ([`detect::Detector::accepts`]); a custom pattern accepts every match.
    builtin: Option<&'static detect::Detector>,
    secret_group: bool,
}

/// One hit: the part of the text the rule acts on (the `s` group when the pattern has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The rule whose effect won (the strongest of the pattern's rules that apply).
    pub rule: usize,
    pub effect: Effect,
    /// Which pattern hit, and which of its rules (for the replacement).
    pat: usize,
    slot: usize,
    pub detector: &'static str,
    pub start: usize,
    pub end: usize,
    /// Where the whole match ended (scanning resumes there).
    whole_start: usize,
    whole_end: usize,
}

/// Who is talking, which way.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub dir: Direction,
    pub id: &'a Identity,
}

type CachePool = Pool<
    Cache,
    Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>,
>;

pub struct Scanner {
    rules: Vec<Rule>,
    pats: Vec<Pat>,
    re: meta::Regex,
    /// Each pattern alone (index = pattern id): a window searches only the patterns whose cues
    /// made it, and a match's `s` group is taken from its own pattern. One regex of two hundred
    /// patterns is ~5× slower per byte than a few small ones, its lazy DFA needs far more
    /// cache, and its PikeVM's capture slots (every pattern's groups in every state) took
    /// ~800 MiB on a thread's first capture search.
    single: Vec<meta::Regex>,
    /// Where matches can be; `None`: everywhere (a custom pattern without prefix literals).
    prefilter: Option<Prefilter>,
    live: Arc<DFA>,
    caches: CachePool,
    global_allow: Vec<String>,
    global_allow_regex: Vec<meta::Regex>,
    /// Longest possible match in bytes, over all patterns.
    pub max_len: usize,
    /// Digests of the vault keys this scanner detects.
    keys: std::collections::HashSet<[u8; 32]>,
}

/// The lazy DFA's cache for the combined regex (per thread that scans, filled only as
/// needed). The windows use one small regex per pattern; the combined one searches all the
/// text only when a custom pattern has no literal to cue on. Two hundred patterns, some with
/// long bounded repetitions, need more than the default 2 MiB there: with less, the DFA
/// clears its cache over and over and the regex gives it up for the PikeVM (2 MB/s, against
/// 200 MB/s with 32 MiB).
const HYBRID_CACHE: usize = 32 << 20;

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// Parse a pattern as the scanner compiles it (bytes, Unicode off).
pub(crate) fn parse_pattern(p: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(p)
        .map_err(|e| e.to_string())
}

/// Compile one pattern alone, to report its problems against its rule; its syntax and its
/// longest match.
fn check_pattern(p: &str) -> Result<(Hir, usize), String> {
    let hir = parse_pattern(p)?;
    let props = hir.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return Err("the pattern can match empty text".into());
    }
    let len = props.maximum_len().ok_or_else(|| {
        "the pattern is unbounded (use {m,n} instead of *, + or {m,}): a streaming answer could \
         otherwise be held back without limit"
            .to_string()
    })?;
    Ok((hir, len))
}

fn allow_regex(p: &str) -> Result<meta::Regex, String> {
    meta::Regex::builder()
        .syntax(syntax_config())
        .build(&format!("^(?:{p})$"))
        .map_err(|e| e.to_string())
}

/// The name of the rule (and detector) that masks vault keys.
pub const VAULT_KEY: &str = "vault-key";

/// A vault key shorter than this is matched whole only; a longer one also by any piece of
/// at least this many bytes.
pub const KEY_PIECE: usize = 24;

/// Keys shorter than this are not detectors (they would mask ordinary words).
const KEY_MIN: usize = 12;

fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// A regex matching the key or any piece of it of [`KEY_PIECE`] bytes or more, longest
/// first: for every start offset, the piece's first `KEY_PIECE` bytes, then as many of the
/// key's following bytes as the text repeats.
fn key_pattern(key: &[u8]) -> String {
    fn lit(b: u8) -> String {
        format!("\\x{b:02x}")
    }
    let n = key.len();
    if n < KEY_PIECE {
        return key.iter().map(|&b| lit(b)).collect();
    }
    let mut alts = Vec::new();
    for start in 0..=n - KEY_PIECE {
        let mut p: String = key[start..start + KEY_PIECE]
            .iter()
            .map(|&b| lit(b))
            .collect();
        // (?:a(?:b(?:c)?)?)? over the rest of the key.
        let rest = &key[start + KEY_PIECE..];
        let mut tail = String::new();
        for &b in rest.iter().rev() {
            tail = format!("(?:{}{tail})?", lit(b));
        }
        p.push_str(&tail);
        alts.push(p);
    }
    format!("(?:{})", alts.join("|"))
}

/// The prefilter's literals for a key: 8-byte pieces at offsets 0, 8, 16, ...: every piece
/// of [`KEY_PIECE`] bytes contains one. Each with how far before it a match can start and how
/// far after its start a match can end.
fn key_cues(key: &[u8]) -> Vec<(Vec<u8>, usize, usize)> {
    const W: usize = 8;
    if key.len() < KEY_PIECE {
        return vec![(key.to_vec(), 0, key.len())];
    }
    (0..=key.len() - W)
        .step_by(W)
        .map(|o| (key[o..o + W].to_vec(), o, key.len() - o))
        .collect()
}

impl Scanner {
    /// Compile `[[rule]]`s; the built-in detectors mask both ways beside them unless
    /// `policy.builtin_detectors = false`.
    pub fn new(rules: &[RuleConfig], policy: &PolicyConfig) -> Result<Self, ScanError> {
        Self::with_keys(rules, policy, &[])
    }

    /// [`Self::new`], and every vault key in `keys` masked wherever it (or a piece of it of
    /// [`KEY_PIECE`] bytes or more) appears, both ways.
    pub fn with_keys(
        rules: &[RuleConfig],
        policy: &PolicyConfig,
        keys: &[crate::vault::Secret],
    ) -> Result<Self, ScanError> {
        let mut all: Vec<RuleConfig> = rules.to_vec();
        if policy.builtin_detectors {
            for d in detect::DETECTORS {
                if all.iter().any(|r| r.name == d.name) {
                    // A rule of the user's own with a detector's name replaces that implicit
                    // rule (its name is the one masks and records carry).
                    continue;
                }
                all.push(RuleConfig {
                    name: d.name.to_string(),
                    detector: Some(d.name.to_string()),
                    pattern: None,
                    on: both(),
                    action: Action::Mask,
                    replacement: None,
                    allow: Vec::new(),
                    allow_regex: Vec::new(),
                    who: None,
                });
            }
        }
        let mut key_set = std::collections::HashSet::new();
        let keys: Vec<&str> = keys
            .iter()
            .map(|k| k.expose())
            .filter(|k| k.len() >= KEY_MIN && key_set.insert(key_digest(k)))
            .collect();
        if !keys.is_empty() && !all.iter().any(|r| r.name == VAULT_KEY) {
            all.push(RuleConfig {
                name: VAULT_KEY.to_string(),
                detector: None,
                pattern: None,
                on: both(),
                action: Action::Mask,
                replacement: None,
                allow: Vec::new(),
                allow_regex: Vec::new(),
                who: None,
            });
        }
        let rules = &all[..];
        let mut out_rules = Vec::new();
        let mut pats: Vec<Pat> = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut max_len = 0;
        // Per pattern, for the prefilter: a built-in detector's cues, or a custom pattern's
        // syntax; and the longest match.
        let mut sources: Vec<Source<'static>> = Vec::new();
        let mut names = std::collections::HashSet::new();
        // Built-in detector → its pattern index (one pattern however many rules name it).
        let mut by_detector: std::collections::HashMap<&'static str, usize> = Default::default();
        for (ri, rc) in rules.iter().enumerate() {
            let bad = |reason: String| ScanError::Rule {
                rule: rc.name.clone(),
                reason,
            };
            if rc.name.is_empty()
                || !rc
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(bad("name: letters, digits, '-', '_' and '.' only".into()));
            }
            if !names.insert(rc.name.clone()) {
                return Err(bad("a second rule with this name".into()));
            }
            if rc.on.is_empty() {
                return Err(bad("`on` must name request, response or both".into()));
            }
            let template = rc.replacement.as_deref().unwrap_or("[MASKED:<rule>]");
            let rep = |detector: &str| {
                template
                    .replace("<rule>", &rc.name)
                    .replace("<detector>", detector)
            };
            let mut add_builtin = |det: &'static detect::Detector| -> Result<(), ScanError> {
                if let Some(&p) = by_detector.get(det.name) {
                    pats[p].rules.push((ri, rep(det.name)));
                    return Ok(());
                }
                let (_, len) = check_pattern(det.pattern).map_err(&bad)?;
                max_len = max_len.max(len);
                sources.push(Source::Cues(det.cues, len));
                by_detector.insert(det.name, pats.len());
                pats.push(Pat {
                    detector: det.name,
                    rules: vec![(ri, rep(det.name))],
                    builtin: Some(det),
                    secret_group: det.pattern.contains("(?P<s>"),
                });
                patterns.push(det.pattern.to_string());
                Ok(())
            };
            match (&rc.detector, &rc.pattern) {
                (Some(_), Some(_)) => {
                    return Err(bad("give `detector` or `pattern`, not both".into()));
                }
                (None, None) if rc.name == VAULT_KEY => {
                    for k in &keys {
                        let k = k.as_bytes();
                        let len = k.len();
                        max_len = max_len.max(len);
                        sources.push(Source::Literals(key_cues(k), len));
                        pats.push(Pat {
                            detector: VAULT_KEY,
                            rules: vec![(ri, rep(VAULT_KEY))],
                            builtin: None,
                            secret_group: false,
                        });
                        patterns.push(key_pattern(k));
                    }
                }
                (None, None) => return Err(bad("needs `detector` or `pattern`".into())),
                (Some(d), None) if d == "all" => {
                    for det in detect::DETECTORS {
                        add_builtin(det)?;
                    }
                }
                (Some(d), None) => {
                    let det = detect::by_name(d).ok_or_else(|| {
                        bad(format!(
                            "no built-in detector `{d}` (known: {})",
                            detect::DETECTORS
                                .iter()
                                .map(|d| d.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    add_builtin(det)?;
                }
                (None, Some(p)) => {
                    let (hir, len) = check_pattern(p).map_err(&bad)?;
                    max_len = max_len.max(len);
                    sources.push(Source::Pattern(hir, len));
                    pats.push(Pat {
                        detector: "pattern",
                        rules: vec![(ri, rep("pattern"))],
                        builtin: None,
                        secret_group: p.contains("(?P<s>"),
                    });
                    patterns.push(p.to_string());
                }
            }
            let allow_regex = rc
                .allow_regex
                .iter()
                .map(|p| allow_regex(p).map_err(|e| bad(format!("allow_regex `{p}`: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            out_rules.push(Rule {
                name: rc.name.clone(),
                action: rc.action,
                request: rc.on.contains(&Direction::Request),
                response: rc.on.contains(&Direction::Response),
                who: rc.who.clone(),
                allow: rc.allow.clone(),
                allow_regex,
            });
        }
        if patterns.is_empty() {
            return Err(ScanError::Build(
                "no rules: `policy.builtin_detectors = false` and no `[[rule]]`".into(),
            ));
        }
        let global_allow_regex = policy
            .allow_regex
            .iter()
            .enumerate()
            .map(|(index, p)| allow_regex(p).map_err(|reason| ScanError::Allow { index, reason }))
            .collect::<Result<Vec<_>, _>>()?;
        let re = meta::Regex::builder()
            .syntax(syntax_config())
            .configure(meta::Config::new().hybrid_cache_capacity(HYBRID_CACHE))
            .build_many(&patterns)
            .map_err(|e| ScanError::Build(e.to_string()))?;
        let prefilter = Prefilter::new(&sources).map_err(ScanError::Build)?;
        let live = DFA::builder()
            .syntax(syntax_config())
            .configure(DFA::config().cache_capacity(4 << 20))
            .build_many(&patterns)
            .map_err(|e| ScanError::Build(e.to_string()))?;
        let single = patterns
            .iter()
            .map(|p| {
                meta::Regex::builder()
                    .syntax(syntax_config())
                    .build(p)
                    .map_err(|e| ScanError::Build(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let live = Arc::new(live);
        let for_pool = live.clone();
        let caches: CachePool = Pool::new(Box::new(move || for_pool.create_cache()));
        Ok(Self {
            rules: out_rules,
            pats,
            re,
            single,
            prefilter,
            live,
            caches,
            global_allow: policy.allow.clone(),
            global_allow_regex,
            max_len,
            keys: key_set,
        })
    }

    /// Does this scanner mask the vault key `key`?
    pub fn knows_key(&self, key: &str) -> bool {
        key.len() < KEY_MIN || self.keys.contains(&key_digest(key))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Does any rule look at traffic going this way?
    pub fn any(&self, dir: Direction) -> bool {
        self.rules.iter().any(|r| match dir {
            Direction::Request => r.request,
            Direction::Response => r.response,
        })
    }

    fn allowed(&self, rule: &Rule, s: &[u8]) -> bool {
        let hit = |lits: &[String]| lits.iter().any(|l| l.as_bytes() == s);
        let hit_re = |res: &[meta::Regex]| res.iter().any(|r| r.is_match(s));
        hit(&self.global_allow)
            || hit(&rule.allow)
            || hit_re(&self.global_allow_regex)
            || hit_re(&rule.allow_regex)
    }

    /// Every hit in `hay[from..]` (bytes before `from` are look-behind context only).
    pub fn find(&self, hay: &[u8], from: usize, ctx: Ctx<'_>) -> Vec<Hit> {
        // Always the windows when there is a prefilter: each is searched for the few
        // patterns whose cues made it, cheaper than the combined regex over any text.
        let windows = self
            .prefilter
            .as_ref()
            .map(|pf| pf.windows_by_source(hay, from));
        self.find_within(hay, from, windows, ctx)
    }

    /// The hits in the windows, each searched for the patterns whose cues made it (`None`:
    /// all of `hay[from..]`, every pattern).
    fn find_within(
        &self,
        hay: &[u8],
        from: usize,
        windows: Option<prefilter::Windows>,
        ctx: Ctx<'_>,
    ) -> Vec<Hit> {
        let mut hits = Vec::new();
        match windows {
            Some(w) => {
                let mut at = from;
                for span in &w.spans {
                    let srcs = Some(w.sources(span));
                    at = self.find_in(hay, at.max(span.lo)..span.hi, srcs, ctx, &mut hits);
                }
            }
            None => {
                self.find_in(hay, from..hay.len(), None, ctx, &mut hits);
            }
        }
        hits
    }

    /// The leftmost-first match in `hay[at..end]` of the patterns `srcs` (sorted), as the
    /// combined regex would find it if no other pattern could match there: the earliest
    /// start, then the first pattern. `next` keeps each pattern's last match (a search from
    /// further on finds the same one while it starts there or later).
    fn first_of(
        &self,
        hay: &[u8],
        at: usize,
        end: usize,
        srcs: &[u32],
        next: &mut [Option<Option<regex_automata::Match>>],
    ) -> Option<regex_automata::Match> {
        let mut best: Option<regex_automata::Match> = None;
        for (i, &src) in srcs.iter().enumerate() {
            let m = match next[i] {
                Some(Some(m)) if m.start() >= at => Some(m),
                // No match from an earlier start: none from here either.
                Some(None) => None,
                _ => {
                    let m = self.single[src as usize]
                        .search(&Input::new(hay).range(at..end))
                        .map(|m| {
                            regex_automata::Match::new(PatternID::must(src as usize), m.span())
                        });
                    next[i] = Some(m);
                    m
                }
            };
            if let Some(m) = m
                && best.is_none_or(|b| m.start() < b.start())
            {
                best = Some(m);
            }
        }
        best
    }

    /// [`Self::find`] over every byte, without the prefilter: what it must agree with.
    #[cfg(test)]
    pub(crate) fn find_everywhere(&self, hay: &[u8], from: usize, ctx: Ctx<'_>) -> Vec<Hit> {
        self.find_within(hay, from, None, ctx)
    }

    /// [`Self::find`] in the prefilter's windows, however many.
    #[cfg(test)]
    pub(crate) fn find_windowed(&self, hay: &[u8], from: usize, ctx: Ctx<'_>) -> Vec<Hit> {
        let pf = self.prefilter.as_ref().expect("a prefilter");
        self.find_within(hay, from, Some(pf.windows_by_source(hay, from)), ctx)
    }

    #[cfg(test)]
    pub(crate) fn has_prefilter(&self) -> bool {
        self.prefilter.is_some()
    }

    /// The part of match `m` a rule acts on: its `s` group when the pattern has one.
    fn secret_part(&self, hay: &[u8], m: regex_automata::Match) -> (usize, usize) {
        let p = m.pattern().as_usize();
        if !self.pats[p].secret_group {
            return (m.start(), m.end());
        }
        // The pattern's own regex: the combined one's captures cost every pattern's slots.
        let re = &self.single[p];
        let mut caps = re.create_captures();
        re.search_captures(
            &Input::new(hay)
                .range(m.start()..m.end())
                .anchored(Anchored::Yes),
            &mut caps,
        );
        caps.get_group_by_name("s")
            .map(|g| (g.start, g.end))
            .unwrap_or((m.start(), m.end()))
    }

    /// The hits in `hay[at..end]`; returns where a search after them would go on.
    fn find_in(
        &self,
        hay: &[u8],
        span: std::ops::Range<usize>,
        srcs: Option<&[u32]>,
        ctx: Ctx<'_>,
        hits: &mut Vec<Hit>,
    ) -> usize {
        let (mut at, end) = (span.start, span.end);
        // Each of `srcs`' last match ([`Self::first_of`]).
        let mut next = vec![None; srcs.map_or(0, <[u32]>::len)];
        while at <= end {
            let found = match srcs {
                Some(srcs) => self.first_of(hay, at, end, srcs, &mut next),
                None => self.re.search(&Input::new(hay).range(at..end)),
            };
            let Some(m) = found else {
                break;
            };
            let (mut m, mut pat) = (m, &self.pats[m.pattern().as_usize()]);
            let (mut s, mut e) = self.secret_part(hay, m);
            let mut accepted = None;
            // A value given to a credential's name (generic-secret-assignment) that is itself
            // a known format: that detector's match wins (it names the secret, and masks all
            // of it where the name's value stops at its longest).
            if pat.builtin.is_some_and(|d| d.named)
                && let Some(m2) = self
                    .re
                    .search(&Input::new(hay).range(s..end).anchored(Anchored::Yes))
                && m2.pattern() != m.pattern()
            {
                let pat2 = &self.pats[m2.pattern().as_usize()];
                let (s2, e2) = self.secret_part(hay, m2);
                if pat2
                    .builtin
                    .is_none_or(|d| d.accepts(hay, m2.start(), &hay[s2..e2]))
                {
                    (m, pat, s, e) = (m2, pat2, s2, e2);
                    accepted = Some(true);
                }
            }
            let accepted = accepted.unwrap_or_else(|| {
                pat.builtin
                    .is_none_or(|d| d.accepts(hay, m.start(), &hay[s..e]))
            });
            // Of the pattern's rules that apply here, the one with the strongest effect.
            let mut best: Option<(Effect, usize, usize)> = None;
            if accepted {
                for (slot, (ri, _)) in pat.rules.iter().enumerate() {
                    let rule = &self.rules[*ri];
                    let applies = match ctx.dir {
                        Direction::Request => rule.request,
                        Direction::Response => rule.response,
                    } && rule.who.as_ref().is_none_or(|w| w.matches(ctx.id));
                    if !applies || self.allowed(rule, &hay[s..e]) {
                        continue;
                    }
                    let effect = rule.action.effect(ctx.dir);
                    if best.is_none_or(|b| effect > b.0) {
                        best = Some((effect, *ri, slot));
                    }
                }
            }
            if let Some((effect, rule, slot)) = best {
                hits.push(Hit {
                    rule,
                    effect,
                    pat: m.pattern().as_usize(),
                    slot,
                    detector: pat.detector,
                    start: s,
                    end: e,
                    whole_start: m.start(),
                    whole_end: m.end(),
                });
                at = m.end().max(m.start() + 1);
            } else {
                // Another pattern (or a shorter match of this one) may still start inside.
                at = m.start() + 1;
            }
        }
        at
    }

    /// The first position in `hay[from..]` where a match could still start if more text came
    /// (`hay.len()` when there is none).
    pub fn earliest_live(&self, hay: &[u8], from: usize) -> usize {
        let mut cache = self.caches.get();
        let dfa = &*self.live;
        'start: for s in from..hay.len() {
            let input = Input::new(hay).range(s..).anchored(Anchored::Yes);
            let Ok(mut sid) = dfa.start_state_forward(&mut cache, &input) else {
                return s;
            };
            if sid.is_dead() {
                continue;
            }
            for &b in &hay[s..] {
                match dfa.next_state(&mut cache, sid, b) {
                    Ok(next) if next.is_dead() => continue 'start,
                    Ok(next) => sid = next,
                    // A cache failure: assume live (hold, never leak).
                    Err(_) => return s,
                }
            }
            return s;
        }
        hay.len()
    }

    /// Apply the hits `how` replaces to `text[from..upto]` (hits must lie inside).
    fn render(&self, text: &str, from: usize, upto: usize, hits: &[Hit], how: Render) -> String {
        let mut out = String::with_capacity(upto - from);
        let mut pos = from;
        for h in hits {
            if !how.replaces(h.effect) || h.start < pos {
                continue;
            }
            out.push_str(&text[pos..floor(text, h.start)]);
            out.push_str(&self.pats[h.pat].rules[h.slot].1);
            pos = ceil(text, h.end);
        }
        out.push_str(&text[pos.min(upto)..upto]);
        out
    }

    /// Every hit in a whole text.
    pub fn scan(&self, text: &str, ctx: Ctx<'_>) -> Vec<Hit> {
        self.find(text.as_bytes(), 0, ctx)
    }

    /// `text` with the hits `how` replaces replaced.
    pub fn apply(&self, text: &str, hits: &[Hit], how: Render) -> String {
        self.render(text, 0, text.len(), hits, how)
    }

    /// Mask a whole text at once (what goes to the other side); the hits are returned for the
    /// record (and for block / hold).
    pub fn mask(&self, text: &str, ctx: Ctx<'_>) -> (String, Vec<Hit>) {
        let hits = self.scan(text, ctx);
        if hits.is_empty() {
            return (text.to_string(), hits);
        }
        (self.apply(text, &hits, Render::Forward), hits)
    }

    /// A text as people and the journal may see it: every hit but `monitor` ones replaced,
    /// whatever the rule's action.
    pub fn redact(&self, text: &str, dir: Direction, id: &Identity) -> String {
        let hits = self.scan(text, Ctx { dir, id });
        if hits.is_empty() {
            return text.to_string();
        }
        self.apply(text, &hits, Render::Record)
    }
}

fn floor(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Look-behind context kept from released text (regex assertions look one byte back).
const CONTEXT: usize = 4;

/// Masks one stream of text (one content block) as it arrives.
pub struct StreamMasker {
    scanner: Arc<Scanner>,
    dir: Direction,
    id: Arc<Identity>,
    /// Released context (≤ CONTEXT bytes) followed by the held text.
    buf: String,
    held_from: usize,
    pub hits: Vec<(usize, &'static str)>,
}

impl StreamMasker {
    pub fn new(scanner: Arc<Scanner>, dir: Direction, id: Arc<Identity>) -> Self {
        Self {
            scanner,
            dir,
            id,
            buf: String::new(),
            held_from: 0,
            hits: Vec::new(),
        }
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.held_from
    }

    /// Take `chunk`; return what can be released now (masked).
    pub fn push(&mut self, chunk: &str) -> String {
        self.buf.push_str(chunk);
        let bytes = self.buf.as_bytes();
        let live = self.scanner.earliest_live(bytes, self.held_from);
        let ctx = Ctx {
            dir: self.dir,
            id: &self.id,
        };
        let hits = self.scanner.find(bytes, self.held_from, ctx);
        // Matches starting before the first live position are final; a value given to a
        // credential's name only when its value starts before it too (a match of a known
        // format may still grow from there and take its place: `find_in`), and until then
        // it is held from the name on.
        let named = |h: &Hit| self.scanner.pats[h.pat].builtin.is_some_and(|d| d.named);
        let (done, open): (Vec<Hit>, Vec<Hit>) = hits
            .into_iter()
            .partition(|h| h.whole_start < live && (!named(h) || h.start < live));
        let mut cut = live;
        if let Some(first_open) = open.iter().map(|h| h.whole_start).min() {
            cut = cut.min(first_open);
        }
        if let Some(last) = done.iter().map(|h| h.whole_end).max() {
            cut = cut.max(last);
        }
        self.release(floor(&self.buf, cut), &done)
    }

    /// The stream ended: everything left, masked.
    pub fn finish(&mut self) -> String {
        let ctx = Ctx {
            dir: self.dir,
            id: &self.id,
        };
        let hits = self.scanner.find(self.buf.as_bytes(), self.held_from, ctx);
        self.release(self.buf.len(), &hits)
    }

    fn release(&mut self, cut: usize, hits: &[Hit]) -> String {
        if cut <= self.held_from {
            return String::new();
        }
        for h in hits {
            self.hits.push((h.rule, h.detector));
        }
        let out = self
            .scanner
            .render(&self.buf, self.held_from, cut, hits, Render::Forward);
        // Keep a little released text as look-behind context for the next scan.
        let keep_from = floor(&self.buf, cut.saturating_sub(CONTEXT));
        self.buf.drain(..keep_from);
        self.held_from = cut - keep_from;
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
