//! The sinks: where a batch of events goes, and what counts as its acknowledgement — every
//! message written to the TCP connection (syslog over TCP), every datagram sent (syslog over
//! UDP: best effort by nature), an HTTP 2xx (Splunk HEC, OTLP).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket},
};

use super::{ExportConfig, Target, event::Context, http::Poster, syslog};

/// A UDP datagram's payload is at most this long (IPv4: 65535 - 8 - 20); a larger message is
/// sent without its bodies.
const MAX_DATAGRAM: usize = 65_507;

pub enum Sink {
    Syslog {
        tcp: bool,
        host: String,
        port: u16,
        cef: bool,
        facility: u8,
        timeout: Duration,
        stream: Option<TcpStream>,
        udp: Option<UdpSocket>,
    },
    Hec {
        poster: Poster,
        sourcetype: String,
        index: Option<String>,
    },
    Otlp {
        poster: Poster,
    },
}

impl Sink {
    pub fn new(cfg: &ExportConfig, target: Target) -> Result<Self, String> {
        Ok(match target {
            Target::Syslog {
                tcp,
                host,
                port,
                cef,
                facility,
            } => Sink::Syslog {
                tcp,
                host,
                port,
                cef,
                facility,
                timeout: cfg.timeout,
                stream: None,
                udp: None,
            },
            Target::Hec { url, token_env } => {
                let token = std::env::var(&token_env)
                    .map_err(|_| format!("the environment variable {token_env} is not set"))?;
                let mut auth = http::HeaderValue::from_str(&format!("Splunk {}", token.trim()))
                    .map_err(|_| {
                        format!("the token in {token_env} is not usable in an HTTP header")
                    })?;
                auth.set_sensitive(true);
                Sink::Hec {
                    poster: Poster::new(
                        url,
                        cfg.ca_file.as_deref(),
                        vec![(http::header::AUTHORIZATION, auth)],
                        cfg.timeout,
                    )?,
                    sourcetype: cfg.sourcetype.clone(),
                    index: cfg.index.clone(),
                }
            }
            Target::Otlp { url } => Sink::Otlp {
                poster: Poster::new(url, cfg.ca_file.as_deref(), Vec::new(), cfg.timeout)?,
            },
        })
    }

