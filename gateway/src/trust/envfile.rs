//! `/etc/environment` (pam_env's `KEY=VALUE` file, read by login sessions: ssh, su -l, runner
//! services that ask PAM) and `/etc/profile.d/gateway-ca.sh` (read by login shells:
//! `bash -l`, GitLab's shell executor): the lines `gateway ca install` owns in them.
//!
//! Pure text functions, so every edit is tested without a file system. A line we add is always
//! preceded by [`MARK`]; an admin's own line (no mark) is never changed or removed.

/// The comment above each line `gateway ca install` added.
pub const MARK: &str = "# added by `gateway ca install` (`gateway ca uninstall` removes it)";
/// The first line of the profile.d script we write.
pub const PROFILE_HEADER: &str =
    "# written by `gateway ca install` (`gateway ca uninstall` removes it)";

/// One variable as `/etc/environment` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    /// Added by us (the line above is [`MARK`]).
    pub ours: bool,
}

/// `KEY=VALUE` of a line, as pam_env reads it: `#` comments and blank lines skipped, an
/// optional `export `, one pair of matching quotes around the value removed.
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
    let (k, v) = l.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let v = v.trim();
    let v = ['"', '\'']
        .iter()
        .find_map(|q| {
            v.strip_prefix(*q)
                .and_then(|r| r.strip_suffix(*q))
                .filter(|_| v.len() >= 2)
        })
        .unwrap_or(v);
    Some((k, v))
}

/// The value `key` gets from `text` (the last line naming it wins, as pam_env applies them in
/// order).
pub fn get(text: &str, key: &str) -> Option<Setting> {
    let mut prev = "";
    let mut found = None;
    for line in text.lines() {
        if let Some((k, v)) = parse_line(line)
            && k == key
        {
            found = Some(Setting {
                value: v.to_string(),
                ours: prev.trim() == MARK,
            });
        }
        prev = line;
    }
    found
}

/// Every `KEY=VALUE` of the file, in order (later ones override earlier ones).
pub fn pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(parse_line)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `KEY=VALUE` as written to the file: bare when the value is plain, else double-quoted.
fn render(key: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:,".contains(&b));
    if plain {
        format!("{key}={value}")
    } else {
        format!("{key}=\"{value}\"")
    }
}

/// What [`set`] did to one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Added,
    /// Our own line had another value (e.g. the state dir moved).
    Updated {
        from: String,
    },
    AlreadySet,
    /// The admin's own line: left as it is.
    Kept {
        theirs: String,
    },
}

/// `text` with `key=value` set, unless an admin's own line names `key`.
pub fn set(text: &str, key: &str, value: &str) -> (String, Edit) {
    match get(text, key) {
        Some(s) if !s.ours => (text.to_string(), Edit::Kept { theirs: s.value }),
        Some(s) if s.value == value => (text.to_string(), Edit::AlreadySet),
        Some(s) => {
            // Replace our last line for `key` in place.
            let lines: Vec<&str> = text.lines().collect();
            let at = lines
                .iter()
                .rposition(|l| parse_line(l).is_some_and(|(k, _)| k == key))
                .unwrap_or_default();
            let mut out = String::with_capacity(text.len() + value.len());
            for (i, l) in lines.iter().enumerate() {
                if i == at {
                    out.push_str(&render(key, value));
                } else {
                    out.push_str(l);
                }
                out.push('\n');
            }
            (out, Edit::Updated { from: s.value })
        }
        None => {
            let mut out = text.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(MARK);
            out.push('\n');
            out.push_str(&render(key, value));
            out.push('\n');
            (out, Edit::Added)
        }
    }
}

/// `text` without the lines we added for `key` (the mark and the line after it). Returns the
/// values removed.
pub fn unset(text: &str, key: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len());
    let mut removed = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == MARK
            && let Some((k, v)) = lines.get(i + 1).and_then(|l| parse_line(l))
            && k == key
        {
            removed.push(v.to_string());
            i += 2;
            continue;
        }
        out.push_str(lines[i]);
        out.push('\n');
        i += 1;
    }
    if removed.is_empty() {
        return (text.to_string(), removed);
    }
    (out, removed)
}

/// A value in single quotes for sh.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The profile.d script: each variable exported unless the environment has it already (a
/// job's own value, or one pam_env set from /etc/environment).
pub fn profile_script(vars: &[(&str, String)]) -> String {
    let mut s = String::new();
    s.push_str(PROFILE_HEADER);
    s.push('\n');
    s.push_str(
        "# The gateway's internal CA for runtimes that do not read the system trust store.\n\
         # A value the environment already has is kept.\n",
    );
    for (k, v) in vars {
        s.push_str(&format!(
            "if [ -z \"${{{k}-}}\" ]; then export {k}={}; fi\n",
            sh_quote(v)
        ));
    }
    s
}

