//! `cargo xtask demo` keeps telling the truth: its tour, run without waiting for Enter, shows
//! each of the things it promises.

#[test]
fn the_demo_shows_a_swapped_key_a_masked_stream_an_approved_hold_and_the_journal() {
    gateway_tests::require_privileges();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .env("DEMO_NO_WAIT", "1")
        .env("GATEWAY_BIN", gateway_tests::gateway_bin())
        .output()
        .expect("run the demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "provider saw:\u{1b}[0m authorization: Bearer sk-demo-REAL-key-only-the-vault-holds",
        "python printed:\u{1b}[0m Use [MASKED:github-classic-token] to push, it has write access.",
        "keyword `production database`",
        "hold 1 approved",
        "Approved answer: take a backup first.",
        "journal verified: 3 records, chain intact",
        "held (keyword `production database`): approved by root",
        "the token nowhere in it",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("PRESENT (!)"), "{text}");
}
