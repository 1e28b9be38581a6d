use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Method, Request, Version};
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{Role, frame::Frame, frame::coding::Data, frame::coding::OpCode},
    },
};

use super::{relay, render, *};
use crate::{
    hold::{HoldConfig, HoldService, Holds, ids::Ids},
    journal::Exchange,
    policy::{
        Policy,
        scan::{Action, Direction, PolicyConfig, RuleConfig, Unreadable},
    },
    redirect::identity::Identity,
};

fn rule(name: &str, pattern: &str, action: Action) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        detector: None,
        pattern: Some(pattern.into()),
        on: vec![Direction::Request, Direction::Response],
        action,
        replacement: None,
        allow: vec![],
        allow_regex: vec![],
        who: None,
    }
}

fn get(headers: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::builder().method(Method::GET).uri("/v1/realtime");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(()).unwrap()
}

#[test]
fn upgrades_are_classified_once() {
    let ws = get(&[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
    ]);
    assert_eq!(classify(&ws), Upgrade::WebSocket { h2: false });
    assert_eq!(classify(&get(&[])), Upgrade::None);
    // Anything else that would turn the connection into something else is refused.
    let h2c = get(&[("upgrade", "h2c"), ("connection", "upgrade")]);
    assert_eq!(classify(&h2c), Upgrade::Other("h2c".into()));
    let half = get(&[("upgrade", "websocket")]);
    assert!(matches!(classify(&half), Upgrade::Other(_)));
    let mut post = get(&[("upgrade", "websocket"), ("connection", "upgrade")]);
    *post.method_mut() = Method::POST;
    assert!(matches!(classify(&post), Upgrade::Other(_)));
    // h2: extended CONNECT with :protocol websocket; a plain CONNECT tunnel is refused.
    let mut c = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri("https://api.openai.com/v1/realtime")
        .body(())
        .unwrap();
    assert_eq!(classify(&c), Upgrade::Other("CONNECT".into()));
    c.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    assert_eq!(classify(&c), Upgrade::WebSocket { h2: true });
    c.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("connect-udp"));
    assert_eq!(classify(&c), Upgrade::Other("connect-udp".into()));
}

#[test]
fn the_clients_hello_is_checked() {
    let mut h = HeaderMap::new();
    assert!(Hello::read(&h, false).is_err(), "no version");
    h.insert("sec-websocket-version", HeaderValue::from_static("13"));
    assert!(Hello::read(&h, false).is_err(), "no key");
    assert!(Hello::read(&h, true).is_ok(), "h2 has no key");
    h.insert(
        "sec-websocket-key",
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("realtime, openai-beta.realtime-v1"),
    );
    let hello = Hello::read(&h, false).unwrap();
    assert_eq!(hello.protocols, ["realtime", "openai-beta.realtime-v1"]);
    h.insert("sec-websocket-version", HeaderValue::from_static("8"));
    assert!(Hello::read(&h, false).is_err());
}

#[test]
fn the_providers_101_is_checked() {
    let hello = Hello {
        h2: false,
        key: Some("x".into()),
        protocols: vec!["realtime".into()],
    };
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let ok = |extra: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        // RFC 6455 §1.3's example.
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        for (k, v) in extra {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    };
    assert_eq!(check_101(&ok(&[]), key, &hello).unwrap(), None);
    assert_eq!(
        check_101(&ok(&[("sec-websocket-protocol", "realtime")]), key, &hello).unwrap(),
        Some(HeaderValue::from_static("realtime"))
    );
    assert!(matches!(
        check_101(&ok(&[("sec-websocket-protocol", "other")]), key, &hello),
        Err(WsError::Handshake(_))
    ));
    assert!(matches!(
        check_101(
            &ok(&[("sec-websocket-extensions", "permessage-deflate")]),
            key,
            &hello
        ),
        Err(WsError::Extension(e)) if e == "permessage-deflate"
    ));
    assert!(matches!(
        check_101(&ok(&[]), "b3RoZXIga2V5IGhlcmUhIQ==", &hello),
        Err(WsError::Handshake(_))
    ));
    let mut no_upgrade = ok(&[]);
    no_upgrade.remove("upgrade");
    assert!(check_101(&no_upgrade, key, &hello).is_err());
}

#[test]
fn audio_is_counted_not_kept() {
    let audio = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        (0..=255u8).cycle().take(3000).collect::<Vec<_>>(),
    );
    let text = json!({"type": "input_audio_buffer.append", "audio": audio}).to_string();
    let (kept, n) = render::journal_text(&text);
    assert_eq!(n, 3000);
    assert!(kept.contains("[audio: 3000 bytes]") && !kept.contains(&audio[..40]));
    // Text in base64 is not audio; plain text stays.
    let b64text = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "a long enough text that is base64 encoded, but text all the same",
    );
    let t = json!({"x": b64text}).to_string();
    assert_eq!(render::journal_text(&t), (t.clone(), 0));
    assert_eq!(render::journal_text("not json"), ("not json".into(), 0));
}

