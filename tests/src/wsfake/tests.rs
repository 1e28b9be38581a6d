//! Self-tests of the WebSocket fake: a Rust tungstenite client straight to it (no gateway).

use super::*;
use crate::{fake::TestPki, provider::FakeProvider, provider::REPLY};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

const HOSTS: &[&str] = &["api.openai.com", "generativelanguage.googleapis.com"];

/// A fake on a free port of 127.175.250.1 (no privilege needed), its PKI, a client runtime.
fn setup() -> (FakeProvider, TestPki, tokio::runtime::Runtime) {
    let pki = TestPki::new(HOSTS);
    let ip = "127.175.250.1";
    let addr: SocketAddr = format!("{ip}:{}", crate::free_port(ip)).parse().unwrap();
    let fake = FakeProvider::start(addr, &pki);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (fake, pki, rt)
}

/// Read JSON messages until one satisfies `last` (included); panics after 10 s.
async fn until(ws: &mut ClientWs, last: impl Fn(&Value) -> bool) -> Vec<(bool, Value)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("fake answered in time")
            .expect("stream open")
            .expect("message");
        let (binary, v) = match m {
            Message::Text(t) => (false, serde_json::from_str::<Value>(&t).expect("JSON text")),
            Message::Binary(b) => (
                true,
                serde_json::from_slice::<Value>(&b).expect("JSON binary"),
            ),
            _ => continue,
        };
        let stop = last(&v);
        out.push((binary, v));
        if stop {
            return out;
        }
    }
}

fn kinds(evs: &[(bool, Value)]) -> Vec<String> {
    evs.iter()
        .map(|(_, v)| v["type"].as_str().unwrap_or("").to_string())
        .collect()
}

