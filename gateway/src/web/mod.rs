//! The approval web page (`[web] listen = "ADDR:PORT"`, HTTPS): approvers sign in with the
//! organisation's identity provider and approve or deny held requests, with a reason.
//!
//! Not on the data path: a shared service beside the admin API. It reads the pending holds and
//! hands decisions to the hold stage ([`approvals`]); who may do what is the one
//! [`crate::hold::authorize`] decision, the same as for the admin API and the CLI. Each decision
//! reaches the held request's journal record with who made it and why (`approval.by`,
//! `approval.reason`).
//!
//! - [`signin`]: OIDC authorization code + PKCE as a confidential web client.
//! - [`session`]: sign-ins in progress and sessions (random ids in cookies, state server-side).
//! - [`routes`]: the pages and forms; CSRF (per-session token, `SameSite=Strict`, Origin check).
//! - [`page`]: the HTML, everything escaped, no script.
//!
//! Off unless configured.

pub mod approvals;
pub mod page;
pub mod routes;
pub mod session;
pub mod signin;

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

/// `[web]` in the config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the approval page (HTTPS) here. Off when absent.
    pub listen: Option<SocketAddr>,
    /// Names (DNS names or IP addresses) the page's certificate is for; default: the listen
    /// address's IP and `localhost`.
    pub names: Vec<String>,
    /// The page's OAuth client at the `[oidc]` issuer (a confidential web client).
    pub client_id: String,
    /// The environment variable holding that client's secret (none: a public client, PKCE
    /// only).
    pub client_secret_env: Option<String>,
    /// Where the identity provider sends the browser back: `https://HOST:PORT/callback`, as
    /// registered for the client. Its origin is the page's origin (the Origin check of every
    /// form).
    pub redirect_uri: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("approval page on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("web.client_secret_env: the environment variable {0} is not set")]
    Secret(String),
    #[error("{0}")]
    Oidc(String),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

/// Start what is configured of the HTTPS admin API (`[admin] https`) and the approval page
/// (`[web] listen`); both need `[oidc]` (checked by the config's validation).
pub async fn start(
    cfg: &crate::config::Config,
    admin: Arc<crate::admin::Admin>,
    ca: crate::tls::issuing::IssuingHandle,
) -> Result<(), WebError> {
    if let Some(addr) = cfg.admin.https {
        crate::admin::https::serve(addr, cfg.admin.cert_names(), ca.clone(), admin.clone()).await?;
    }
    let (Some(_), Some(oidc)) = (cfg.web.listen, &cfg.oidc) else {
        return Ok(());
    };
    // The page's ID tokens are issued to its own client: that is their audience.
    let page_oidc = crate::oidc::OidcConfig {
        audience: vec![cfg.web.client_id.clone()],
        ..oidc.clone()
    };
    let verifier = Arc::new(
        crate::oidc::Verifier::new(&page_oidc, Some(cfg.redirect.bypass_mark))
            .map_err(|e| WebError::Oidc(e.to_string()))?,
    );
    let approvals = approvals::Approvals {
        fleet: admin.fleet.clone(),
    };
    let web = Arc::new(routes::Web::new(cfg.web.clone(), verifier, approvals)?);
    serve(web, ca).await
}

impl WebConfig {
    pub fn validate(&self, oidc_configured: bool) -> Result<(), (String, String)> {
        let Some(addr) = self.listen else {
            return Ok(());
        };
        crate::admin::https::check_listener(
            "web.listen",
            self.listen,
            oidc_configured,
            "needs [oidc] (issuer): approvers sign in with it",
        )?;
        if self.client_id.is_empty() {
            return Err((
                "web.client_id".into(),
                "the page's OAuth client id at the [oidc] issuer is required".into(),
            ));
        }
        if self.origin().is_none() || !self.redirect_uri.ends_with("/callback") {
            return Err((
                "web.redirect_uri".into(),
                format!(
                    "must be an https:// URL ending in /callback, e.g. https://{addr}/callback \
                     (got `{}`)",
                    self.redirect_uri
                ),
            ));
        }
        if let Some(v) = &self.client_secret_env
            && v.is_empty()
        {
            return Err(("web.client_secret_env".into(), "empty name".into()));
        }
        crate::admin::https::check_names("web.names", &self.names)
    }

    /// `https://host[:port]` of `redirect_uri`.
    pub fn origin(&self) -> Option<String> {
        let rest = self.redirect_uri.strip_prefix("https://")?;
        let authority = rest.split('/').next()?;
        (!authority.is_empty() && !authority.contains('@'))
            .then(|| format!("https://{}", authority.to_ascii_lowercase()))
    }
}

/// Listen and serve the page in the background.
pub async fn serve(
    web: Arc<routes::Web>,
    ca: crate::tls::issuing::IssuingHandle,
) -> Result<(), WebError> {
    let addr = web
        .cfg
        .listen
        .expect("serve is called only when configured");
    let bad = |reason: String| WebError::Listen { addr, reason };
    let names = crate::admin::https::cert_names(&web.cfg.names, web.cfg.listen);
    let cert = Arc::new(
        crate::tls::listener::ListenerCert::new(ca, &names).map_err(|e| bad(e.to_string()))?,
    );
    let tls = cert.server_config().map_err(|e| bad(e.to_string()))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bad(e.to_string()))?;
    info!(%addr, ?names, origin = %web.origin, "approval page ready");
    crate::tls::listener::spawn(listener, tls, "web", move |req, peer| {
        let web = web.clone();
        async move { web.handle(req, peer).await }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_needs_oidc_a_client_and_an_https_callback() {
        let mut c = WebConfig::default();
        assert!(c.validate(false).is_ok(), "off: nothing to check");
        c.listen = Some("127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.validate(false).unwrap_err().0, "web.listen");
        assert_eq!(c.validate(true).unwrap_err().0, "web.client_id");
        c.client_id = "web".into();
        c.redirect_uri = "http://127.0.0.1:8443/callback".into();
        assert_eq!(c.validate(true).unwrap_err().0, "web.redirect_uri");
        c.redirect_uri = "https://Approvals.example:8443/callback".into();
        assert!(c.validate(true).is_ok());
        assert_eq!(
            c.origin().as_deref(),
            Some("https://approvals.example:8443")
        );
        c.names = vec!["bad name".into()];
        assert_eq!(c.validate(true).unwrap_err().0, "web.names[0]");
    }
}