/// A relay between a test client and a test provider, in memory.
struct Pair {
    client: WebSocketStream<DuplexStream>,
    server: WebSocketStream<DuplexStream>,
    done: tokio::task::JoinHandle<()>,
}

const LIMIT: usize = 4096;

async fn pair(rules: &[RuleConfig], hold: HoldConfig) -> Pair {
    let policy = Arc::new(Policy::new(rules, &PolicyConfig::default()).unwrap());
    let (c, c_peer) = tokio::io::duplex(1 << 16);
    let (u, u_peer) = tokio::io::duplex(1 << 16);
    let s = relay::Session {
        conn_id: 1,
        scanner: policy.scanner(),
        identity: Arc::new(Identity::default()),
        unreadable: Unreadable::Refuse,
        hold: Arc::new(HoldService {
            holds: Arc::new(Holds::new(&hold, Ids::in_memory())),
            cfg: hold,
            webhook: None,
            policy,
        }),
        journal: None,
        provider: "openai".into(),
        endpoint: "realtime",
        max_message: LIMIT,
        h2: false,
    };
    let ex = Exchange::new(None, &Identity::default(), 1);
    let done = tokio::spawn(relay::run(s, c_peer, u, ex));
    Pair {
        client: WebSocketStream::from_raw_socket(c, Role::Client, None).await,
        server: WebSocketStream::from_raw_socket(u_peer, Role::Server, None).await,
        done,
    }
}

async fn next(ws: &mut WebSocketStream<DuplexStream>) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time")
        .expect("open")
        .expect("readable")
}

