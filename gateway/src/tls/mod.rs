//! TLS: terminate a provider connection with a leaf minted for its SNI (DESIGN §1, §5).
//!
//! The ClientHello was already read by the intercept stage; it is replayed into rustls through
//! [`PrefixedStream`], so the handshake sees the exact bytes the client sent.

pub mod ca;
pub mod leaf;
pub mod listener;

use std::{
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("CA key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("CA: {0}")]
    Ca(String),
    #[error("minting a certificate for {0}: {1}")]
    Mint(String, String),
    #[error("TLS handshake with the client: {0}")]
    Handshake(io::Error),
}

/// The rustls crypto provider used everywhere (ring: no C toolchain beyond cc needed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Bytes already read from `inner`, served again before `inner`'s own.
pub struct PrefixedStream<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> PrefixedStream<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The terminating side: CA + leaves.
pub struct Terminator {
    pub ca: Arc<ca::Ca>,
    pub leaves: leaf::LeafCache,
}

impl Terminator {
    pub fn new(ca: Arc<ca::Ca>, cap: usize) -> Result<Self, TlsError> {
        let leaves = leaf::LeafCache::new(ca.clone(), provider(), cap)?;
        Ok(Self { ca, leaves })
    }

    /// Complete the handshake over `stream` (whose ClientHello is in `prefix`) as `sni`.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        sni: &str,
        prefix: Vec<u8>,
        stream: S,
    ) -> Result<tokio_rustls::server::TlsStream<PrefixedStream<S>>, TlsError> {
        let cfg = self.leaves.server_config(sni).await?;
        tokio_rustls::TlsAcceptor::from(cfg)
            .accept(PrefixedStream::new(prefix, stream))
            .await
            .map_err(TlsError::Handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn prefixed_stream_replays_then_reads_through() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"world").await.unwrap();
        drop(a);
        let mut p = PrefixedStream::new(b"hello ".to_vec(), b);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    /// A real handshake: the leaf for the SNI chains to the CA, has the name, EKU serverAuth,
    /// a short life, and ALPN h2 is offered.
    #[tokio::test]
    async fn handshake_with_a_minted_leaf_verifies_against_the_ca() {
        let d = tempfile::tempdir().unwrap();
        let (ca, _) = ca::Ca::load_or_create(d.path()).unwrap();
        let t = Arc::new(Terminator::new(Arc::new(ca), 16).unwrap());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(t.ca.cert_der.clone()).unwrap();
        let mut ccfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ccfg.alpn_protocols = vec![b"h2".to_vec()];
        let (c, s) = tokio::io::duplex(1 << 16);
        let t2 = t.clone();
        let server = tokio::spawn(async move {
            let mut tls = t2.accept("api.openai.com", Vec::new(), s).await.unwrap();
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.unwrap();
            tls.write_all(&b).await.unwrap();
            tls.flush().await.unwrap();
        });
        let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(ccfg))
            .connect(name, c)
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let leaf = conn.peer_certificates().unwrap()[0].clone();
        let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert!(life <= 10 * 86_400, "short-lived leaf: {life}s");
        assert!(
            x.validity().not_before.timestamp()
                < time::OffsetDateTime::now_utc().unix_timestamp() - 86_400
        );
        let eku = x.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let san = x.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"api.openai.com\")]"
        );
        assert!(x.tbs_certificate.serial.bits() > 64, "random serial");
        server.await.unwrap();
    }
}