fn text_of(evs: &[(bool, Value)], kind: &str) -> String {
    evs.iter()
        .filter(|(_, v)| v["type"] == kind)
        .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn responses_mode_answers_prewarm_and_create_with_the_sse_events() {
    let (fake, pki, rt) = setup();
    rt.block_on(async {
        let (mut ws, resp) = client(
            fake.addr,
            "api.openai.com",
            &pki.ca_pem,
            "/v1/responses",
            &[
                ("authorization", "Bearer sk-test-ws-1234"),
                ("openai-beta", "responses_websockets=2026-02-06"),
                ("x-test-chunk", "4"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 101);
        assert!(resp.headers().get("sec-websocket-extensions").is_none());
        // Codex's prewarm: no output, completed at once.
        ws.send(Message::text(
            json!({"type": "response.create", "model": "gpt-5", "input": [], "generate": false})
                .to_string(),
        ))
        .await
        .unwrap();
        let pre = until(&mut ws, |v| v["type"] == "response.completed").await;
        assert_eq!(kinds(&pre), ["response.created", "response.completed"]);
        let prewarm_id = pre[1].1["response"]["id"].as_str().unwrap().to_string();
        ws.send(Message::text(
            json!({"type": "response.create", "model": "gpt-5", "previous_response_id": prewarm_id,
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]})
            .to_string(),
        ))
        .await
        .unwrap();
        let evs = until(&mut ws, |v| v["type"] == "response.completed").await;
        let k = kinds(&evs);
        assert_eq!(
            k.iter().filter(|k| !k.ends_with(".delta")).collect::<Vec<_>>(),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        // x-test-chunk 4: the reply cut in 4-character deltas.
        let deltas: Vec<&str> = evs
            .iter()
            .filter(|(_, v)| v["type"] == "response.output_text.delta")
            .map(|(_, v)| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas.len(), REPLY.len().div_ceil(4));
        assert_eq!(deltas.concat(), REPLY);
        let done = &evs.last().unwrap().1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], REPLY);
        assert_eq!(done["usage"]["total_tokens"], 11);
        let seqs: Vec<u64> = evs.iter().map(|(_, v)| v["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let s = fake.wait_ws(1, Duration::from_secs(5));
    assert_eq!(s.len(), 1, "{s:#?}");
    let s = &s[0];
    assert!(
        s.done && s.rejected.is_none() && s.error.is_none(),
        "{s:#?}"
    );
    assert_eq!(s.api, Some(WsApi::Responses));
    assert_eq!(s.target, "/v1/responses");
    assert_eq!(s.credentials(), ["authorization: Bearer sk-test-ws-1234"]);
    assert_eq!(s.header("openai-beta"), ["responses_websockets=2026-02-06"]);
    assert_eq!(s.received.len(), 2);
    assert_eq!(
        s.received[1].json().unwrap()["input"][0]["content"][0]["text"],
        "hi"
    );
    assert_eq!(s.sent_text(), REPLY);
    assert_eq!(s.close.as_ref().map(|c| c.0), Some(1005));
    // No HTTP request was seen: the upgrade is not a request in the HTTP record.
    assert!(fake.seen().is_empty());
}

#[test]
fn realtime_speaks_ga_and_beta_event_names_text_and_audio() {
    let (fake, pki, rt) = setup();
    rt.block_on(async {
        // GA, text.
        let (mut ws, _) = client(
            fake.addr,
            "api.openai.com",
            &pki.ca_pem,
            "/v1/realtime?model=gpt-realtime",
            &[("authorization", "Bearer sk-rt-1")],
        )
        .await
        .unwrap();
        let first = until(&mut ws, |_| true).await;
        assert_eq!(kinds(&first), ["session.created"]);
        assert_eq!(first[0].1["session"]["type"], "realtime");
        ws.send(Message::text(json!({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}).to_string())).await.unwrap();
        assert_eq!(kinds(&until(&mut ws, |_| true).await), ["session.updated"]);
        ws.send(Message::text(json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hi"}]}}).to_string())).await.unwrap();
        assert_eq!(kinds(&until(&mut ws, |_| true).await), ["conversation.item.created"]);
        let audio = base64::engine::general_purpose::STANDARD.encode([1u8; 300]);
        ws.send(Message::text(json!({"type": "input_audio_buffer.append", "audio": audio}).to_string())).await.unwrap();
        ws.send(Message::text(json!({"type": "response.create", "x-test-reply": "one two three"}).to_string())).await.unwrap();
        let evs = until(&mut ws, |v| v["type"] == "response.done").await;
        assert_eq!(text_of(&evs, "response.output_text.delta"), "one two three");
        assert_eq!(evs.iter().filter(|(_, v)| v["type"] == "response.output_text.delta").count(), 3);
        assert_eq!(kinds(&evs).first().unwrap(), "response.created");
        assert!(kinds(&evs).contains(&"response.output_text.done".to_string()));
        assert_eq!(evs.last().unwrap().1["response"]["status"], "completed");
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}

        // Beta, audio.
        let (mut ws, _) = client(
            fake.addr,
            "api.openai.com",
            &pki.ca_pem,
            "/v1/realtime?model=gpt-4o-realtime-preview",
            &[("authorization", "Bearer sk-rt-2"), ("openai-beta", "realtime=v1")],
        )
        .await
        .unwrap();
        let first = until(&mut ws, |_| true).await;
        assert_eq!(first[0].1["session"]["modalities"], json!(["text"]));
        ws.send(Message::text(json!({"type": "response.create", "response": {"modalities": ["audio", "text"]}}).to_string())).await.unwrap();
        let evs = until(&mut ws, |v| v["type"] == "response.done").await;
        assert_eq!(text_of(&evs, "response.audio_transcript.delta"), REPLY);
        let audio: Vec<Vec<u8>> = evs
            .iter()
            .filter(|(_, v)| v["type"] == "response.audio.delta")
            .map(|(_, v)| base64::engine::general_purpose::STANDARD.decode(v["delta"].as_str().unwrap()).unwrap())
            .collect();
        assert!(!audio.is_empty() && audio.iter().all(|a| a.len() == 480));
        // Beta names only: no GA `response.output_text.*` / `response.output_audio*.*`.
        assert!(
            !kinds(&evs)
                .iter()
                .any(|k| k.starts_with("response.output_text") || k.starts_with("response.output_audio")),
            "{evs:?}"
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let s = fake.wait_ws(2, Duration::from_secs(5));
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|s| s.api == Some(WsApi::Realtime) && s.done));
    assert_eq!(s[0].audio_bytes, 300);
    assert_eq!(s[0].target, "/v1/realtime?model=gpt-realtime");
    assert_eq!(s[1].credentials(), ["authorization: Bearer sk-rt-2"]);
}

#[test]
fn gemini_live_answers_in_binary_frames_then_text_frames_when_asked() {
    let (fake, pki, rt) = setup();
    for text_frames in [false, true] {
        fake.ws_options(WsOptions {
            gemini_text_frames: text_frames,
            ..Default::default()
        });
        rt.block_on(async {
            let (mut ws, _) = client(
                fake.addr,
                "generativelanguage.googleapis.com",
                &pki.ca_pem,
                "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=AIza-live-1",
                &[],
            )
            .await
            .unwrap();
            ws.send(Message::text(json!({"setup": {"model": "models/gemini-live", "generationConfig": {"responseModalities": ["TEXT"]}}}).to_string())).await.unwrap();
            let setup = until(&mut ws, |_| true).await;
            assert_eq!(setup[0], (!text_frames, json!({"setupComplete": {}})));
            ws.send(Message::text(json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": true}}).to_string())).await.unwrap();
            let evs = until(&mut ws, |v| v["serverContent"]["turnComplete"] == true).await;
            assert!(evs.iter().all(|(b, _)| *b != text_frames));
            let text: String = evs
                .iter()
                .filter_map(|(_, v)| v["serverContent"]["modelTurn"]["parts"][0]["text"].as_str())
                .collect();
            assert_eq!(text, REPLY);
            assert!(evs.iter().any(|(_, v)| v["serverContent"]["generationComplete"] == true));
            // realtimeInput text is answered too.
            ws.send(Message::text(json!({"realtimeInput": {"text": "again"}}).to_string())).await.unwrap();
            until(&mut ws, |v| v["serverContent"]["turnComplete"] == true).await;
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        });
    }
    let s = fake.wait_ws(2, Duration::from_secs(5));
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].credentials(), ["?key=AIza-live-1"]);
    assert!(s[0].sent.iter().all(WsMsg::is_binary));
    assert!(!s[1].sent.iter().any(WsMsg::is_binary));
    assert_eq!(s[0].sent_text(), format!("{REPLY}{REPLY}"));
}

#[test]
fn deltas_splice_the_credential_and_misbehaviour_is_scriptable() {
    let (fake, pki, rt) = setup();
    fake.ws_options(WsOptions {
        deltas: Some(vec!["key: {{CRED_A}}".into(), "{{CRED_B}} end".into()]),
        oversize: Some(100_000),
        ..Default::default()
    });
    rt.block_on(async {
        let (mut ws, _) = client(
            fake.addr,
            "api.openai.com",
            &pki.ca_pem,
            "/v1/responses",
            &[("authorization", "Bearer sk-split-me-0123456789")],
        )
        .await
        .unwrap();
        ws.send(Message::text(
            json!({"type": "response.create", "model": "m", "input": []}).to_string(),
        ))
        .await
        .unwrap();
        let evs = until(&mut ws, |v| v["type"] == "response.completed").await;
        // The oversized message comes first, then the answer with the key split in two.
        assert_eq!(evs[0].1["delta"].as_str().unwrap().len(), 100_000);
        let d: Vec<&str> = evs[1..]
            .iter()
            .filter(|(_, v)| v["type"] == "response.output_text.delta")
            .map(|(_, v)| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(d, ["key: sk-split-me", "-0123456789 end"]);
    });
    // An extension the client never offered, in the 101.
    fake.ws_options(WsOptions {
        force_extensions: Some("permessage-deflate".into()),
        ..Default::default()
    });
    let head = rt.block_on(raw_upgrade(
        &fake,
        &pki,
        "/v1/responses",
        "dGhlIHNhbXBsZSBub25jZQ==",
        "13",
    ));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    // RFC 6455's example key gives its example accept value.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
}

/// A hand-written upgrade request; the response head as text.
async fn raw_upgrade(
    fake: &FakeProvider,
    pki: &TestPki,
    path: &str,
    key: &str,
    version: &str,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki.ca_pem).unwrap();
    for c in
        <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("api.openai.com".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn malformed_upgrades_are_refused_and_recorded() {
    let (fake, pki, rt) = setup();
    let short_key = rt.block_on(raw_upgrade(&fake, &pki, "/v1/responses", "c2hvcnQ=", "13"));
    assert!(short_key.starts_with("HTTP/1.1 400"), "{short_key}");
    let old = rt.block_on(raw_upgrade(
        &fake,
        &pki,
        "/v1/responses",
        "dGhlIHNhbXBsZSBub25jZQ==",
        "8",
    ));
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{old}"
    );
    let nowhere = rt.block_on(raw_upgrade(
        &fake,
        &pki,
        "/v1/chat/completions",
        "dGhlIHNhbXBsZSBub25jZQ==",
        "13",
    ));
    assert!(nowhere.starts_with("HTTP/1.1 404"), "{nowhere}");
    let s = fake.ws_sessions();
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|s| s.done && s.rejected.is_some()), "{s:#?}");
    assert!(s[0].rejected.as_deref().unwrap().contains("16 bytes"));
}
