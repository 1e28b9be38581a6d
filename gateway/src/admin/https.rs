//! The admin API over HTTPS (`[admin] https = "ADDR:PORT"`): the same routes and JSON as the
//! Unix socket ([`super::handle`]), for approvers elsewhere on the network. There are no peer
//! credentials here: every request but `/v1/health` carries `Authorization: Bearer ID_TOKEN`
//! (what `gateway login` keeps), verified against the `[oidc]` issuer; what the identity may
//! do is decided by the same [`crate::hold::authorize`] as on the socket. A missing or
//! refused token is a 401 with the reason; the token itself is never logged.
//!
//! Off unless configured. The certificate comes from the gateway's CA, for `[admin] names`.

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{Admin, AdminBody, AdminError};
use crate::tls::issuing::IssuingHandle;

/// `[admin]` in the config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API over HTTPS here too (bearer ID tokens only). Off when absent.
    pub https: Option<SocketAddr>,
    /// Names (DNS names or IP addresses) the HTTPS certificate is for; default: the listen
    /// address's IP and `localhost`.
    pub names: Vec<String>,
}

impl AdminConfig {
    pub fn validate(&self, oidc_configured: bool) -> Result<(), (String, String)> {
        if self.https.is_none() {
            return Ok(());
        }
        check_listener(
            "admin.https",
            self.https,
            oidc_configured,
            "needs [oidc] (issuer, client_id): the HTTPS admin API accepts only ID tokens",
        )?;
        check_names("admin.names", &self.names)
    }

    /// The certificate's names.
    pub fn cert_names(&self) -> Vec<String> {
        cert_names(&self.names, self.https)
    }
}

/// The names of a listener's certificate: the configured ones, or its IP and `localhost`.
pub fn cert_names(names: &[String], addr: Option<SocketAddr>) -> Vec<String> {
    if !names.is_empty() {
        return names.to_vec();
    }
    let mut v = vec!["localhost".to_string()];
    if let Some(a) = addr {
        v.push(a.ip().to_string());
    }
    v
}

/// An HTTPS listener that signs people in (`key` = ADDR:PORT, when set): a real port, and
/// `[oidc]` configured (`without_oidc` says why it is needed).
pub fn check_listener(
    key: &str,
    addr: Option<SocketAddr>,
    oidc_configured: bool,
    without_oidc: &str,
) -> Result<(), (String, String)> {
    let Some(addr) = addr else {
        return Ok(());
    };
    if addr.port() == 0 {
        return Err((key.into(), "needs a non-zero port".into()));
    }
    if !oidc_configured {
        return Err((key.into(), without_oidc.into()));
    }
    Ok(())
}

/// Each name is a DNS name or an IP address.
pub fn check_names(key: &str, names: &[String]) -> Result<(), (String, String)> {
    for (i, n) in names.iter().enumerate() {
        let dns_ok = !n.is_empty()
            && n.len() <= 253
            && n.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !dns_ok && n.parse::<std::net::IpAddr>().is_err() {
            return Err((
                format!("{key}[{i}]"),
                format!("`{n}` is neither a DNS name nor an IP address"),
            ));
        }
    }
    Ok(())
}

/// Listen on `addr` and serve the admin API there in the background.
pub async fn serve(
    addr: SocketAddr,
    names: Vec<String>,
    ca: IssuingHandle,
    admin: Arc<Admin>,
) -> Result<(), AdminError> {
    let bad = |e: String| AdminError::Https { addr, reason: e };
    let cert = Arc::new(
        crate::tls::listener::ListenerCert::new(ca, &names).map_err(|e| bad(e.to_string()))?,
    );
    let tls = cert.server_config().map_err(|e| bad(e.to_string()))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bad(e.to_string()))?;
    info!(%addr, ?names, "admin API ready over HTTPS (bearer ID tokens)");
    crate::tls::listener::spawn(listener, tls, "admin-https", move |req, peer| {
        let admin = admin.clone();
        async move { handle(req, peer, &admin).await }
    });
    Ok(())
}

async fn handle(req: Request<Incoming>, peer: SocketAddr, admin: &Admin) -> Response<AdminBody> {
    // No peer credentials over the network: the caller is its bearer token or nobody.
    let r = super::handle(req, admin, None).await;
    if r.status() == StatusCode::UNAUTHORIZED {
        warn!(%peer, "admin HTTPS request without a valid ID token refused");
    }
    r
}
