//! A small HTTP/1.1 POST client for the HTTP sinks (HEC, OTLP): one kept-alive connection,
//! TLS with the system roots plus the entry's `ca_file`, full certificate verification. Errors
//! name the URL and the cause, never a header (the HEC token is one).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub struct Poster {
    url: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `Authorization` (sensitive) and friends.
    headers: Vec<(http::HeaderName, HeaderValue)>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

/// What the sink answered.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

impl Poster {
    pub fn new(
        url: Uri,
        ca_file: Option<&std::path::Path>,
        headers: Vec<(http::HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let https = url.scheme_str() == Some("https");
        let host = url
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let extra: Vec<std::path::PathBuf> = ca_file.iter().map(|p| p.to_path_buf()).collect();
            let roots = crate::upstream::pool::root_store(&extra).map_err(|e| e.to_string())?;
            let mut c = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(c))
        } else {
            None
        };
        Ok(Self {
            url,
            host,
            port,
            tls,
            headers,
            timeout,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(tx)
            }
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name {:?}: {e}", self.host))?;
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
                tokio::spawn(conn);
                Ok(tx)
            }
        }
    }

    /// POST `body`; an answer of any status is `Ok` (the caller decides), a transport failure
    /// or a timeout `Err`.
    pub async fn post(
        &mut self,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<Answer, String> {
        let r = tokio::time::timeout(self.timeout, self.try_post(body, content_type)).await;
        match r {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("{}: {e}", self.url))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("{}: no answer within {:?}", self.url, self.timeout))
            }
        }
    }

    async fn try_post(
        &mut self,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<Answer, String> {
        let mut tx = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        tx.ready().await.map_err(|e| format!("connection: {e}"))?;
        let authority = match self.url.port_u16() {
            Some(p) => format!("{}:{p}", self.url.host().unwrap_or("")),
            None => self.url.host().unwrap_or("").to_string(),
        };
        let path = self.url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?
            .to_bytes();
        self.conn = Some(tx);
        Ok(Answer { status, body })
    }
}