    /// Deliver the batch; `Ok` only once the sink acknowledged all of it.
    pub async fn send(&mut self, events: &[Value], ctx: &Context) -> Result<(), String> {
        match self {
            Sink::Syslog {
                tcp: true,
                host,
                port,
                cef,
                facility,
                timeout,
                stream,
                ..
            } => {
                let mut buf = Vec::new();
                for ev in events {
                    buf.extend(syslog::frame(&syslog::rfc5424(ev, ctx, *facility, *cef)));
                }
                // A receiver never sends: a readable connection is a closed one (a write into
                // it would be lost, so it is not used).
                if let Some(s) = stream {
                    let mut probe = [0u8; 64];
                    match s.try_read(&mut probe) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        _ => *stream = None,
                    }
                }
                let s = match stream {
                    Some(s) => s,
                    None => {
                        let s = tokio::time::timeout(
                            *timeout,
                            TcpStream::connect((host.as_str(), *port)),
                        )
                        .await
                        .map_err(|_| {
                            format!("tcp://{host}:{port}: no connection within {timeout:?}")
                        })?
                        .map_err(|e| format!("tcp://{host}:{port}: connect: {e}"))?;
                        let _ = s.set_nodelay(true);
                        stream.insert(s)
                    }
                };
                let w = tokio::time::timeout(*timeout, async {
                    s.write_all(&buf).await?;
                    s.flush().await
                })
                .await;
                match w {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        *stream = None;
                        Err(format!("tcp://{host}:{port}: write: {e}"))
                    }
                    Err(_) => {
                        *stream = None;
                        Err(format!(
                            "tcp://{host}:{port}: write timed out after {timeout:?}"
                        ))
                    }
                }
            }
            Sink::Syslog {
                tcp: false,
                host,
                port,
                cef,
                facility,
                udp,
                ..
            } => {
                let sock = match udp {
                    Some(s) => s,
                    None => {
                        let addr = tokio::net::lookup_host((host.as_str(), *port))
                            .await
                            .map_err(|e| format!("udp://{host}:{port}: {e}"))?
                            .next()
                            .ok_or_else(|| format!("udp://{host}:{port}: no address"))?;
                        let bind = if addr.is_ipv4() {
                            "0.0.0.0:0"
                        } else {
                            "[::]:0"
                        };
                        let s = UdpSocket::bind(bind)
                            .await
                            .map_err(|e| format!("udp bind: {e}"))?;
                        s.connect(addr)
                            .await
                            .map_err(|e| format!("udp://{host}:{port}: {e}"))?;
                        udp.insert(s)
                    }
                };
                for ev in events {
                    let mut msg = syslog::rfc5424(ev, ctx, *facility, *cef);
                    if msg.len() > MAX_DATAGRAM {
                        let mut slim = ev.clone();
                        if let Some(u) = slim["unmapped"].as_object_mut() {
                            u.remove("request_body");
                            u.remove("response_body");
                            u.remove("websocket");
                            u.insert(
                                "bodies_omitted".into(),
                                json!("the event was too large for one UDP datagram"),
                            );
                        }
                        syslog::cut_strings(&mut slim, syslog::MAX_FIELD);
                        let slim_ctx = Context {
                            include_bodies: false,
                            ..ctx.clone()
                        };
                        msg = syslog::rfc5424(&slim, &slim_ctx, *facility, *cef);
                        msg.truncate(MAX_DATAGRAM);
                    }
                    if let Err(e) = sock.send(msg.as_bytes()).await {
                        *udp = None;
                        return Err(format!("udp://{host}:{port}: send: {e}"));
                    }
                }
                Ok(())
            }
            Sink::Hec {
                poster,
                sourcetype,
                index,
            } => {
                let mut body = Vec::new();
                for ev in events {
                    let ms = ev["time"].as_u64().unwrap_or(0);
                    let mut e = json!({
                        "time": ms as f64 / 1000.0,
                        "host": ctx.node,
                        "source": "gateway",
                        "sourcetype": sourcetype,
                        "event": ev,
                    });
                    if let Some(i) = index {
                        e["index"] = json!(i);
                    }
                    body.extend(serde_json::to_vec(&e).unwrap_or_default());
                    body.push(b'\n');
                }
                let a = poster.post(Bytes::from(body), "application/json").await?;
                if a.status.is_success() {
                    return Ok(());
                }
                let text = serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["text"].as_str().map(String::from))
                    .unwrap_or_default();
                Err(format!("Splunk HEC answered {} {text}", a.status))
            }
            Sink::Otlp { poster } => {
                let body = super::otlp::request(events, ctx);
                let a = poster
                    .post(Bytes::from(body.to_string()), "application/json")
                    .await?;
                if !a.status.is_success() {
                    let msg = serde_json::from_slice::<Value>(&a.body)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(String::from))
                        .unwrap_or_default();
                    return Err(format!("OTLP receiver answered {} {msg}", a.status));
                }
                // Rejected records are not retried (OTLP/HTTP: the receiver will not take them
                // again either); they are named in the log.
                if let Ok(v) = serde_json::from_slice::<Value>(&a.body)
                    && let Some(n) = v["partialSuccess"]["rejectedLogRecords"]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .or(v["partialSuccess"]["rejectedLogRecords"].as_u64())
                    && n > 0
                {
                    tracing::error!(
                        rejected = n,
                        message = v["partialSuccess"]["errorMessage"].as_str().unwrap_or(""),
                        "OTLP receiver rejected log records of an acknowledged batch"
                    );
                }
                Ok(())
            }
        }
    }
}
