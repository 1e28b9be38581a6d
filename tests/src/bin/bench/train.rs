//! `bench OUT train`: the workload `cargo xtask pgo` profiles an instrumented gateway with.
//!
//! The product's own data path, through the real redirect: h2 and HTTP/1.1 clients, one and
//! many connections, GETs with a small JSON answer, chat completions whose prompt carries a
//! secret (request masking) and whose streamed answer carries one split across two events
//! (stream masking), every request with a client credential to strip, the journal on (the
//! default). Ends with SIGTERM, so the gateway exits normally and writes its profile.

use std::time::Duration;

use gateway_tests::{CgroupGuard, fake::TestPki};

use crate::intercept::{nginx, upstream, upstream_gateway};

/// A chat request whose prompt holds an access key id (masked on the way out).
const CHAT: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise: user alice rotated key AKIAZ7QW3RTY5UIO2PAS, build 4f2a9c passed, contact ops@example.com if billing-api fails."}]}"#;

pub fn run(pid: u32) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["api.openai.com"]);
    let _nginx = nginx(&pki, dir.path());
    let cg = CgroupGuard::new(&format!("gw-bench-t-{pid}"));
    let mut gw = upstream_gateway(&format!("gw-bench-t-{pid}"), &cg, &pki, "info", "");
    let body = dir.path().join("chat.json");
    std::fs::write(&body, CHAT).unwrap();
    let body = body.to_str().unwrap().to_string();
    let connect = format!("--connect-to={}:443", upstream());
    let models = "https://api.openai.com/v1/models";
    let chat = "https://api.openai.com/v1/chat/completions";
    let auth = "authorization: Bearer sk-dummy-client-key";
    let json = "content-type: application/json";
    let runs: Vec<Vec<&str>> = vec![
        vec!["-n", "3000", "-c", "1", "-m", "1", "-H", auth, models],
        vec!["-n", "20000", "-c", "8", "-m", "10", "-H", auth, models],
        vec![
            "-n", "2000", "-c", "1", "-m", "1", "-H", auth, "-H", json, "-d", &body, chat,
        ],
        vec![
            "-n", "4000", "-c", "4", "-m", "4", "-H", auth, "-H", json, "-d", &body, chat,
        ],
        vec!["--h1", "-n", "2000", "-c", "1", "-H", auth, models],
        vec![
            "--h1", "-n", "2000", "-c", "2", "-H", auth, "-H", json, "-d", &body, chat,
        ],
    ];
    for round in 0..2 {
        for args in &runs {
            let mut all = vec![connect.as_str()];
            all.extend_from_slice(args);
            let out = cg.command("h2load", &all).output().expect("h2load");
            let text = String::from_utf8_lossy(&out.stdout);
            let ok = text
                .lines()
                .find(|l| l.trim_start().starts_with("status codes:"))
                .unwrap_or("");
            assert!(
                out.status.success() && ok.contains(" 0 4xx, 0 5xx"),
                "training run {args:?} failed: {text}"
            );
            // Header values stay out of the output (one is a client credential, if a dummy).
            let shown: Vec<&str> = args.iter().copied().filter(|a| !a.contains(": ")).collect();
            eprintln!("train round {round}: {} ({ok})", shown.join(" "));
        }
    }
    let masked = gw
        .fields("connection closed")
        .iter()
        .filter(|f| f["outcome"] == "intercepted")
        .count();
    assert!(masked > 0, "the training went through interception");
    let st = gw.terminate(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "the gateway did not exit cleanly on SIGTERM ({st:?}); its profile is not written"
    );
}