fn delta(d: &str) -> Message {
    Message::Text(
        json!({"type": "response.text.delta", "response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0, "delta": d})
            .to_string()
            .into(),
    )
}

fn text_of(m: &Message) -> Value {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        Message::Binary(b) => serde_json::from_slice(b).unwrap(),
        other => panic!("not data: {other:?}"),
    }
}

#[tokio::test]
async fn a_fragmented_client_message_is_reassembled_and_masked() {
    let mut p = pair(
        &[rule("cust", "CUST-[0-9]{8}", Action::Mask)],
        HoldConfig::default(),
    )
    .await;
    let whole =
        json!({"type": "conversation.item.create", "text": "id CUST-12345678 ok"}).to_string();
    let (a, b) = whole.split_at(whole.find("1234").unwrap() + 2);
    // Two frames: a text frame without FIN, then its continuation.
    let f1 = Frame::message(a.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    let f2 = Frame::message(b.as_bytes().to_vec(), OpCode::Data(Data::Continue), true);
    p.client.send(Message::Frame(f1)).await.unwrap();
    p.client.send(Message::Frame(f2)).await.unwrap();
    let got = text_of(&next(&mut p.server).await);
    assert_eq!(got["text"], "id [MASKED:cust] ok");
    // Control frames are relayed both ways.
    p.client.send(Message::Ping("c".into())).await.unwrap();
    assert!(matches!(next(&mut p.server).await, Message::Ping(d) if &d[..] == b"c"));
    p.server.send(Message::Ping("s".into())).await.unwrap();
    loop {
        match next(&mut p.client).await {
            Message::Ping(d) => {
                assert_eq!(&d[..], b"s");
                break;
            }
            Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    // A close from the client reaches the provider.
    p.client.close(None).await.unwrap();
    loop {
        match next(&mut p.server).await {
            Message::Close(_) => break,
            Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    drop(p.server);
    tokio::time::timeout(Duration::from_secs(10), p.done)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_secret_split_across_provider_messages_is_masked() {
    let mut p = pair(
        &[rule("cust", "CUST-[0-9]{8}", Action::Mask)],
        HoldConfig::default(),
    )
    .await;
    for d in ["your id: CUST-123", "45678 and more", " text"] {
        p.server.send(delta(d)).await.unwrap();
    }
    p.server
        .send(Message::Text(
            json!({"type": "response.text.done", "output_index": 0, "content_index": 0, "text": "x"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut text = String::new();
    loop {
        let v = text_of(&next(&mut p.client).await);
        match v["type"].as_str().unwrap() {
            "response.text.delta" => text.push_str(v["delta"].as_str().unwrap()),
            "response.text.done" => break,
            t => panic!("{t}"),
        }
    }
    assert_eq!(text, "your id: [MASKED:cust] and more text");
    // Gemini Live in binary frames: binary in, binary out, masked across messages.
    for d in ["a CUST-1234", "5678 b"] {
        let m = json!({"serverContent": {"modelTurn": {"parts": [{"text": d}]}}}).to_string();
        p.server
            .send(Message::Binary(m.into_bytes().into()))
            .await
            .unwrap();
    }
    p.server
        .send(Message::Binary(
            json!({"serverContent": {"turnComplete": true}})
                .to_string()
                .into_bytes()
                .into(),
        ))
        .await
        .unwrap();
    let mut text = String::new();
    loop {
        let m = next(&mut p.client).await;
        assert!(matches!(m, Message::Binary(_)), "{m:?}");
        let v = text_of(&m);
        for part in v["serverContent"]["modelTurn"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            text.push_str(part["text"].as_str().unwrap_or(""));
        }
        if v["serverContent"]["turnComplete"] == true {
            break;
        }
    }
    assert_eq!(text, "a [MASKED:cust] b");
}

#[tokio::test]
async fn a_blocked_message_closes_with_1008_naming_the_rule() {
    let mut p = pair(
        &[rule("launch", "LAUNCH-[0-9]{6}", Action::Block)],
        HoldConfig::default(),
    )
    .await;
    p.client
        .send(Message::Text(
            json!({"t": "LAUNCH-123456"}).to_string().into(),
        ))
        .await
        .unwrap();
    match next(&mut p.client).await {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1008);
            assert!(
                f.reason.contains("`launch`") && !f.reason.contains("123456"),
                "{f}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The provider got a close, never the message.
    match next(&mut p.server).await {
        Message::Close(_) => {}
        other => panic!("the provider got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut p = pair(&[], HoldConfig::default()).await;
    p.client
        .send(Message::Text("x".repeat(LIMIT + 1).into()))
        .await
        .unwrap();
    match next(&mut p.client).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1009, "{f}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut p.server).await, Message::Close(_)));
    // And from the provider's side.
    let mut p = pair(&[], HoldConfig::default()).await;
    p.server
        .send(Message::Binary(vec![0u8; LIMIT + 1].into()))
        .await
        .unwrap();
    match next(&mut p.client).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1009, "{f}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn binary_that_is_not_text_with_a_secret_is_refused() {
    let mut p = pair(
        &[rule("cust", "CUST-[0-9]{8}", Action::Mask)],
        HoldConfig::default(),
    )
    .await;
    let mut b = vec![0xffu8, 0xfe, 0x00];
    b.extend_from_slice(b"CUST-12345678");
    p.client.send(Message::Binary(b.into())).await.unwrap();
    match next(&mut p.client).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1008, "{f}"),
        other => panic!("{other:?}"),
    }
    // Without a secret it goes through unchanged.
    let mut p = pair(
        &[rule("cust", "CUST-[0-9]{8}", Action::Mask)],
        HoldConfig::default(),
    )
    .await;
    p.client
        .send(Message::Binary(vec![0xff, 0xfe, 1, 2].into()))
        .await
        .unwrap();
    assert!(matches!(next(&mut p.server).await, Message::Binary(b) if b[..] == [0xff, 0xfe, 1, 2]));
}

#[tokio::test]
async fn a_held_message_and_the_ones_after_it_wait_then_go_in_order() {
    let cfg = HoldConfig {
        keywords: vec!["production database".into()],
        ..Default::default()
    };
    let policy = Arc::new(Policy::new(&[], &PolicyConfig::default()).unwrap());
    let holds = Arc::new(Holds::new(&cfg, Ids::in_memory()));
    let (c, c_peer) = tokio::io::duplex(1 << 16);
    let (u, u_peer) = tokio::io::duplex(1 << 16);
    let s = relay::Session {
        conn_id: 1,
        scanner: policy.scanner(),
        identity: Arc::new(Identity::default()),
        unreadable: Unreadable::Refuse,
        hold: Arc::new(HoldService {
            holds: holds.clone(),
            cfg,
            webhook: None,
            policy,
        }),
        journal: None,
        provider: "openai".into(),
        endpoint: "realtime",
        max_message: LIMIT,
        h2: false,
    };
    tokio::spawn(relay::run(
        s,
        c_peer,
        u,
        Exchange::new(None, &Identity::default(), 1),
    ));
    let mut client = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    let mut server = WebSocketStream::from_raw_socket(u_peer, Role::Server, None).await;
    client
        .send(Message::Text("drop the production database".into()))
        .await
        .unwrap();
    client.send(Message::Text("second".into())).await.unwrap();
    // Held: nothing reaches the provider; the provider's messages still reach the client.
    let id = loop {
        if let Some(h) = holds.list().first() {
            break h.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(200), server.next())
            .await
            .is_err()
    );
    server.send(delta("meanwhile")).await.unwrap();
    assert_eq!(text_of(&next(&mut client).await)["delta"], "meanwhile");
    holds
        .decide(
            id,
            crate::hold::Decision::Approved {
                by: "alice".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    assert!(
        matches!(next(&mut server).await, Message::Text(t) if t.as_str() == "drop the production database")
    );
    assert!(matches!(next(&mut server).await, Message::Text(t) if t.as_str() == "second"));
}
