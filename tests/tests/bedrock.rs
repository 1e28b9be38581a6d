//! AWS Bedrock through the gateway with boto3's `bedrock-runtime` client, unchanged: dummy
//! credentials, the gateway CA through `AWS_CA_BUNDLE` (as a user would set it), calling
//! `converse`, `converse_stream` and `invoke_model_with_response_stream` from inside the test
//! cgroup against a fake Bedrock that records every request. botocore's own signer recomputes
//! each signature the fake received with the vault's credentials: a wrong one fails the test.

use std::time::Duration;

use gateway_tests::{
    bedrock::{FakeBedrock, HOST, Reply, verify_sigv4},
    provider::ProviderEnv,
    py_venv, run,
};

const VAULT_AKID: &str = "AKIAVAULTBEDROCK2345";
const VAULT_SECRET: &str = "vAuLt/SeCrEt+bedrock0123456789abcdefghij";
const VAULT_TOKEN: &str = "FwoGZXIvYXdzEBEaDVAULTSESSIONTOKEN0123456789abcdef==";
const JOB_AKID: &str = "AKIAJOBDUMMYKEYIDXXX";
const JOB_SECRET: &str = "job-dummy-secret-from-the-ci-job";
/// A secret the model "says", split across two messages by the fake.
const SECRET: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
/// A secret in the prompt: masked before it leaves, and the signature still verifies.
const PROMPT_SECRET: &str = "ghp_zY9xW8vU7tS6rQ5pO4nM3lK2jI1hG0fE9dC8";

const PY: &str = r#"
import json, sys, boto3, botocore
c = boto3.client("bedrock-runtime", region_name="us-east-1")
msgs = [{"role": "user", "content": [{"text": "deploy with " + sys.argv[1]}]}]
plain = c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=msgs)["output"]["message"]["content"][0]["text"]
arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
s = c.converse_stream(modelId=arn, messages=msgs)
types, stream = [], ""
for ev in s["stream"]:
    types.extend(ev.keys())
    if "contentBlockDelta" in ev:
        stream += ev["contentBlockDelta"]["delta"]["text"]
body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi " + sys.argv[1]}]})
r = c.invoke_model_with_response_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=body)
invoke = ""
for ev in r["body"]:
    d = json.loads(ev["chunk"]["bytes"])
    if d.get("type") == "content_block_delta":
        invoke += d["delta"]["text"]
print(json.dumps({"plain": plain, "stream": stream, "types": types, "invoke": invoke}))
"#;

/// A raw request with a streaming-signed body, as an aws-chunked upload would be sent.
const PY_STREAMING: &str = r#"
import json, os, requests
r = requests.post("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
    data=b'{"messages":[]}', verify=os.environ["AWS_CA_BUNDLE"],
    headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAJOBDUMMYKEYIDXXX/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00",
             "X-Amz-Date": "20260101T000000Z", "X-Amz-Content-Sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
             "Content-Type": "application/json"})
print(json.dumps({"status": r.status_code, "type": r.headers.get("x-amzn-errortype"), "body": r.json()}))
"#;

/// One suite: the gateway (built-in providers, `bedrock` pointed at the fake), the fake
/// Bedrock on `127.181.<pid>.<host>` (this suite's own range), the hosts file naming it.
struct Suite {
    env: ProviderEnv,
    fake: FakeBedrock,
    py: std::path::PathBuf,
}

fn suite(host: u8, vault: &str) -> Suite {
    gateway_tests::require_privileges();
    let py = py_venv().join("bin/python");
    let ip = format!("127.181.{}.{host}", std::process::id() % 250);
    let cfg = format!("[[provider]]\nname = \"bedrock\"\naddrs = [\"{ip}/32\"]\n");
    let env = ProviderEnv::start("gw-bedrock", 180, &cfg, &[("bedrock", vault)]);
    let fake = FakeBedrock::start(
        format!("{ip}:443").parse().unwrap(),
        &env.fakes.pki,
        Reply {
            pieces: vec![
                "the token is ".into(),
                SECRET[..17].into(),
                SECRET[17..].into(),
                " ok".into(),
            ],
        },
    );
    let hosts = format!(
        "{}{ip} {HOST}\n",
        std::fs::read_to_string(&env.hosts).unwrap()
    );
    std::fs::write(&env.hosts, hosts).unwrap();
    Suite { env, fake, py }
}

