//! Fake upstream servers on loopback: real TLS (rustls) with a CA and leaf minted at test time.
//!
//! Protocol after the handshake: a request starting with `GET ` gets an HTTP/1.1 200 whose body
//! names the SNI it was reached by; `ECHO <n>\n` gets the next n bytes echoed back. Every TCP
//! connection is recorded (peer address) before TLS, so a test can tell whether anything
//! reached the server and from which port.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
};

/// A CA and a leaf for some names, PEM on disk for clients.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    /// The leaf (for all names) and its key as PEM files, for servers other than ours (nginx).
    pub leaf_pem: PathBuf,
    pub key_pem: PathBuf,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestPki {
    pub fn new(names: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gateway test upstream CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let dir = tempfile::Builder::new()
            .prefix("gw-pki-")
            .tempdir()
            .expect("tempdir");
        // Readable by unprivileged test clients.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca");
        std::fs::set_permissions(&ca_pem, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let leaf_pem = dir.path().join("leaf.pem");
        let key_pem = dir.path().join("leaf-key.pem");
        std::fs::write(&leaf_pem, leaf.pem()).expect("write leaf");
        std::fs::write(&key_pem, leaf_key.serialize_pem()).expect("write key");
        for p in [&leaf_pem, &key_pem] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        }
        Self {
            dir,
            ca_pem,
            leaf_pem,
            key_pem,
            leaf: leaf.der().clone(),
            key: leaf_key.serialize_der(),
        }
    }

    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.leaf.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .expect("server cert");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg
    }
}

/// What every fake TLS server starts from: its own one-thread runtime (alive as long as the
/// fake), a listener bound on `addr`, and an acceptor presenting the test leaf with `alpn`.
pub fn tls_server(
    what: &str,
    addr: SocketAddr,
    pki: &TestPki,
    alpn: &[&[u8]],
) -> (
    tokio::runtime::Runtime,
    TcpListener,
    tokio_rustls::TlsAcceptor,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("{what} cannot bind {addr}: {e}"));
    let mut cfg = pki.server_config();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (rt, listener, tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// A TLS server on `addr`, running on its own runtime thread until dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    heads: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeServer {
    pub fn start(addr: SocketAddr, pki: &TestPki) -> Self {
        let (rt, listener, acceptor) = tls_server("fake server", addr, pki, &[b"http/1.1"]);
        let peers = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let p = peers.clone();
        let hs = heads.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                p.lock().unwrap().push(peer);
                let acceptor = acceptor.clone();
                let hs = hs.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                    let mut r = BufReader::new(tls);
                    let mut line = String::new();
                    if r.read_line(&mut line).await.is_err() {
                        return;
                    }
                    if let Some(n) = line.strip_prefix("ECHO ") {
                        let n: usize = n.trim().parse().unwrap_or(0);
                        let mut buf = vec![0u8; n];
                        if r.read_exact(&mut buf).await.is_ok() {
                            let _ = r.get_mut().write_all(&buf).await;
                        }
                    } else {
                        // Read the request head, keep it for the test.
                        let mut head = line.clone();
                        loop {
                            let mut l = String::new();
                            match r.read_line(&mut l).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) if l == "\r\n" => break,
                                Ok(_) => head.push_str(&l),
                            }
                        }
                        hs.lock().unwrap().push(head);
                        let body = format!("hello from fake upstream via {sni}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = r.get_mut().write_all(resp.as_bytes()).await;
                    }
                    let _ = r.get_mut().shutdown().await;
                });
            }
        });
        Self {
            addr,
            peers,
            heads,
            _rt: rt,
        }
    }

    /// Request heads (request line + headers) of every GET received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Peer addresses of every TCP connection accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}
