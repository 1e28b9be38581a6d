//! OIDC against a real OpenID provider (npm `oidc-provider`, started here): the verifier
//! on its tokens, `gateway login` (device grant and PKCE), the token file, refresh, and the
//! admin API deciding holds for the signed-in identity. Net bytes 200-209.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use gateway::{
    hold::Principal,
    oidc::{OidcConfig, OidcError, Verifier},
};
use gateway_tests::oidc::{ALICE, BOB, CLI_CLIENT, OTHER_CLIENT, OidcProvider, Options};

fn verifier(p: &OidcProvider) -> Verifier {
    let cfg = OidcConfig {
        issuer: p.issuer.clone(),
        client_id: CLI_CLIENT.into(),
        ca_file: Some(p.ca_pem.clone()),
        ..Default::default()
    };
    cfg.validate().expect("valid [oidc]");
    Verifier::new(&cfg, None).expect("verifier")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_providers_tokens_verify_and_bad_ones_are_refused_each_with_its_reason() {
    let idp = OidcProvider::start(200);
    let v = verifier(&idp);
    let rt = rt();

    let alice = idp.id_token(CLI_CLIENT, ALICE);
    match rt
        .block_on(v.verify(&alice))
        .expect("alice's token verifies")
    {
        Principal::Oidc {
            subject,
            username,
            groups,
            issuer,
            ..
        } => {
            assert_eq!(subject, ALICE);
            assert_eq!(username.as_deref(), Some(ALICE));
            assert_eq!(issuer, idp.issuer);
            assert!(groups.iter().any(|g| g == "llm-approvers"), "{groups:?}");
        }
        p => panic!("not an OIDC principal: {p:?}"),
    }
    let bob = rt
        .block_on(v.verify(&idp.id_token(CLI_CLIENT, BOB)))
        .unwrap();
    assert!(
        matches!(bob, Principal::Oidc { ref groups, .. } if !groups.iter().any(|g| g == "llm-approvers"))
    );

    // Issued to another client: another audience.
    let other = idp.id_token(OTHER_CLIENT, ALICE);
    let e = rt.block_on(v.verify(&other)).unwrap_err();
    assert!(matches!(e, OidcError::WrongAudience { .. }), "{e:?}");
    assert!(e.to_string().contains("audience"), "{e}");

    // Issued by another provider.
    let idp2 = OidcProvider::start_with(
        200,
        Options {
            host: 2,
            ..Default::default()
        },
    );
    let foreign = idp2.id_token(CLI_CLIENT, ALICE);
    let e = rt.block_on(v.verify(&foreign)).unwrap_err();
    assert!(matches!(e, OidcError::WrongIssuer { .. }), "{e:?}");
    assert!(e.to_string().contains(&idp2.issuer), "{e}");

    // Tampered: the groups changed after signing.
    let bob_token = idp.id_token(CLI_CLIENT, BOB);
    let parts: Vec<&str> = bob_token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["groups"] = serde_json::json!(["llm-approvers"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        rt.block_on(v.verify(&tampered)).unwrap_err(),
        OidcError::BadSignature
    );

    // alg none, with the same claims and no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    let e = rt.block_on(v.verify(&none)).unwrap_err();
    assert!(
        matches!(e, OidcError::DisallowedAlg(ref a) if a == "none"),
        "{e:?}"
    );
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    let idp = OidcProvider::start_with(
        201,
        Options {
            id_token_ttl: 2,
            ..Default::default()
        },
    );
    let mut v_cfg = OidcConfig {
        issuer: idp.issuer.clone(),
        client_id: CLI_CLIENT.into(),
        ca_file: Some(idp.ca_pem.clone()),
        ..Default::default()
    };
    v_cfg.leeway = Duration::from_secs(0);
    let v = Verifier::new(&v_cfg, None).unwrap();
    let rt = rt();
    let t = idp.id_token(CLI_CLIENT, ALICE);
    assert!(rt.block_on(v.verify(&t)).is_ok());
    sleep_past_exp(&t, 0);
    let e = rt.block_on(v.verify(&t)).unwrap_err();
    assert!(matches!(e, OidcError::Expired { .. }), "{e:?}");
    assert!(e.to_string().contains("gateway login"), "{e}");
}

/// Sleep until the JWT `token`'s `exp` claim plus `leeway` seconds is past by a second, as a
/// verifier's clock sees it (whole seconds: `exp` is, and `now > exp + leeway` is expiry).
fn sleep_past_exp(token: &str, leeway: u64) {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    let exp = claims["exp"].as_u64().expect("exp");
    let until = std::time::UNIX_EPOCH + Duration::from_secs(exp + leeway + 2);
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
}

// ---- end to end: the real gateway, the CLI, a held request -------------------------------

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Instant,
};

use gateway_tests::{
    gateway_bin,
    oidc::password,
    provider::{ProviderEnv, REPLY},
    py_venv,
};

const OPENAI_KEY: &str = "sk-vault-oidc-openai-202";

/// `gateway ARGS -c CONFIG` as a user whose config dir is `home` (their token file).
fn cli_as(config: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(gateway_bin());
    c.args(args)
        .arg("-c")
        .arg(config)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER");
    c
}

/// A running `gateway login`: its stderr lines as they come.
struct Login {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway login");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line matching `pred` (within 60 s).
    fn line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(l.clone());
                if pred(&l) {
                    return l;
                }
            }
        }
        panic!(
            "gateway login never printed the line; it printed {:?}",
            self.seen
        )
    }

    fn finish(self) -> (bool, String, String) {
        let out = self.child.wait_with_output().unwrap();
        let mut err = self.seen.join("\n");
        while let Ok(l) = self.lines.try_recv() {
            err.push('\n');
            err.push_str(&l);
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        )
    }
}

