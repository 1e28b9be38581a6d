//! The approval page's HTML: server-rendered, no script at all, every text escaped.
//!
//! Excerpts, user names, unit and pod names, models and reasons are influenced by the
//! workloads (or by whoever wrote the prompt): each goes through [`escape`] once, here, and
//! nowhere is HTML built from anything else. The content security policy
//! ([`super::routes::CSP`]) forbids scripts anyway, so an escape that was missed would still
//! not run.

use std::fmt::Write as _;

/// A held request as the page shows it.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The id a decision names (fleet-unique when there is a fleet).
    pub id: String,
    /// The node holding it.
    pub node: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub unit: Option<String>,
    pub pod: Option<String>,
    pub cgroup: Option<String>,
    pub comm: String,
    pub provider: String,
    pub endpoint: String,
    pub model: Option<String>,
    /// The rule or trigger that held it.
    pub rule: String,
    /// Masked already.
    pub excerpt: String,
    /// Seconds since it was held.
    pub waited: u64,
    /// Seconds left before it times out.
    pub left: u64,
    pub waiting: usize,
}

/// HTML-escape text for element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn layout(title: &str, who: Option<(&str, &str)>, body: &str) -> String {
    let mut head = String::new();
    if let Some((name, csrf)) = who {
        let _ = write!(
            head,
            r#"<form class="signout" method="post" action="/logout"><span id="who">{}</span> <input type="hidden" name="csrf" value="{}"><button type="submit" id="signout">Sign out</button></form>"#,
            escape(name),
            escape(csrf)
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{t} — gateway approvals</title><link rel="stylesheet" href="/style.css"></head>
<body><header><h1>{t}</h1>{head}</header>
<main>{body}</main></body></html>
"#,
        t = escape(title)
    )
}

/// Signed out: one link to sign in (a link, not a form: the redirect to the identity provider
/// is a plain navigation).
pub fn signin(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, escape(e)))
        .unwrap_or_default();
    layout(
        "Sign in",
        None,
        &format!(
            r#"{err}<p>Approvers sign in with the organisation's identity provider.</p>
<p><a class="button" id="signin" href="/login">Sign in</a></p>"#
        ),
    )
}

/// After the identity provider's redirect: go on to the page by a same-site navigation (the
/// session cookie is `SameSite=Strict`, so a redirect chain that began at the provider would
/// not carry it).
pub fn signed_in(name: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">
<title>Signed in — gateway approvals</title><link rel="stylesheet" href="/style.css"></head>
<body><main><p>Signed in as {}. <a id="continue" href="/">Continue</a></p></main></body></html>
"#,
        escape(name)
    )
}

/// A refusal or a notice on a page of its own.
pub fn message(title: &str, text: &str, who: Option<(&str, &str)>) -> String {
    layout(
        title,
        who,
        &format!(
            r#"<p class="error" id="error">{}</p><p><a href="/">Back</a></p>"#,
            escape(text)
        ),
    )
}

/// The pending holds, each with approve / deny and a reason.
pub fn holds(name: &str, csrf: &str, rows: &[Row], notice: Option<&str>) -> String {
    let mut b = String::new();
    if let Some(n) = notice {
        let _ = write!(b, r#"<p class="notice" id="notice">{}</p>"#, escape(n));
    }
    if rows.is_empty() {
        b.push_str(r#"<p id="empty">No request is waiting for approval.</p>"#);
    }
    let opt = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_else(|| "—".into());
    for r in rows {
        let id = escape(&r.id);
        let user = match (&r.user, r.uid) {
            (Some(u), Some(uid)) => format!("{} (uid {uid})", escape(u)),
            (Some(u), None) => escape(u),
            (None, Some(uid)) => format!("uid {uid}"),
            (None, None) => "—".into(),
        };
        let _ = write!(
            b,
            r#"<section class="hold" id="hold-{id}" data-hold="{id}">
<h2>Request {id} <span class="node">on {node}</span></h2>
<dl>
<dt>User</dt><dd class="user">{user}</dd>
<dt>Program</dt><dd class="comm">{comm}</dd>
<dt>Unit</dt><dd class="unit">{unit}</dd>
<dt>Pod</dt><dd class="pod">{pod}</dd>
<dt>Cgroup</dt><dd class="cgroup">{cgroup}</dd>
<dt>Host</dt><dd class="host">{node}</dd>
<dt>Provider</dt><dd class="provider">{provider} <code>{endpoint}</code></dd>
<dt>Model</dt><dd class="model">{model}</dd>
<dt>Held by</dt><dd class="rule">{rule}</dd>
<dt>Waiting</dt><dd class="waited">{waited} ({waiting} request(s); times out in {left})</dd>
</dl>
<pre class="excerpt">{excerpt}</pre>
<form method="post" action="/decide">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="hold" value="{id}">
<label>Reason <input type="text" name="reason" maxlength="500" class="reason"></label>
<button type="submit" name="verdict" value="approve" class="approve">Approve</button>
<button type="submit" name="verdict" value="deny" class="deny">Deny</button>
</form>
</section>
"#,
            node = escape(&r.node),
            comm = escape(&r.comm),
            unit = opt(&r.unit),
            pod = opt(&r.pod),
            cgroup = opt(&r.cgroup),
            provider = escape(&r.provider),
            endpoint = escape(&r.endpoint),
            model = opt(&r.model),
            rule = escape(&r.rule),
            waited = duration(r.waited),
            waiting = r.waiting,
            left = duration(r.left),
            excerpt = escape(&r.excerpt),
            csrf = escape(csrf),
        );
    }
    b.push_str(r#"<p><a id="refresh" href="/">Refresh</a></p>"#);
    layout("Pending approvals", Some((name, csrf)), &b)
}

/// The one style sheet (served from `/style.css`: the policy allows no inline style).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem}\
header{display:flex;justify-content:space-between;align-items:center}\
.hold{border:1px solid #bbb;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}\
dl{display:grid;grid-template-columns:8rem 1fr;gap:.2rem}dt{font-weight:bold}dd{margin:0}\
pre{white-space:pre-wrap;background:#f4f4f4;padding:.5rem}\
.error{color:#a00}.notice{color:#060}.node{font-weight:normal;color:#555}\
.button{padding:.4rem 1rem;border:1px solid #333;border-radius:4px;text-decoration:none}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_is_escaped_everywhere() {
        let evil = r#"<script>alert(1)</script>" onmouseover="x"#;
        let r = Row {
            id: "n1:7".into(),
            node: evil.into(),
            user: Some(evil.into()),
            comm: evil.into(),
            unit: Some(evil.into()),
            pod: Some(evil.into()),
            cgroup: Some(evil.into()),
            provider: evil.into(),
            endpoint: evil.into(),
            model: Some(evil.into()),
            rule: evil.into(),
            excerpt: evil.into(),
            ..Default::default()
        };
        let html = holds(evil, "tok", &[r], Some(evil));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("\" onmouseover"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot; onmouseover=&quot;x"));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(!message(evil, evil, None).contains("<script"));
        assert!(!signin(Some(evil)).contains("<script"));
        assert!(!signed_in(evil).contains("<script"));
    }

    #[test]
    fn waits_read_as_durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m 5s");
        assert_eq!(duration(7300), "2h 1m");
    }
}
