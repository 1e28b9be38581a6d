//! The optional webhook: one POST with a JSON description of a new hold (id, identity,
//! provider, model, reason, masked excerpt; every text printable, see [`super::printable`]).
//! Best effort: a failure is logged, the hold stays.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tracing::{debug, warn};

use super::HoldInfo;
use crate::redirect::origdst::OrigDstAddr;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("bad webhook URL: {0}")]
    Url(String),
    #[error("{0}")]
    Io(String),
    #[error("webhook answered {0}")]
    Status(u16),
}

pub struct Webhook {
    url: http::Uri,
    tls: Arc<ClientConfig>,
    mark: u32,
}

impl Webhook {
    pub fn new(url: &str, tls: Arc<ClientConfig>, mark: u32) -> Result<Self, WebhookError> {
        let url: http::Uri = url.parse().map_err(|e| WebhookError::Url(format!("{e}")))?;
        if url.host().is_none() {
            return Err(WebhookError::Url("no host".into()));
        }
        Ok(Self { url, tls, mark })
    }

    /// POST `info` in the background.
    pub fn notify(self: &Arc<Self>, info: HoldInfo) {
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), this.post(&info)).await {
                Ok(Ok(())) => debug!(hold = info.id, "webhook notified"),
                Ok(Err(e)) => warn!(hold = info.id, error = %e, "webhook failed"),
                Err(_) => warn!(hold = info.id, "webhook timed out"),
            }
        });
    }

    async fn post(&self, info: &HoldInfo) -> Result<(), WebhookError> {
        let https = self.url.scheme_str() == Some("https");
        let host = self.url.host().unwrap_or_default().to_string();
        let port = self.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        // getaddrinfo blocks: tokio runs it on its blocking pool, never on a connection thread.
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| WebhookError::Io(format!("resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| WebhookError::Io(format!("{host} has no address")))?;
        let tcp = crate::upstream::connect(OrigDstAddr(addr), self.mark, Duration::from_secs(5))
            .await
            .map_err(|e| WebhookError::Io(e.to_string()))?;
        let body = serde_json::to_vec(&serde_json::json!({
            "id": info.id,
            "created": info.created,
            "expires": info.expires,
            "identity": {"pid": info.pid, "uid": info.uid, "user": info.user, "comm": info.comm, "cgroup": info.cgroup},
            "provider": info.provider,
            "endpoint": info.endpoint,
            "model": info.model,
            "rule": info.reason,
            "excerpt": info.excerpt,
            "waiting": info.waiting,
        }))
        .unwrap_or_default();
        let pq = self
            .url
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let req = http::Request::post(pq)
            .header(http::header::HOST, &host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| WebhookError::Url(e.to_string()))?;
        let status = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| WebhookError::Url(format!("`{host}` is not a TLS name")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| WebhookError::Io(format!("TLS: {e}")))?;
            send(TokioIo::new(tls), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        if !(200..300).contains(&status) {
            return Err(WebhookError::Status(status));
        }
        Ok(())
    }
}

async fn send<IO>(io: IO, req: http::Request<Full<Bytes>>) -> Result<u16, WebhookError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| WebhookError::Io(e.to_string()))?;
    tokio::spawn(conn);
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| WebhookError::Io(e.to_string()))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}