impl Suite {
    /// `script` under the suite's Python inside the cgroup, with `aws_env` as the job's AWS
    /// settings (no config files, no instance metadata) and the gateway CA as AWS_CA_BUNDLE.
    fn client(
        &self,
        script: &str,
        args: &[&str],
        aws_env: &[(&str, &str)],
    ) -> gateway_tests::ClientRun {
        let mut a = vec!["-c", script];
        a.extend_from_slice(args);
        let mut cmd =
            self.env
                .cg
                .command_with_hosts(&self.env.hosts, self.py.to_str().unwrap(), &a);
        cmd.env("AWS_CA_BUNDLE", &self.env.ca)
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in aws_env {
            cmd.env(k, v);
        }
        run(cmd, Duration::from_secs(90))
    }
}

/// The newest journal record whose path ends with `suffix`, in full.
fn journal_of(env: &ProviderEnv, suffix: &str) -> serde_json::Value {
    let out = env.gw.cli(&["journal", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .filter_map(|r| r["id"].as_u64())
        .max()
        .unwrap_or_else(|| panic!("no record for {suffix}: {list}"));
    let out = env.gw.cli(&["journal", "show", &id.to_string(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

const JOB_CREDS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", JOB_AKID),
    ("AWS_SECRET_ACCESS_KEY", JOB_SECRET),
    ("AWS_SESSION_TOKEN", "job-dummy-session-token"),
];

#[test]
fn boto3_through_the_gateway_is_resigned_with_the_vault_credentials_and_masked() {
    let vault = format!("{VAULT_AKID}:{VAULT_SECRET}:{VAULT_TOKEN}");
    let st = suite(1, &vault);
    let (gw, fake, py) = (&st.env.gw, &st.fake, &st.py);
    let client = |script: &str, args: &[&str]| st.client(script, args, JOB_CREDS);
    let r = client(PY, &[PROMPT_SECRET]);
    assert!(r.ok, "boto3: {r:?}\n{}", gw.raw_log());
    let out: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let want = "the token is [MASKED:github-classic-token] ok";
    assert_eq!(out["plain"], want, "{out}");
    assert_eq!(
        out["stream"], want,
        "a secret split across two event-stream messages: {out}"
    );
    assert_eq!(out["invoke"], want, "{out}");
    let types: Vec<&str> = out["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"messageStart"));
    assert!(
        types.contains(&"messageStop") && types.last() == Some(&"metadata"),
        "{types:?}"
    );

    // The event-stream answers are journaled as the text of their messages (one JSON line
    // each, a chunk's bytes decoded), masked as delivered; `replay` prints that text.
    let streamed = journal_of(&st.env, "/converse-stream");
    let lines: Vec<serde_json::Value> = streamed["response_body"]
        .as_str()
        .unwrap_or_else(|| panic!("no response_body: {streamed}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = lines
        .iter()
        .filter_map(|l| l["payload"]["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, want, "{lines:?}");
    assert_eq!(lines[0]["headers"][":event-type"], "messageStart");
    let invoked = journal_of(&st.env, "/invoke-with-response-stream");
    let body = invoked["response_body"].as_str().unwrap_or("");
    let text: String = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| {
            l["payload"]["bytes"]["delta"]["text"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, want, "{body}");
    for r in [&streamed, &invoked] {
        assert!(!r.to_string().contains(SECRET), "{r}");
    }
    let id = streamed["id"].to_string();
    let rp = gw.cli(&["replay", &id, "--speed", "0"]);
    assert!(rp.status.success(), "{rp:?}");
    assert_eq!(
        String::from_utf8_lossy(&rp.stdout),
        streamed["response_body"].as_str().unwrap()
    );

    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets[0],
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    );
    assert_eq!(
        targets[1],
        "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        "the ARN's `/` stays encoded in its segment"
    );
    assert!(targets[2].ends_with("/invoke-with-response-stream"));
    for s in &seen {
        let all = format!("{s:?}");
        for leaked in [
            JOB_AKID,
            JOB_SECRET,
            "job-dummy-session-token",
            PROMPT_SECRET,
        ] {
            assert!(
                !all.contains(leaked),
                "{leaked} reached the provider: {all}"
            );
        }
        assert_eq!(s.all("x-amz-security-token"), vec![VAULT_TOKEN.to_string()]);
        let auth = s.all("authorization");
        assert_eq!(auth.len(), 1);
        assert!(
            auth[0].contains(&format!("Credential={VAULT_AKID}/")),
            "{auth:?}"
        );
        let body = String::from_utf8_lossy(&s.body);
        assert!(
            body.contains("[MASKED:github-classic-token]"),
            "the prompt went masked: {body}"
        );
    }
    // botocore's signer, with the vault's credentials, agrees with every signature.
    assert_eq!(
        verify_sigv4(py, &seen, VAULT_AKID, VAULT_SECRET, Some(VAULT_TOKEN)),
        vec![true; 3]
    );
    // The check can fail: another secret, or a body changed after signing, does not verify.
    assert_eq!(
        verify_sigv4(
            py,
            &seen,
            VAULT_AKID,
            "not-the-vault-secret",
            Some(VAULT_TOKEN)
        ),
        vec![false; 3]
    );
    let mut tampered = seen.clone();
    let last = tampered[0].body.len() - 2;
    tampered[0].body[last] ^= 0x01;
    assert_eq!(
        verify_sigv4(
            py,
            &tampered[..1],
            VAULT_AKID,
            VAULT_SECRET,
            Some(VAULT_TOKEN)
        ),
        vec![false]
    );

    // A streaming-signed body is refused, clearly, and nothing reaches the provider.
    let r = client(PY_STREAMING, &[]);
    assert!(r.ok, "{r:?}");
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["status"], 400, "{out}");
    assert_eq!(out["type"], "ValidationException", "{out}");
    assert!(
        out["body"]["message"]
            .as_str()
            .unwrap()
            .contains("streaming-signed"),
        "{out}"
    );
    assert_eq!(fake.seen().len(), 3, "nothing more was sent");
}

/// A Bedrock API key the job holds (boto3's `AWS_BEARER_TOKEN_BEDROCK`: `Authorization: Bearer
/// ABSK...`) is a credential like any other: removed, and the request signed with the vault's
/// long-term credentials (no session token: no `x-amz-security-token`).
#[test]
fn a_jobs_bedrock_api_key_is_replaced_by_the_vaults_signature() {
    const JOB_API_KEY: &str =
        "ABSKQmVkcm9ja0FQSUtleS1qb2ItZHVtbXktYXQtMTIzNDU2Nzg5MDEyOmR1bW15c2VjcmV0";
    let st = suite(2, &format!("{VAULT_AKID}:{VAULT_SECRET}"));
    let r = st.client(PY, &["hello"], &[("AWS_BEARER_TOKEN_BEDROCK", JOB_API_KEY)]);
    assert!(r.ok, "boto3: {r:?}\n{}", st.env.gw.raw_log());
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(
        out["stream"], "the token is [MASKED:github-classic-token] ok",
        "{out}"
    );
    let seen = st.fake.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        let all = format!("{s:?}");
        assert!(
            !all.contains(JOB_API_KEY) && !all.contains("Bearer"),
            "{all}"
        );
        assert!(s.all("x-amz-security-token").is_empty(), "{all}");
    }
    assert_eq!(
        verify_sigv4(&st.py, &seen, VAULT_AKID, VAULT_SECRET, None),
        vec![true; 3]
    );
}
