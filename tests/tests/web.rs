//! Issue I, deliverable 2, end to end: the approval web page and the admin API over HTTPS.
//!
//! A real OpenID provider (npm `oidc-provider`, `gateway_tests::oidc`), a real gateway with
//! the real redirect, a real SDK client (Python `openai`) waiting on a held request, and a real
//! headless Chromium (`gateway_tests::browser`, WebDriver) that signs in through the
//! provider's login form, sees the hold and approves or denies it with a reason. The journal
//! record names the OIDC user and the reason. Forged and cross-site POSTs, a user outside the
//! approver group, and bad bearer tokens are refused.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gateway_tests::{
    browser::Browser,
    oidc::{self, OidcProvider},
    provider::{ProviderEnv, REPLY},
    py_venv,
};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-vault-web-openai-210";
const SECRET_ENV: &str = "GW_TEST_WEB_CLIENT_SECRET";

/// The openai SDK, chat completions (not streamed): argv prompt. Prints {"text"} or {"error"...}.
const PY_OPENAI: &str = r#"
import json, sys, openai
c = openai.OpenAI(api_key="sk-dummy", max_retries=0, timeout=300)
try:
    r = c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": sys.argv[1]}])
    print(json.dumps({"text": r.choices[0].message.content}))
except Exception as e:
    print(json.dumps({"error": str(e), "error_type": type(e).__name__,
                      "status": getattr(e, "status_code", None)}))
"#;

/// One test's world: the provider, the gateway with both HTTPS listeners, their URLs.
struct World {
    // Dropped first: `gateway detach` reads the config, whose `oidc.ca_file` is the
    // provider's.
    e: ProviderEnv,
    idp: OidcProvider,
    /// `https://127.211.N.2:PORT`: the approval page.
    web: String,
    /// `https://127.211.N.1:PORT`: the admin API.
    admin: String,
}

fn world() -> World {
    let n = gateway_tests::unique();
    let web_ip = format!("127.211.{n}.2");
    let admin_ip = format!("127.211.{n}.1");
    let web = format!("https://{web_ip}:{}", gateway_tests::free_port(&web_ip));
    let admin = format!("https://{admin_ip}:{}", gateway_tests::free_port(&admin_ip));
    let idp = OidcProvider::start_with(
        212,
        oidc::Options {
            web_redirect_uris: vec![format!("{web}/callback")],
            host: n as u8,
            ..Default::default()
        },
    );
    let cfg = format!(
        "[hold]\nkeywords = [\"production database\"]\ntimeout = \"3m\"\n\
         approvers = [\"@oidc:{group}\"]\n\
         {oidc}\
         [admin]\nhttps = \"{a}\"\n\
         [web]\nlisten = \"{w}\"\nclient_id = \"{client}\"\nclient_secret_env = \"{SECRET_ENV}\"\n\
         redirect_uri = \"{web}/callback\"\n",
        group = oidc::APPROVERS_GROUP,
        oidc = idp.config(oidc::CLI_CLIENT),
        a = admin.trim_start_matches("https://"),
        w = web.trim_start_matches("https://"),
        client = oidc::WEB_CLIENT,
    );
    let e = ProviderEnv::start_env(
        "gw-web",
        210,
        &cfg,
        &[("openai", OPENAI_KEY)],
        &[(SECRET_ENV, oidc::WEB_SECRET)],
    );
    World { idp, e, web, admin }
}

fn spawn_sdk(e: &ProviderEnv, prompt: &str) -> Child {
    let py = py_venv().join("bin/python");
    let mut cmd =
        e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &["-c", PY_OPENAI, prompt]);
    cmd.env("SSL_CERT_FILE", &e.ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn the SDK")
}

fn sdk_result(e: &ProviderEnv, c: Child) -> Value {
    let out = c.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            e.gw.raw_log()
        )
    })
}

