//! Re-originated provider requests: rustls to the original destination (SNI = the client's
//! SNI, full certificate verification against the system roots plus `upstream.extra_roots`),
//! pooled and reused per (destination, SNI, protocol, worker thread), h2 when the client spoke h2 and the
//! provider agrees, HTTP/1.1 otherwise.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    UpstreamError, connect,
    h2::{H2Slot, Sent},
};
use crate::redirect::origdst::OrigDstAddr;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;
/// The provider's answer, streaming.
pub type RespBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot read trust roots from {path}: {reason}")]
    Roots { path: PathBuf, reason: String },
    #[error("no trust roots at all (system store empty and no upstream.extra_roots)")]
    NoRoots,
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// Why an upstream exchange failed, classified for the client's error response.
#[derive(Debug)]
pub enum SendError {
    /// The upstream's certificate did not verify.
    Certificate(String),
    /// Could not connect, or the connection broke.
    Unavailable(String),
}

pub fn root_store(extra: &[PathBuf]) -> Result<RootCertStore, PoolError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    for path in extra {
        let pem = std::fs::read(path).map_err(|e| PoolError::Roots {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut n = 0;
        for cert in <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| PoolError::Roots {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| PoolError::Roots {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(PoolError::Roots {
                path: path.clone(),
                reason: "no PEM certificate in it".into(),
            });
        }
    }
    if roots.is_empty() {
        return Err(PoolError::NoRoots);
    }
    Ok(roots)
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    dst: SocketAddr,
    sni: String,
    h2: bool,
    /// Connections are per worker thread (`workers::current`).
    worker: usize,
}

/// The upstream side of every intercepted connection.
pub struct Upstreams {
    tls_h1: Arc<ClientConfig>,
    tls_h2: Arc<ClientConfig>,
    mark: u32,
    connect_timeout: Duration,
    idle: Duration,
    clients: Mutex<HashMap<Key, Client<Connector, ReqBody>>>,
    h2: Mutex<HashMap<Key, Arc<H2Slot>>>,
}

const MAX_CLIENTS: usize = 4096;

impl Upstreams {
    pub fn new(roots: RootCertStore, mark: u32, connect_timeout: Duration, idle: Duration) -> Self {
        let roots = Arc::new(roots);
        let cfg = |alpn: Vec<Vec<u8>>| {
            let mut c = ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn;
            Arc::new(c)
        };
        Self {
            tls_h1: cfg(vec![b"http/1.1".to_vec()]),
            tls_h2: cfg(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
            mark,
            connect_timeout,
            idle,
            clients: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
        }
    }

    fn connector(&self, dst: OrigDstAddr, sni: &str, h2: bool) -> Result<Connector, PoolError> {
        let server_name =
            ServerName::try_from(sni.to_string()).map_err(|_| PoolError::ServerName(sni.into()))?;
        Ok(Connector {
            dst,
            sni: server_name,
            tls: if h2 {
                self.tls_h2.clone()
            } else {
                self.tls_h1.clone()
            },
            mark: self.mark,
            timeout: self.connect_timeout,
        })
    }

    /// The client TLS configuration (system roots + extra roots), HTTP/1.1 ALPN.
    pub fn tls_h1(&self) -> Arc<ClientConfig> {
        self.tls_h1.clone()
    }

    /// A dedicated connection of its own (never pooled), HTTP/1.1 over TLS with the client's SNI
    /// and full verification: what a WebSocket session runs on.
    pub async fn connect_dedicated(
        &self,
        dst: OrigDstAddr,
        sni: &str,
    ) -> Result<TlsStream<TcpStream>, SendError> {
        let connector = self
            .connector(dst, sni, false)
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        connector
            .connect_tls()
            .await
            .map_err(|e| classify_error(e.as_ref()))
    }

    /// The h2 connection slot for (dst, SNI).
    fn h2_slot(&self, dst: OrigDstAddr, sni: &str) -> Arc<H2Slot> {
        let key = Key {
            dst: dst.0,
            sni: sni.to_string(),
            h2: true,
            worker: crate::workers::current(),
        };
        let mut slots = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX_CLIENTS && !slots.contains_key(&key) {
            slots.clear();
        }
        slots.entry(key).or_default().clone()
    }

    fn client(
        &self,
        dst: OrigDstAddr,
        sni: &str,
        h2: bool,
    ) -> Result<Client<Connector, ReqBody>, PoolError> {
        let key = Key {
            dst: dst.0,
            sni: sni.to_string(),
            h2,
            worker: crate::workers::current(),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let connector = self.connector(dst, sni, h2)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle)
            .pool_max_idle_per_host(64)
            .set_host(false)
            .build(connector);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Send `req` (absolute URI) to `dst`, presenting `sni`: over h2 when the client spoke h2
    /// and the provider agrees, HTTP/1.1 otherwise.
    pub async fn send(
        &self,
        dst: OrigDstAddr,
        sni: &str,
        h2: bool,
        mut req: http::Request<ReqBody>,
    ) -> Result<http::Response<RespBody>, SendError> {
        let unavailable = |e: PoolError| SendError::Unavailable(e.to_string());
        if h2 {
            let connector = self.connector(dst, sni, true).map_err(unavailable)?;
            match self.h2_slot(dst, sni).send(&connector, req).await? {
                Sent::Response(resp) => return Ok(resp),
                Sent::NotH2(back) => req = back,
            }
        }
        let client = self.client(dst, sni, false).map_err(unavailable)?;
        let resp = client.request(req).await.map_err(|e| classify_error(&e))?;
        Ok(resp.map(|b: Incoming| b.map_err(|e| Box::new(e) as BoxError).boxed()))
    }
}

/// Find our own connect error (or rustls's certificate error) in an error's sources.
pub(super) fn classify_error(e: &(dyn std::error::Error + 'static)) -> SendError {
    let mut cur = Some(e);
    let mut text = e.to_string();
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = tls {
            return SendError::Certificate(tls.to_string());
        }
        if err.downcast_ref::<UpstreamError>().is_some() {
            text = err.to_string();
        }
        cur = err.source();
    }
    SendError::Unavailable(text)
}

#[derive(Clone)]
pub struct Connector {
    dst: OrigDstAddr,
    sni: ServerName<'static>,
    tls: Arc<ClientConfig>,
    mark: u32,
    timeout: Duration,
}

impl Connector {
    /// TCP with the bypass mark, then TLS with the client's SNI and full verification.
    pub(super) async fn connect_tls(&self) -> Result<TlsStream<TcpStream>, BoxError> {
        let tcp = connect(self.dst, self.mark, self.timeout).await?;
        Ok(tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.sni.clone(), tcp)
            .await?)
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = this.connect_tls().await?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(UpstreamIo {
                inner: TokioIo::new(tls),
                h2,
            })
        })
    }
}

pub struct UpstreamIo {
    inner: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}