/// `gateway login --device`, completed by the test acting as `user`'s browser on the
/// provider's device pages.
fn device_login(idp: &OidcProvider, config: &Path, home: &Path, user: &str) -> String {
    let mut l = Login::spawn(cli_as(config, home, &["login", "--device"]));
    let line = l.line(|l| l.contains("enter the code"));
    // "To sign in, open URI and enter the code CODE"
    let words: Vec<&str> = line.split_whitespace().collect();
    let uri = words[words.iter().position(|w| *w == "open").unwrap() + 1];
    let code = words.last().unwrap();
    assert!(uri.starts_with(&idp.issuer), "{line}");
    let page = idp.browse(uri, user, &password(user), Some(code));
    assert_eq!(page.status, 200, "{page:?}");
    let (ok, out, err) = l.finish();
    assert!(ok, "device login failed: {out}\n{err}\n{}", idp.log());
    assert!(out.contains(&format!("subject: {user}")), "{out}");
    out
}

/// `gateway login` (authorization code + PKCE): the test is the browser `$BROWSER` would be:
/// it opens the printed URL, signs in, and is redirected to the CLI's loopback listener.
fn pkce_login(idp: &OidcProvider, config: &Path, home: &Path, user: &str) -> String {
    let mut cmd = cli_as(config, home, &["login"]);
    cmd.env("BROWSER", "true");
    let mut l = Login::spawn(cmd);
    let url = l.line(|l| l.trim_start().starts_with("https://"));
    let url = url.trim();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("state=") && url.contains("nonce="), "{url}");
    let page = idp.browse(url, user, &password(user), None);
    assert!(
        page.url.starts_with("http://127.0.0.1:") && page.text.contains("Signed in to the gateway"),
        "{page:?}"
    );
    let (ok, out, err) = l.finish();
    assert!(ok, "PKCE login failed: {out}\n{err}\n{}", idp.log());
    out
}

fn token_file(home: &Path) -> PathBuf {
    home.join("gateway/tokens.json")
}

fn kept_id_token(home: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(token_file(home)).unwrap()).unwrap();
    v["id_token"].as_str().unwrap().to_string()
}

