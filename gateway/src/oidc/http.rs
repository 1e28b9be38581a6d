//! The few HTTPS calls OIDC needs (discovery, JWKS, token and device endpoints): HTTP/1.1 over
//! verified TLS (system roots plus `oidc.ca_file`), bounded answers, a timeout. The daemon's
//! sockets carry the bypass mark (the issuer may sit behind an address the programs redirect);
//! the CLI's do not need it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};

use super::OidcConfig;
use crate::redirect::origdst::OrigDstAddr;

/// The largest answer read from the issuer.
const MAX_ANSWER: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// An `https://host[:port]/path[?query]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub query: Option<String>,
}

impl Url {
    pub fn parse(s: &str) -> Result<Self, String> {
        let u: http::Uri = s
            .parse()
            .map_err(|e| format!("`{}` is not a URL ({e})", super::printable(s)))?;
        if u.scheme_str() != Some("https") {
            return Err(format!(
                "`{}` must be an https:// URL (tokens and keys only over verified TLS)",
                super::printable(s)
            ));
        }
        let host = u
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{}` has no host", super::printable(s)))?;
        if u.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!(
                "`{}` must not carry user info",
                super::printable(s)
            ));
        }
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_string(),
            port: u.port_u16().unwrap_or(443),
            path: u.path().to_string(),
            query: u.query().map(String::from),
        })
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// `application/x-www-form-urlencoded` / query component encoding.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decode a query string (`a=b&c=d`, `+` as space).
pub fn form_decode(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// HTTPS to the issuer.
#[derive(Clone)]
pub struct Client {
    tls: Arc<ClientConfig>,
    /// The bypass mark for the daemon's sockets; `None` in the CLI.
    mark: Option<u32>,
}

impl Client {
    /// Trusting the system roots and `oidc.ca_file`.
    pub fn new(cfg: &OidcConfig, mark: Option<u32>) -> Result<Self, String> {
        let extra: Vec<_> = cfg.ca_file.iter().cloned().collect();
        let roots = crate::upstream::pool::root_store(&extra).map_err(|e| e.to_string())?;
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            mark,
        })
    }

    pub async fn get(&self, url: &Url) -> Result<(u16, Bytes), String> {
        self.call(url, None, None).await
    }

    /// POST a form; `basic`: client id and secret for HTTP Basic (a confidential client).
    pub async fn post_form(
        &self,
        url: &Url,
        form: &str,
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, Bytes), String> {
        self.call(url, Some(form), basic).await
    }

    async fn call(
        &self,
        url: &Url,
        form: Option<&str>,
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, Bytes), String> {
        tokio::time::timeout(TIMEOUT, self.call_inner(url, form, basic))
            .await
            .map_err(|_| format!("{} did not answer within {TIMEOUT:?}", url.authority()))?
    }

    async fn call_inner(
        &self,
        url: &Url,
        form: Option<&str>,
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, Bytes), String> {
        let at = url.authority();
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("{at} could not be resolved ({e})"))?
            .next()
            .ok_or_else(|| format!("{at} has no address"))?;
        let tcp = match self.mark {
            Some(mark) => crate::upstream::connect(OrigDstAddr(addr), mark, TIMEOUT)
                .await
                .map_err(|e| format!("{at} could not be reached ({e})"))?,
            None => tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("{at} could not be reached ({e})"))?,
        };
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| format!("`{}` is not a TLS server name", url.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {at} failed ({e})"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with {at} failed ({e})"))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(if form.is_some() { "POST" } else { "GET" })
            .uri(url.target())
            .header(http::header::HOST, at.as_str())
            .header(http::header::ACCEPT, "application/json");
        if form.is_some() {
            req = req.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        if let Some((id, secret)) = basic {
            use base64::Engine as _;
            let enc = form_encode(&[("a", id), ("b", secret)]);
            // RFC 6749 §2.3.1: id and secret form-encoded, then joined by a colon.
            let mut parts = enc
                .split('&')
                .map(|p| p.split_once('=').map(|x| x.1).unwrap_or(""));
            let pair = format!(
                "{}:{}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            );
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            let mut hv = http::HeaderValue::try_from(v).map_err(|e| e.to_string())?;
            hv.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, hv);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(
                form.unwrap_or("").as_bytes(),
            )))
            .map_err(|e| format!("request could not be built ({e})"))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP with {at} failed ({e})"))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{at} sent an unreadable answer ({e})"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// 32 random bytes, base64url: state, nonce, PKCE code verifiers (and the web page's session
/// ids and CSRF tokens).
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The PKCE S256 challenge of a code verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}