/// The pending holds, as root on the holding node sees them (`gateway approvals list`).
fn holds(e: &ProviderEnv) -> Vec<Value> {
    let out = e.gw.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Wait for one pending hold while `c` is still waiting on it; its id.
fn wait_held(e: &ProviderEnv, c: &mut Child) -> u64 {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let h = holds(e);
        if h.len() == 1 {
            return h[0]["id"].as_u64().unwrap();
        }
        if c.try_wait().unwrap().is_some() {
            let out = std::mem::replace(c, Command::new("true").spawn().unwrap());
            panic!(
                "the client ended instead of waiting: {:?}\n{}",
                out.wait_with_output(),
                e.gw.raw_log()
            );
        }
        assert!(Instant::now() < end, "no hold: {h:?}\n{}", e.gw.raw_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The journal record of hold `id`, once written.
fn record_of(e: &ProviderEnv, id: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let out = e.gw.cli(&["journal", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        for r in list.as_array().unwrap() {
            let rid = r["id"].to_string();
            let out = e.gw.cli(&["journal", "show", &rid, "--json"]);
            let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
            if rec["approval"]["hold"] == id {
                return rec;
            }
        }
        assert!(Instant::now() < end, "no record of hold {id}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// curl, verifying the gateway's CA: (status, headers + body).
fn curl(ca: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Sign in as `user` in the browser: the page's sign-in link, the provider's login form,
/// back to the page.
fn sign_in(b: &Browser, w: &World, user: &str) {
    b.goto(&w.web);
    let link = b.wait("#signin", Duration::from_secs(20));
    b.click(&link);
    let login = b.wait("input[name=login]", Duration::from_secs(30));
    assert!(
        b.url().starts_with(&w.idp.issuer),
        "the sign-in goes to the provider: {}",
        b.url()
    );
    b.type_text(&login, user);
    let pw = b.wait("input[name=password]", Duration::from_secs(5));
    b.type_text(&pw, &oidc::password(user));
    let submit = b.wait("#submit", Duration::from_secs(5));
    b.click(&submit);
    // Back on the page (the "signed in" page sends the browser on to `/`).
    let end = Instant::now() + Duration::from_secs(30);
    let mut submitted: Vec<String> = vec![];
    loop {
        let url = b.url();
        if url.starts_with(&w.web) && (b.find("#who").is_some() || b.find("#error").is_some()) {
            return;
        }
        // Any other form of the provider's (consent): submit it as a person would, once per
        // page. The check and the click are one script in the page: a `url()` then a
        // `find()` could see the provider's URL and then, the navigation done in between,
        // the approval page's own submit button (sign-out), which a loaded machine did. The
        // login form is never submitted twice (its first submission may still be in flight).
        if url.starts_with(&w.idp.issuer) && !submitted.contains(&url) {
            let clicked = b.try_script(&format!(
                "if (!location.href.startsWith({issuer:?})) return false; \
                 const btn = document.querySelector('form:not(#login-form) button[type=submit]'); \
                 if (!btn) return false; btn.click(); return true;",
                issuer = w.idp.issuer
            ));
            if clicked == Some(Value::Bool(true)) {
                submitted.push(url.clone());
            }
        }
        assert!(
            Instant::now() < end,
            "sign-in did not come back to the page: {url}\n{}\nprovider log: {}\n{}",
            b.source(),
            w.idp.log(),
            w.e.gw.raw_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reload the page until hold `id` is on it.
fn wait_on_page(b: &Browser, w: &World, id: u64) -> gateway_tests::browser::Element {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&w.web);
        if let Some(s) = b.find(&format!("section[data-hold='{id}']")) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "hold {id} not on the page:\n{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn session_cookie(b: &Browser) -> String {
    let c = b
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "__Host-gw_session")
        .unwrap_or_else(|| panic!("no session cookie: {:?}", b.cookies()));
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    format!("__Host-gw_session={}", c["value"].as_str().unwrap())
}

/// Alice signs in with Chromium, sees the hold a real SDK call waits on (its `<script>`
/// excerpt shown as text, never run), approves it with a reason: the call completes and the
/// journal names her and the reason. Forged POSTs (no token, another origin, no session, a
/// cross-site form in the browser) change nothing. A second hold is denied with a reason.
/// After sign-out the old session is refused.
#[test]
fn an_approver_signs_in_with_chromium_and_approves_then_denies_held_sdk_requests() {
    let w = world();
    let e = &w.e;
    let b = Browser::start(&[&e.ca, &w.idp.ca_pem]);
    // The page before signing in: the sign-in link, a strict policy.
    let (status, head) = curl(&e.ca, &[&format!("{}/", w.web)]);
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'")
            && lower.contains("x-frame-options: deny"),
        "{head}"
    );
    assert!(!head.contains("<script"), "{head}");

    let prompt = "please drop the production database <script>alert('xss')</script>";
    let mut c = spawn_sdk(e, prompt);
    let id = wait_held(e, &mut c);
    assert!(e.fakes.openai.seen().is_empty(), "held means nothing sent");

    sign_in(&b, &w, oidc::ALICE);
    let who = b.wait("#who", Duration::from_secs(5));
    assert_eq!(b.text(&who), "oidc:alice");
    let cookie = session_cookie(&b);
    let sec = wait_on_page(&b, &w, id);
    // Identity, provider, model, masked excerpt, wait time.
    let field = |css: &str| b.text(&b.find_in(&sec, css).unwrap_or_else(|| panic!("{css}")));
    assert!(field(".user").contains("root"), "{}", field(".user"));
    assert!(field(".provider").contains("openai"));
    assert_eq!(field(".model"), "gpt-x");
    assert!(field(".comm").contains("python"), "{}", field(".comm"));
    assert!(!field(".waited").is_empty());
    let excerpt = field(".excerpt");
    assert!(
        excerpt.contains("<script>alert('xss')</script>"),
        "the excerpt is shown as text: {excerpt}"
    );
    assert!(
        b.find("script").is_none(),
        "no script element on the page:\n{}",
        b.source()
    );
    assert!(b.source().contains("&lt;script&gt;alert"), "{}", b.source());
    let csrf = b
        .attr(&b.find_in(&sec, "input[name=csrf]").unwrap(), "value")
        .unwrap();

    // Forged POSTs: each refused, the hold stays.
    let decide = format!("{}/decide", w.web);
    let form = format!("hold={id}&verdict=approve&reason=forged");
    let origin = format!("Origin: {}", w.web);
    let cookie_h = format!("Cookie: {cookie}");
    let (s, body) = curl(
        &e.ca,
        &["-H", &cookie_h, "-H", &origin, "--data", &form, &decide],
    );
    assert_eq!(s, 403, "no CSRF token: {body}");
    assert!(body.contains("anti-forgery token"), "{body}");
    let with_token = format!("csrf={csrf}&{form}");
    let (s, body) = curl(
        &e.ca,
        &[
            "-H",
            &cookie_h,
            "-H",
            "Origin: https://evil.example",
            "--data",
            &with_token,
            &decide,
        ],
    );
    assert_eq!(s, 403, "another origin: {body}");
    assert!(body.contains("Origin check"), "{body}");
    let (s, body) = curl(&e.ca, &["-H", &cookie_h, "--data", &with_token, &decide]);
    assert_eq!(s, 403, "no Origin at all: {body}");
    let (s, body) = curl(&e.ca, &["-H", &origin, "--data", &with_token, &decide]);
    assert_eq!(s, 403, "no session: {body}");
    assert!(body.contains("not signed in"), "{body}");
    let (s, _) = curl(&e.ca, &["-H", &cookie_h, &format!("{decide}?{with_token}")]);
    assert_eq!(s, 405, "a GET decides nothing");
    // A cross-site form in the same browser (it even knows the token): no session cookie
    // goes with it (SameSite=Strict) and its Origin is not the page's.
    let evil = format!(
        "data:text/html,<form method=post action=\"{decide}\"><input name=csrf value=\"{csrf}\">\
         <input name=hold value={id}><input name=verdict value=approve>\
         <button id=go type=submit>go</button></form>"
    );
    b.goto(&evil);
    let go = b.wait("#go", Duration::from_secs(5));
    b.click(&go);
    b.wait("#error", Duration::from_secs(15));
    assert!(b.body_text().contains("Refused"), "{}", b.source());
    assert_eq!(holds(e).len(), 1, "nothing was decided by a forged POST");
    assert!(c.try_wait().unwrap().is_none(), "the client still waits");

    // Approve with a reason, in the page.
    let sec = wait_on_page(&b, &w, id);
    let reason = "ok for the migration <b>bold</b>";
    b.type_text(&b.find_in(&sec, "input.reason").unwrap(), reason);
    b.click(&b.find_in(&sec, "button.approve").unwrap());
    let notice = b.wait("#notice", Duration::from_secs(15));
    assert_eq!(b.text(&notice), format!("Request {id} approved."));
    let r = sdk_result(e, c);
    assert_eq!(r["text"], REPLY, "{r}\n{}", e.gw.raw_log());
    let seen = &e.fakes.openai.seen()[0];
    assert_eq!(
        seen.all("authorization"),
        vec![format!("Bearer {OPENAI_KEY}")]
    );
    let rec = record_of(e, id);
    assert_eq!(rec["approval"]["outcome"], "approved", "{rec}");
    assert_eq!(rec["approval"]["by"], "oidc:alice", "{rec}");
    assert_eq!(rec["approval"]["reason"], reason, "{rec}");
    assert_eq!(rec["status"], 200, "{rec}");

    // Deny a second one with a reason: the SDK raises the gateway's 403.
    let mut c = spawn_sdk(e, "and now truncate the production database");
    let id2 = wait_held(e, &mut c);
    let sec = wait_on_page(&b, &w, id2);
    let why = "not during the freeze";
    b.type_text(&b.find_in(&sec, "input.reason").unwrap(), why);
    b.click(&b.find_in(&sec, "button.deny").unwrap());
    let notice = b.wait("#notice", Duration::from_secs(15));
    assert_eq!(b.text(&notice), format!("Request {id2} denied."));
    let r = sdk_result(e, c);
    assert_eq!(r["error_type"], "PermissionDeniedError", "{r}");
    let msg = r["error"].as_str().unwrap();
    assert!(msg.contains("oidc:alice") && msg.contains(why), "{r}");
    let rec = record_of(e, id2);
    assert_eq!(rec["approval"]["outcome"], "denied", "{rec}");
    assert_eq!(rec["approval"]["by"], "oidc:alice", "{rec}");
    assert_eq!(rec["approval"]["reason"], why, "{rec}");
    assert_eq!(
        e.fakes.openai.seen().len(),
        1,
        "the denied one never went out"
    );

    // Sign out: the old session is gone.
    let out = b.wait("#signout", Duration::from_secs(5));
    b.click(&out);
    b.wait("#signin", Duration::from_secs(15));
    let (s, body) = curl(
        &e.ca,
        &[
            "-H",
            &cookie_h,
            "-H",
            &origin,
            "--data",
            &with_token,
            &decide,
        ],
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not signed in"), "{body}");
    // No token, code or secret in the gateway's log.
    let log = e.gw.raw_log();
    assert!(
        !log.contains(oidc::WEB_SECRET),
        "the client secret is logged"
    );
    assert!(!log.contains(OPENAI_KEY));
    assert!(!log.contains(&csrf), "the CSRF token is logged");
    assert!(
        !log.contains(cookie.split('=').nth(1).unwrap()),
        "the session id is logged"
    );
}

/// Bob signs in fine but is not in the approver group: the page refuses to show or decide
/// holds, even with his own valid session and token.
#[test]
fn a_signed_in_user_outside_the_approver_group_is_refused() {
    let w = world();
    let e = &w.e;
    let b = Browser::start(&[&e.ca, &w.idp.ca_pem]);
    let mut c = spawn_sdk(e, "drop the production database please");
    let id = wait_held(e, &mut c);
    sign_in(&b, &w, oidc::BOB);
    b.goto(&w.web);
    let err = b.wait("#error", Duration::from_secs(10));
    let text = b.text(&err);
    assert!(
        text.contains("may not see or decide") && text.contains("oidc:bob"),
        "{text}"
    );
    assert!(b.find("section.hold").is_none(), "{}", b.source());
    assert!(
        !b.source().contains("production database"),
        "no excerpt for bob"
    );
    // His own session and CSRF token (the sign-out form has it) decide nothing either.
    let csrf = b
        .attr(&b.find("input[name=csrf]").unwrap(), "value")
        .unwrap();
    let cookie = session_cookie(&b);
    let (s, body) = curl(
        &e.ca,
        &[
            "-H",
            &format!("Cookie: {cookie}"),
            "-H",
            &format!("Origin: {}", w.web),
            "--data",
            &format!("csrf={csrf}&hold={id}&verdict=approve"),
            &format!("{}/decide", w.web),
        ],
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not an approver"), "{body}");
    assert_eq!(holds(e).len(), 1);
    assert!(c.try_wait().unwrap().is_none());
    assert!(e.fakes.openai.seen().is_empty());
}

/// The admin API over HTTPS: with alice's ID token (from `gateway login`'s client) it lists
/// and decides; without a token, with a tampered one, one for another audience, or bob's, it
/// refuses with a clear message. The unauthenticated health check answers.
#[test]
fn the_https_admin_api_takes_bearer_id_tokens_and_refuses_bad_ones() {
    let w = world();
    let e = &w.e;
    let mut c = spawn_sdk(e, "the production database, again");
    let id = wait_held(e, &mut c);
    let dir = tempfile::tempdir().unwrap();
    let header = |name: &str, token: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("Authorization: Bearer {token}\n")).unwrap();
        format!("@{}", p.display())
    };
    let alice = w.idp.id_token(oidc::CLI_CLIENT, oidc::ALICE);
    let list = format!("{}/v1/approvals", w.admin);

    let (s, body) = curl(&e.ca, &[&format!("{}/v1/health", w.admin)]);
    assert_eq!(s, 200, "{body}");
    let (s, body) = curl(&e.ca, &[&list]);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    // Tampered: the signature's last characters changed.
    let mut bad = alice.clone();
    let tail = if bad.ends_with("AA") { "BB" } else { "AA" };
    bad.truncate(bad.len() - 2);
    bad.push_str(tail);
    let (s, body) = curl(&e.ca, &["-H", &header("bad", &bad), &list]);
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("ID token refused") && body.contains("signature"),
        "{body}"
    );
    let other = w.idp.id_token(oidc::OTHER_CLIENT, oidc::ALICE);
    let (s, body) = curl(&e.ca, &["-H", &header("other", &other), &list]);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("audience"), "{body}");
    let bob = w.idp.id_token(oidc::CLI_CLIENT, oidc::BOB);
    let (s, body) = curl(&e.ca, &["-H", &header("bob", &bob), &list]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not an approver"), "{body}");
    assert_eq!(holds(e).len(), 1, "nothing decided");

    let (s, body) = curl(&e.ca, &["-H", &header("alice", &alice), &list]);
    assert_eq!(s, 200, "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").last().unwrap()).unwrap();
    assert_eq!(json["holds"][0]["id"], id, "{json}");
    assert_eq!(json["holds"][0]["provider"], "openai", "{json}");
    let (s, body) = curl(
        &e.ca,
        &[
            "-H",
            &header("alice", &alice),
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"reason": "via the HTTPS API"}"#,
            &format!("{}/v1/approvals/{id}/approve", w.admin),
        ],
    );
    assert_eq!(s, 200, "{body}");
    let r = sdk_result(e, c);
    assert_eq!(r["text"], REPLY, "{r}");
    let rec = record_of(e, id);
    assert_eq!(rec["approval"]["by"], "oidc:alice", "{rec}");
    assert_eq!(rec["approval"]["reason"], "via the HTTPS API", "{rec}");
    assert!(!e.gw.raw_log().contains(&alice), "the token is logged");
}
