//! A Rust WebSocket client over TLS, for protocol-level checks against a fake (or a gateway).

use std::{net::SocketAddr, sync::Arc};

use tokio_tungstenite::WebSocketStream;

/// A Rust WebSocket client over TLS for protocol-level checks: connect to `addr`, TLS with SNI
/// `host` trusting `ca` (PEM), upgrade `wss://{host}{path}` with `headers` added. The 101
/// response comes back with the stream.
pub async fn client(
    addr: SocketAddr,
    host: &str,
    ca: &std::path::Path,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(ClientWs, http::Response<Option<Vec<u8>>>), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| format!("read {}: {e}", ca.display()))?;
    for c in
        <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))?;
    let mut req = format!("wss://{host}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
            http::HeaderValue::from_str(v).map_err(|e| e.to_string())?,
        );
    }
    tokio_tungstenite::client_async(req, tls)
        .await
        .map_err(|e| format!("upgrade: {e}"))
}

/// What [`client`] returns.
pub type ClientWs = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
