//! `cargo xtask demo`: an offline tour on one machine. A fake OpenAI answers on loopback (its
//! real wire format, its real host name in a private /etc/hosts), the gateway runs in front of
//! it for one demo cgroup, and real clients in that cgroup — curl and the official Python SDK —
//! show a key swapped, a secret masked in a streamed answer, a prompt held and approved, and
//! the journal with each exchange's process.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
    time::Duration,
};

use gateway_tests::{provider::ProviderEnv, py_venv};

const VAULT_KEY: &str = "sk-demo-REAL-key-only-the-vault-holds";
const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";

fn say(title: &str, text: &str) {
    println!("\n\x1b[1;36m== {title}\x1b[0m\n{text}");
}

fn show(label: &str, text: &str) {
    for l in text.trim_end().lines() {
        println!("   \x1b[2m{label}\x1b[0m {l}");
    }
}

fn main() {
    println!("\x1b[1mgateway demo\x1b[0m — everything on loopback; nothing leaves this machine.");
    let e = ProviderEnv::start(
        "gw-demo",
        90,
        // One machine, one user: the demo approves its own request, which takes saying so.
        "[hold]\nkeywords = [\"production database\"]\ntimeout = \"120s\"\nself_approval = true\n",
        &[("openai", VAULT_KEY)],
    );
    let cg = e.cg.path.display().to_string();
    say(
        "Set-up",
        &format!(
            "A fake api.openai.com listens on {ip}:443 (TLS, HTTP/2, OpenAI's wire format).\n\
             The gateway attached its eBPF programs to the cgroup {cg}: every process in it\n\
             that connects to an OpenAI address lands in the gateway instead. The vault holds\n\
             the real key; the clients below only ever have a dummy.",
            ip = e.fakes.ips[0]
        ),
    );

    // 1. The key swap.
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let ca = e.ca.display().to_string();
    let out =
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--resolve",
                &resolve,
                "--cacert",
                &ca,
                "-H",
                "authorization: Bearer sk-dummy-the-client-has",
                "https://api.openai.com/v1/models",
            ],
        )
        .output()
        .expect("curl");
    say(
        "1. curl with a dummy key",
        "curl -H 'authorization: Bearer sk-dummy-the-client-has' https://api.openai.com/v1/models",
    );
    show("client got:", &String::from_utf8_lossy(&out.stdout));
    let seen = e.fakes.openai.seen();
    let last = seen.last().expect("the provider saw the request");
    show("provider saw:", &last.credentials().join(", "));

    // 2. A secret in a streamed answer, through the official SDK.
    say(
        "2. The official OpenAI SDK streams an answer that contains a GitHub token",
        &format!("The provider sends \"{GH}\" split across SSE events; the client sees:"),
    );
    let py = py_venv().join("bin/python");
    let script = r#"
import sys, openai
c = openai.OpenAI(api_key="sk-dummy")
for ch in c.chat.completions.create(model="gpt-demo", stream=True, messages=[{"role": "user", "content": "Which token should I use?"}], extra_headers={"x-test-reply-hex": sys.argv[1].encode().hex(), "x-test-chunk": "4"}):
    if ch.choices and ch.choices[0].delta.content:
        print(ch.choices[0].delta.content, end="", flush=True)
print()
"#;
    let reply = format!("Use {GH} to push, it has write access.");
    let mut cmd =
        e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &["-c", script, &reply]);
    cmd.env("SSL_CERT_FILE", &e.ca);
    let out = cmd.output().expect("python");
    show("python printed:", &String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        show("python stderr:", &String::from_utf8_lossy(&out.stderr));
    }

    // 3. A held prompt, approved.
    say(
        "3. A prompt that mentions the production database waits for a human",
        "curl sends it; nothing reaches the provider until someone approves:",
    );
    let body = r#"{"model":"gpt-demo","messages":[{"role":"user","content":"drop the old tables in the production database?"}]}"#;
    let mut held =
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--resolve",
                &resolve,
                "--cacert",
                &ca,
                "-H",
                "content-type: application/json",
                "-H",
                "x-test-reply: Approved answer: take a backup first.",
                "-d",
                body,
                "https://api.openai.com/v1/chat/completions",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut listing = String::new();
    for _ in 0..100 {
        let out = e.gw.cli(&["approvals", "list"]);
        listing = String::from_utf8_lossy(&out.stdout).into_owned();
        if listing.contains("production database") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    show("$ gateway approvals list", &listing);
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("1")
        .to_string();
    let out = e.gw.cli(&["approvals", "approve", &id]);
    show(
        &format!("$ gateway approvals approve {id}"),
        &String::from_utf8_lossy(&out.stdout),
    );
    let mut answer = String::new();
    if let Some(o) = held.stdout.take() {
        for l in BufReader::new(o).lines().map_while(Result::ok) {
            answer.push_str(&l);
        }
    }
    let _ = held.wait();
    show("curl got:", &answer);

    // 4. The journal.
    std::thread::sleep(Duration::from_millis(200));
    say(
        "4. The journal: every exchange, with the process that made it",
        "$ gateway journal list",
    );
    let out = e.gw.cli(&["journal", "list"]);
    show("", &String::from_utf8_lossy(&out.stdout));
    let out = e.gw.cli(&["journal", "verify"]);
    show(
        "$ gateway journal verify",
        &String::from_utf8_lossy(&out.stdout),
    );
    for id in ["2", "3"] {
        let out = e.gw.cli(&["journal", "show", id, "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let who = &r["who"];
        let mut lines = vec![format!(
            "pid {} ({}) uid {} in cgroup {}; {} {} → {} in {:.0} ms",
            who["pid"],
            who["comm"].as_str().unwrap_or("?"),
            who["uid"],
            who["cgroup"].as_str().unwrap_or("?"),
            r["method"].as_str().unwrap_or("?"),
            r["path"].as_str().unwrap_or("?"),
            r["status"],
            r["duration_ms"].as_f64().unwrap_or(0.0)
        )];
        for d in r["decisions"].as_array().into_iter().flatten() {
            lines.push(format!(
                "{} rule {} ({}) ×{}",
                d["direction"].as_str().unwrap_or("?"),
                d["rule"].as_str().unwrap_or("?"),
                d["action"].as_str().unwrap_or("?"),
                d["count"]
            ));
        }
        if let Some(a) = r["approval"].as_object() {
            lines.push(format!(
                "held ({}): {} by {} after {:.0} ms",
                a["why"].as_str().unwrap_or("?"),
                a["outcome"].as_str().unwrap_or("?"),
                a["by"].as_str().unwrap_or("-"),
                a["waited_ms"].as_f64().unwrap_or(0.0)
            ));
        }
        let body = r["response_body"].as_str().unwrap_or("");
        lines.push(format!(
            "answer as delivered: {} bytes in {} pieces, the token {}",
            body.len(),
            r["events"].as_array().map_or(0, Vec::len),
            if body.contains(GH) {
                "PRESENT (!)"
            } else {
                "nowhere in it"
            }
        ));
        show(&format!("$ gateway journal show {id}:"), &lines.join("\n"));
    }
    println!(
        "\nReplay the streamed answer at its recorded pace: gateway replay 2 -c {}",
        e.gw.config.display()
    );
    print!(
        "\nPress Enter to stop the demo (the gateway, the fake provider and the cgroup go away). "
    );
    let _ = std::io::stdout().flush();
    if std::env::var_os("DEMO_NO_WAIT").is_none() {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }
}