/// The variables a profile.d script of ours exports (for doctor): `(key, value)`.
pub fn profile_vars(script: &str) -> Vec<(String, String)> {
    if !script.starts_with(PROFILE_HEADER) {
        return Vec::new();
    }
    script
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("then export ")?.1;
            let (k, v) = rest.split_once('=')?;
            let v = v.strip_suffix("; fi")?;
            let v = v.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((k.to_string(), v.replace(r"'\''", "'")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "PATH=\"/usr/local/bin:/usr/bin\"\nREQUESTS_CA_BUNDLE='/opt/corp.pem'\n";

    #[test]
    fn parses_like_pam_env() {
        assert_eq!(
            get(ADMIN, "REQUESTS_CA_BUNDLE"),
            Some(Setting {
                value: "/opt/corp.pem".into(),
                ours: false
            })
        );
        assert_eq!(get(ADMIN, "PATH").unwrap().value, "/usr/local/bin:/usr/bin");
        assert_eq!(
            get("# NODE_EXTRA_CA_CERTS=/x\n", "NODE_EXTRA_CA_CERTS"),
            None
        );
        assert_eq!(get("export A=1\nA=2\n", "A").unwrap().value, "2");
        assert_eq!(pairs("A=1\n#B=2\n\nC=\"3\"\n").len(), 2);
    }

    #[test]
    fn set_adds_once_with_the_mark_and_keeps_an_admins_line() {
        let (t, e) = set(ADMIN, "NODE_EXTRA_CA_CERTS", "/usr/local/share/ca.crt");
        assert_eq!(e, Edit::Added);
        assert!(t.starts_with(ADMIN), "{t}");
        assert!(t.ends_with(&format!(
            "{MARK}\nNODE_EXTRA_CA_CERTS=/usr/local/share/ca.crt\n"
        )));
        assert!(get(&t, "NODE_EXTRA_CA_CERTS").unwrap().ours);
        let (t2, e) = set(&t, "NODE_EXTRA_CA_CERTS", "/usr/local/share/ca.crt");
        assert_eq!((t2.as_str(), e), (t.as_str(), Edit::AlreadySet));
        let (t3, e) = set(&t, "NODE_EXTRA_CA_CERTS", "/new/ca.crt");
        assert_eq!(
            e,
            Edit::Updated {
                from: "/usr/local/share/ca.crt".into()
            }
        );
        assert_eq!(t3.matches("NODE_EXTRA_CA_CERTS").count(), 1);
        assert_eq!(
            get(&t3, "NODE_EXTRA_CA_CERTS").unwrap().value,
            "/new/ca.crt"
        );

        let (t4, e) = set(
            ADMIN,
            "REQUESTS_CA_BUNDLE",
            "/etc/ssl/certs/ca-certificates.crt",
        );
        assert_eq!(
            e,
            Edit::Kept {
                theirs: "/opt/corp.pem".into()
            }
        );
        assert_eq!(t4, ADMIN);
        // No trailing newline: ours still goes on a line of its own.
        let (t5, _) = set("A=1", "B", "/b");
        assert_eq!(t5, format!("A=1\n{MARK}\nB=/b\n"));
        // A value that needs quotes gets them.
        let (t6, _) = set("", "B", "/with space/b");
        assert_eq!(get(&t6, "B").unwrap().value, "/with space/b");
    }

    #[test]
    fn unset_removes_exactly_our_lines() {
        let (t, _) = set(ADMIN, "NODE_EXTRA_CA_CERTS", "/ca.crt");
        let (t, _) = set(&t, "SSL_CERT_FILE", "/bundle");
        let (t, removed) = unset(&t, "NODE_EXTRA_CA_CERTS");
        assert_eq!(removed, vec!["/ca.crt".to_string()]);
        let (t, _) = unset(&t, "SSL_CERT_FILE");
        assert_eq!(t, ADMIN);
        // The admin's line stays.
        let (t, removed) = unset(ADMIN, "REQUESTS_CA_BUNDLE");
        assert!(removed.is_empty());
        assert_eq!(t, ADMIN);
        assert_eq!(unset("", "X"), (String::new(), vec![]));
    }

    #[test]
    fn the_profile_script_keeps_values_already_set_and_reads_back() {
        let s = profile_script(&[
            ("NODE_EXTRA_CA_CERTS", "/a/ca.crt".into()),
            ("SSL_CERT_FILE", "/it's/b".into()),
        ]);
        assert!(s.starts_with(PROFILE_HEADER));
        assert!(s.contains(
            "if [ -z \"${NODE_EXTRA_CA_CERTS-}\" ]; then export NODE_EXTRA_CA_CERTS='/a/ca.crt'; fi\n"
        ));
        assert_eq!(
            profile_vars(&s),
            vec![
                ("NODE_EXTRA_CA_CERTS".into(), "/a/ca.crt".into()),
                ("SSL_CERT_FILE".into(), "/it's/b".into())
            ]
        );
        assert!(profile_vars("export A=1\n").is_empty());
    }
}