/// The admin socket asked with `token` as the bearer: (status, error message).
fn admin_with(e: &ProviderEnv, token: &str) -> (u16, String) {
    let sock = e.gw.dir.path().join("state/admin.sock");
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&sock)
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-w", "\n%{http_code}", "http://gateway/v1/approvals"])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    (
        code.trim().parse().unwrap_or(0),
        v["error"].as_str().unwrap_or("").to_string(),
    )
}

const PY_OPENAI: &str = r#"
import json, sys, openai
c = openai.OpenAI(api_key="sk-dummy", max_retries=0, timeout=300)
try:
    r = c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": sys.argv[1]}])
    print(json.dumps({"text": r.choices[0].message.content}))
except Exception as e:
    print(json.dumps({"error": str(e), "status": getattr(e, "status_code", None)}))
"#;

fn pending(e: &ProviderEnv) -> Vec<serde_json::Value> {
    let out = e.gw.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn oidc_users_sign_in_and_only_approvers_decide_a_held_request() {
    let idp = OidcProvider::start_with(
        202,
        Options {
            id_token_ttl: 20,
            ..Default::default()
        },
    );
    let e = ProviderEnv::start(
        "gw-oidc",
        202,
        &format!(
            "{}leeway = \"1s\"\n[hold]\nkeywords = [\"production database\"]\napprovers = [\"@oidc:llm-approvers\"]\n",
            idp.config(CLI_CLIENT)
        ),
        &[("openai", OPENAI_KEY)],
    );
    let config = e.gw.config.clone();
    let homes = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (homes.path().join("alice"), homes.path().join("bob"));

    // bob: the device flow, as on a headless host.
    device_login(&idp, &config, &bob_home, BOB);
    let f = token_file(&bob_home);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(f.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // alice: authorization code + PKCE through the loopback redirect.
    let out = pkce_login(&idp, &config, &alice_home, ALICE);
    assert!(out.contains("llm-approvers"), "{out}");
    assert_eq!(
        std::fs::metadata(token_file(&alice_home))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let who = cli_as(&config, &alice_home, &["whoami"]).output().unwrap();
    let who_text = String::from_utf8_lossy(&who.stdout);
    assert!(who.status.success(), "{who:?}");
    assert!(
        who_text.contains("subject: alice") && who_text.contains("llm-approvers"),
        "{who_text}"
    );
    assert!(
        !who_text.contains(&kept_id_token(&alice_home)),
        "whoami never prints the token"
    );

    // A held request, with a real SDK client waiting on it.
    let py = py_venv().join("bin/python");
    let mut client =
        e.cg.command_with_hosts(
            &e.hosts,
            py.to_str().unwrap(),
            &["-c", PY_OPENAI, "please drop the production database"],
        )
        .env("SSL_CERT_FILE", &e.ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let hold = loop {
        if let Some(h) = pending(&e).first() {
            break h["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < end, "no hold: {}", e.gw.raw_log());
        assert!(
            client.try_wait().unwrap().is_none(),
            "the client ended unheld"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = hold.to_string();

    // bob is signed in, but not an approver: refused, with the reason.
    for args in [&["approvals", "list"][..], &["approvals", "approve", &id]] {
        let out = cli_as(&config, &bob_home, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "bob: {args:?} must be refused");
        assert!(
            err.contains("oidc:bob") && err.contains("not an approver"),
            "{err}"
        );
    }

    // Bad tokens on the admin socket: each refused (401) with its own reason.
    let idp2 = OidcProvider::start_with(
        202,
        Options {
            host: 2,
            ..Default::default()
        },
    );
    let good = kept_id_token(&alice_home);
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}x",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 1]
    );
    let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
    for (token, want) in [
        (idp.id_token(OTHER_CLIENT, ALICE), "audience"),
        (
            idp2.id_token(CLI_CLIENT, ALICE),
            "not by the configured issuer",
        ),
        (tampered, "signature"),
        (none, "not allowed"),
    ] {
        let (status, msg) = admin_with(&e, &token);
        assert_eq!(status, 401, "{want}: {msg}");
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert_eq!(pending(&e).len(), 1, "the hold is still pending");

    // alice lists and approves (her ID token lives 20 s: the CLI refreshes it when due).
    let out = cli_as(&config, &alice_home, &["approvals", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"].as_u64(), Some(hold));
    let out = cli_as(&config, &alice_home, &["approvals", "approve", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", e.gw.raw_log());
    let out = client.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        v["text"],
        REPLY,
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The journal names the OIDC user as the approver.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let list = e.gw.cli(&["journal", "list", "--json"]);
        let recs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
        let by: Vec<String> = recs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_u64())
            .filter_map(|rid| {
                let s = e.gw.cli(&["journal", "show", &rid.to_string(), "--json"]);
                let r: serde_json::Value = serde_json::from_slice(&s.stdout).ok()?;
                (r["approval"]["hold"].as_u64() == Some(hold))
                    .then(|| r["approval"]["by"].as_str().unwrap_or("").to_string())
            })
            .collect();
        if !by.is_empty() {
            assert_eq!(by, vec!["oidc:alice".to_string()]);
            break;
        }
        assert!(Instant::now() < end, "no journal record of hold {hold}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An expired token is refused as expired (20 s lifetime, 1 s leeway): waited for until
    // its own `exp` is past the leeway, not a fixed 22 s (the steps above took part of it).
    let old = kept_id_token(&alice_home);
    sleep_past_exp(&old, 1);
    let (status, msg) = admin_with(&e, &old);
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("expired"), "{msg}");

    // Refresh after expiry: the CLI gets a new ID token with the refresh token and goes on.
    let out = cli_as(&config, &alice_home, &["approvals", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_ne!(
        kept_id_token(&alice_home),
        old,
        "the ID token was refreshed"
    );
    assert_eq!(
        std::fs::metadata(token_file(&alice_home))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Logged out: no token file, and the CLI acts as the local user again.
    let out = cli_as(&config, &alice_home, &["logout"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!token_file(&alice_home).exists());
    assert!(
        !e.gw.raw_log().contains(&old),
        "no ID token in the daemon's log"
    );
}

/// A rule matching a workload group applies to the workloads of that group only, and the
/// journal records the caller's groups.
#[test]
fn rules_match_workload_groups_and_the_journal_names_them() {
    let e = ProviderEnv::start(
        "gw-oidcg",
        203,
        "[groups]\nci = [\"cgroup:/gw-oidcg-*\"]\nothers = [\"uid:4242\"]\n\
         [[rule]]\nname = \"ci-no-tickets\"\npattern = \"TICKET-[0-9]{4}\"\naction = \"block\"\non = [\"request\"]\nmatch.workload_group = \"ci\"\n\
         [[rule]]\nname = \"others-no-orders\"\npattern = \"ORDER-[0-9]{4}\"\naction = \"block\"\non = [\"request\"]\nmatch.workload_group = \"others\"\n",
        &[("openai", OPENAI_KEY)],
    );
    let chat = |text: &str| {
        let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        let args = [
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "--cacert",
            e.ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            "https://api.openai.com/v1/chat/completions",
        ];
        gateway_tests::run(e.cg.command("curl", &args), Duration::from_secs(20))
    };
    // The test's cgroup is in `ci`: its rule blocks.
    let r = chat("close TICKET-1234 please");
    assert!(r.stdout.ends_with("\n403"), "{r:?}");
    assert!(r.stdout.contains("ci-no-tickets"), "{r:?}");
    // Not in `others`: that rule does not apply, the request goes through.
    let r = chat("ship ORDER-5678 today");
    assert!(r.stdout.ends_with("\n200"), "{r:?}");
    assert_eq!(
        e.fakes.openai.seen().len(),
        1,
        "only the second reached the provider"
    );

    let list = e.gw.cli(&["journal", "list", "--json"]);
    let recs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<u64> = recs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 2, "{recs}");
    for id in ids {
        let s = e.gw.cli(&["journal", "show", &id.to_string(), "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        assert_eq!(r["who"]["groups"], serde_json::json!(["ci"]), "{r}");
    }
}
