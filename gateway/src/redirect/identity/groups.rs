//! Workload groups: `[groups]` names sets of workloads, so rules (`match.workload_group`)
//! and people reading the journal speak of "ci" or "payments pods" rather than of cgroup paths.
//!
//! ```toml
//! [groups]
//! ci = ["unit:ci-runner@*.service", "user:gitlab-runner"]
//! payments = ["pod:payments/*"]
//! contractors = ["uid:1001", "slice:user-1002.slice"]
//! ```
//!
//! A workload is in a group when any one of its entries matches. Entries are `KIND:PATTERN`;
//! `*` in a pattern matches any run of characters (`?` and classes are not special):
//! `uid:N` (exact), `user:NAME`, `unit:NAME` (systemd unit), `slice:NAME` (user slice),
//! `pod:NAMESPACE/NAME` (from the Kubernetes API), `pod_uid:UID`, `cgroup:PATH` (the cgroup or
//! one below it; `*` allowed), `comm:NAME` (the process name: chosen by the process itself, so
//! never a security boundary). Unknown kinds are a config error.
//!
//! [`WorkloadGroups::of`] is the one function deciding a workload's groups; it runs once per
//! connection, when the identity is resolved, and the result travels in
//! [`super::Identity::groups`] to the rules and the journal.

use std::collections::BTreeMap;

use super::Identity;

/// `[groups]` in the config: group name → entries.
pub type GroupsConfig = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Uid(u32),
    User(String),
    Unit(String),
    Slice(String),
    Pod(String),
    PodUid(String),
    Cgroup(String),
    Comm(String),
}

/// The compiled `[groups]`.
#[derive(Debug, Clone, Default)]
pub struct WorkloadGroups {
    groups: Vec<(String, Vec<Entry>)>,
}

/// A group name: letters, digits, `-`, `_`, `.`.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl WorkloadGroups {
    /// Compile `[groups]`; `Err((key, reason))` names the entry.
    pub fn new(cfg: &GroupsConfig) -> Result<Self, (String, String)> {
        let mut groups = Vec::new();
        for (name, entries) in cfg {
            if !valid_name(name) {
                return Err((
                    format!("groups.{name}"),
                    "a group name is letters, digits, `-`, `_` and `.`".into(),
                ));
            }
            if entries.is_empty() {
                return Err((
                    format!("groups.{name}"),
                    "lists no workloads (a group that matches nothing is a typo waiting)".into(),
                ));
            }
            let mut parsed = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                parsed.push(parse(e).map_err(|r| (format!("groups.{name}[{i}]"), r))?);
            }
            groups.push((name.clone(), parsed));
        }
        Ok(Self { groups })
    }

    pub fn is_defined(&self, name: &str) -> bool {
        self.groups.iter().any(|(n, _)| n == name)
    }

    /// The groups `id` is in, in name order.
    pub fn of(&self, id: &Identity) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, entries)| entries.iter().any(|e| e.matches(id)))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn parse(e: &str) -> Result<Entry, String> {
    let (kind, pat) = e.split_once(':').ok_or_else(|| {
        format!("`{e}` is not KIND:PATTERN (uid, user, unit, slice, pod, pod_uid, cgroup, comm)")
    })?;
    if pat.is_empty() {
        return Err(format!("`{e}`: empty pattern"));
    }
    let p = pat.to_string();
    Ok(match kind {
        "uid" => Entry::Uid(
            pat.parse()
                .map_err(|_| format!("`{e}`: a uid is a number"))?,
        ),
        "user" => Entry::User(p),
        "unit" => Entry::Unit(p),
        "slice" => Entry::Slice(p),
        "pod" => {
            if !pat.contains('/') {
                return Err(format!("`{e}`: a pod is NAMESPACE/NAME (`*` allowed)"));
            }
            Entry::Pod(p)
        }
        "pod_uid" => Entry::PodUid(p),
        "cgroup" => Entry::Cgroup(p.trim_end_matches('/').to_string()),
        "comm" => Entry::Comm(p),
        other => {
            return Err(format!(
                "`{e}`: unknown kind `{other}` (uid, user, unit, slice, pod, pod_uid, cgroup, comm)"
            ));
        }
    })
}

impl Entry {
    fn matches(&self, id: &Identity) -> bool {
        let opt = |pat: &str, have: &Option<String>| have.as_deref().is_some_and(|h| glob(pat, h));
        match self {
            Entry::Uid(u) => *u == id.uid,
            Entry::User(p) => opt(p, &id.user),
            Entry::Unit(p) => opt(p, &id.unit),
            Entry::Slice(p) => opt(p, &id.slice),
            Entry::Pod(p) => match (&id.pod_namespace, &id.pod_name) {
                (Some(ns), Some(n)) => glob(p, &format!("{ns}/{n}")),
                _ => false,
            },
            Entry::PodUid(p) => opt(p, &id.pod_uid),
            Entry::Cgroup(p) => id
                .cgroup
                .as_deref()
                .is_some_and(|c| glob(p, c) || glob(&format!("{p}/*"), c)),
            Entry::Comm(p) => glob(p, &id.comm),
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    // Iterative with one backtrack point (the last `*`): linear in practice, no recursion.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(toml: &str) -> Result<WorkloadGroups, (String, String)> {
        let cfg: GroupsConfig = toml::from_str(toml).unwrap();
        WorkloadGroups::new(&cfg)
    }

    #[test]
    fn globs() {
        assert!(glob("ci@*.service", "ci@42.service"));
        assert!(!glob("ci@*.service", "ci@42.scope"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("payments/*", "payments/api-7f9"));
    }

    #[test]
    fn a_workload_is_in_every_group_one_of_whose_entries_matches() {
        let g = groups(
            r#"
            ci = ["unit:ci@*.service", "user:runner"]
            payments = ["pod:payments/*"]
            contractors = ["uid:1001", "cgroup:/user.slice/user-1001.slice"]
            "#,
        )
        .unwrap();
        let ci = Identity {
            uid: 999,
            unit: Some("ci@17.service".into()),
            ..Default::default()
        };
        assert_eq!(g.of(&ci), vec!["ci"]);
        let pod = Identity {
            pod_namespace: Some("payments".into()),
            pod_name: Some("api-1".into()),
            user: Some("runner".into()),
            ..Default::default()
        };
        assert_eq!(g.of(&pod), vec!["ci", "payments"]);
        let contractor = Identity {
            uid: 1002,
            cgroup: Some("/user.slice/user-1001.slice/session-3.scope".into()),
            ..Default::default()
        };
        assert_eq!(g.of(&contractor), vec!["contractors"]);
        assert!(g.of(&Identity::default()).is_empty());
        assert!(g.is_defined("ci") && !g.is_defined("cd"));
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(groups(r#"ci = ["unit"]"#).unwrap_err().0, "groups.ci[0]");
        assert_eq!(groups(r#"ci = ["group:x"]"#).unwrap_err().0, "groups.ci[0]");
        assert_eq!(groups(r#"ci = ["uid:me"]"#).unwrap_err().0, "groups.ci[0]");
        assert_eq!(groups(r#"ci = ["pod:x"]"#).unwrap_err().0, "groups.ci[0]");
        assert_eq!(groups(r#"ci = []"#).unwrap_err().0, "groups.ci");
        assert_eq!(groups(r#""c i" = ["uid:1"]"#).unwrap_err().0, "groups.c i");
    }
}
