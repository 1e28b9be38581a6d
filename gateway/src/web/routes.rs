//! The approval page's routes.
//!
//! | route            | what                                                              |
//! |------------------|-------------------------------------------------------------------|
//! | `GET /`          | signed in: the pending holds; else the sign-in link               |
//! | `GET /login`     | start a sign-in: to the identity provider (state, nonce, PKCE)    |
//! | `GET /callback`  | back from it: code → verified ID token → session                  |
//! | `POST /decide`   | approve or deny a hold (`csrf`, `hold`, `verdict`, `reason`)      |
//! | `POST /logout`   | end the session (`csrf`)                                          |
//! | `GET /style.css` | the style sheet                                                   |
//!
//! No GET changes a hold. Every POST needs the session cookie (`SameSite=Strict`), the
//! session's CSRF token in the form, and an `Origin` header equal to the page's origin (a
//! `Sec-Fetch-Site` other than `same-origin` is refused too); any of them missing is a 403
//! and a log line. Every answer carries a strict content security policy (no script at all),
//! `nosniff`, no referrer, no caching, no framing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tracing::{info, warn};

use super::{
    WebConfig,
    approvals::{Approvals, DecideError, Verdict},
    page,
    session::{self, LOGIN_COOKIE, LOGIN_TTL, Login, SESSION_COOKIE, Store},
    signin::{self, WebClient},
};
use crate::{
    hold::Principal,
    oidc::{Verifier, http::form_decode},
};

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The largest form body read.
const MAX_FORM: usize = 16 << 10;
/// The longest reason kept (characters).
const MAX_REASON: usize = 500;

type Body = Full<Bytes>;

/// The page's state.
pub struct Web {
    pub cfg: WebConfig,
    /// `https://host[:port]` of the redirect URI: what every POST's Origin must be.
    pub origin: String,
    pub client: WebClient,
    /// Discovery, the token endpoint's client, and ID-token checks with the page's client id
    /// as the audience.
    pub verifier: Arc<Verifier>,
    pub sessions: Store,
    pub approvals: Approvals,
}

impl Web {
    /// The page for `cfg` (which `validate` accepted); the client secret is read from its
    /// environment variable now.
    pub fn new(
        cfg: WebConfig,
        verifier: Arc<Verifier>,
        approvals: Approvals,
    ) -> Result<Self, super::WebError> {
        let secret = match &cfg.client_secret_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| super::WebError::Secret(var.clone()))?,
            ),
            None => None,
        };
        Ok(Self {
            origin: cfg.origin().unwrap_or_default(),
            client: WebClient {
                id: cfg.client_id.clone(),
                secret,
                redirect_uri: cfg.redirect_uri.clone(),
                scopes: verifier
                    .config()
                    .scopes
                    .iter()
                    .filter(|s| *s != "offline_access")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            cfg,
            verifier,
            sessions: Store::default(),
            approvals,
        })
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let r = match (&method, path.as_str()) {
            (&Method::GET, "/") => self.index(&req),
            (&Method::GET, "/style.css") => {
                let mut r = html(StatusCode::OK, page::STYLE.to_string());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                );
                r
            }
            (&Method::GET, "/login") => self.login().await,
            (&Method::GET, "/callback") => self.callback(&req, peer).await,
            (&Method::POST, "/decide" | "/logout") => self.post(req, peer, &path).await,
            (_, "/" | "/login" | "/callback" | "/decide" | "/logout" | "/style.css") => {
                let mut r = html(
                    StatusCode::METHOD_NOT_ALLOWED,
                    page::message("Not allowed", "This method is not allowed here.", None),
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static(if path == "/decide" || path == "/logout" {
                        "POST"
                    } else {
                        "GET"
                    }),
                );
                r
            }
            _ => html(
                StatusCode::NOT_FOUND,
                page::message("Not found", "There is no such page.", None),
            ),
        };
        secure(r)
    }

    /// The session of a request, with its id.
    fn session(&self, req: &Request<Incoming>) -> Option<(String, session::Session)> {
        let id = session::cookie(req.headers(), SESSION_COOKIE)?;
        let s = self.sessions.get(&id)?;
        Some((id, s))
    }

    fn index(&self, req: &Request<Incoming>) -> Response<Body> {
        let Some((id, s)) = self.session(req) else {
            return html(StatusCode::OK, page::signin(None));
        };
        let name = s.principal.label();
        match self.approvals.pending(&s.principal) {
            Ok(rows) => {
                let notice = self.sessions.take_notice(&id);
                html(
                    StatusCode::OK,
                    page::holds(&name, &s.csrf, &rows, notice.as_deref()),
                )
            }
            Err(e) => {
                warn!(who = %name, reason = %e, "approval page refused: not an approver");
                html(
                    StatusCode::FORBIDDEN,
                    page::message(
                        "Not an approver",
                        &format!("You are signed in, but may not see or decide held requests: {e}"),
                        Some((&name, &s.csrf)),
                    ),
                )
            }
        }
    }

    async fn login(&self) -> Response<Body> {
        let login = Login {
            state: signin::random_token(),
            nonce: signin::random_token(),
            verifier: signin::random_token(),
            until: std::time::Instant::now() + LOGIN_TTL,
        };
        let url = match signin::authorization_url(
            &self.verifier,
            &self.client,
            &login.state,
            &login.nonce,
            &login.verifier,
        )
        .await
        {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "sign-in: the identity provider cannot be used");
                return html(StatusCode::BAD_GATEWAY, page::signin(Some(&e.to_string())));
            }
        };
        let id = self.sessions.begin(login);
        let mut r = html(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = HeaderValue::from_str(&url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        set_cookie(
            &mut r,
            &format!(
                "{LOGIN_COOKIE}={id}; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
                LOGIN_TTL.as_secs()
            ),
        );
        r
    }

    async fn callback(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let q = form_decode(req.uri().query().unwrap_or(""));
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let refuse = |status: StatusCode, why: String| {
            warn!(%peer, reason = %why, "sign-in refused");
            let mut r = html(status, page::signin(Some(&why)));
            clear_cookie(&mut r, LOGIN_COOKIE);
            r
        };
        // The sign-in must be this browser's: the state bound to its login cookie.
        let Some(login) = session::cookie(req.headers(), LOGIN_COOKIE)
            .and_then(|id| self.sessions.take_login(&id))
        else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Sign-in failed: no sign-in of this browser is in progress (or it expired); \
                 sign in again."
                    .into(),
            );
        };
        if !get("state").is_some_and(|s| session::same(&s, &login.state)) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Sign-in failed: the answer's state is not this sign-in's.".into(),
            );
        }
        if let Some(e) = get("error") {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "The identity provider refused the sign-in: {e} {}",
                    get("error_description").unwrap_or_default()
                ),
            );
        }
        let Some(code) = get("code") else {
            return refuse(StatusCode::BAD_REQUEST, "Sign-in failed: no code.".into());
        };
        let token = match signin::redeem(&self.verifier, &self.client, &code, &login.verifier).await
        {
            Ok(t) => t,
            Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("Sign-in failed: {e}")),
        };
        let principal = match self.verifier.verify_nonce(&token, Some(&login.nonce)).await {
            Ok(p) => p,
            Err(e) => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("Sign-in failed: the ID token was refused: {e}"),
                );
            }
        };
        let ttl = match &principal {
            Principal::Oidc { expires, .. } => expires.saturating_sub(crate::hold::now()),
            Principal::Local { .. } => 0,
        };
        if ttl == 0 {
            return refuse(
                StatusCode::FORBIDDEN,
                "Sign-in failed: the ID token has expired.".into(),
            );
        }
        let name = principal.label();
        let (id, _) = self.sessions.open(principal, Duration::from_secs(ttl));
        info!(who = %name, %peer, expires_in = ttl, "approver signed in to the approval page");
        let mut r = html(StatusCode::OK, page::signed_in(&name));
        clear_cookie(&mut r, LOGIN_COOKIE);
        set_cookie(
            &mut r,
            &format!(
                "{SESSION_COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={ttl}"
            ),
        );
        r
    }

    /// Every POST: same origin, a session, its CSRF token; then the action.
    async fn post(&self, req: Request<Incoming>, peer: SocketAddr, path: &str) -> Response<Body> {
        let forbidden = |why: &str| {
            warn!(%peer, %path, reason = why, "approval page POST refused");
            html(
                StatusCode::FORBIDDEN,
                page::message("Refused", &format!("Refused: {why}."), None),
            )
        };
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_ascii_lowercase());
        if origin.as_deref() != Some(self.origin.as_str()) {
            return forbidden("the form was not sent from this page (Origin check)");
        }
        if let Some(site) = req.headers().get("sec-fetch-site")
            && site.as_bytes() != b"same-origin"
        {
            return forbidden("the form was not sent from this page (Sec-Fetch-Site)");
        }
        let Some((sid, s)) = self.session(&req) else {
            return forbidden("not signed in (or the session expired)");
        };
        let body = match Limited::new(req.into_body(), MAX_FORM).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return forbidden("the form is too large"),
        };
        let form = form_decode(&String::from_utf8_lossy(&body));
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if !field("csrf").is_some_and(|t| session::same(t, &s.csrf)) {
            return forbidden("the form's anti-forgery token is missing or wrong");
        }
        let name = s.principal.label();
        if path == "/logout" {
            self.sessions.close(&sid);
            info!(who = %name, "approver signed out of the approval page");
            let mut r = html(StatusCode::OK, page::signin(None));
            clear_cookie(&mut r, SESSION_COOKIE);
            return r;
        }
        let (Some(hold), Some(verdict)) = (field("hold"), field("verdict")) else {
            return html(
                StatusCode::BAD_REQUEST,
                page::message("Bad form", "The form names no hold or verdict.", None),
            );
        };
        let verdict = match verdict {
            "approve" => Verdict::Approve,
            "deny" => Verdict::Deny,
            _ => {
                return html(
                    StatusCode::BAD_REQUEST,
                    page::message("Bad form", "The verdict is approve or deny.", None),
                );
            }
        };
        let reason = field("reason")
            .map(|r| crate::hold::printable(&r.chars().take(MAX_REASON).collect::<String>(), false))
            .filter(|r| !r.trim().is_empty());
        match self
            .approvals
            .decide(hold, verdict, reason.clone(), &s.principal)
        {
            Ok(by) => {
                let verb = if verdict == Verdict::Approve {
                    "approved"
                } else {
                    "denied"
                };
                info!(hold, %by, decision = verb, reason = reason.as_deref().unwrap_or(""), via = "web", "hold decided");
                self.sessions
                    .set_notice(&sid, format!("Request {hold} {verb}."));
                let mut r = html(StatusCode::SEE_OTHER, String::new());
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                r
            }
            Err(e) => {
                let status = match e {
                    DecideError::Forbidden(_) => StatusCode::FORBIDDEN,
                    DecideError::Gone(_) => StatusCode::NOT_FOUND,
                    DecideError::BadId(_) => StatusCode::BAD_REQUEST,
                };
                warn!(hold, who = %name, reason = %e, "approval page decision refused");
                html(
                    status,
                    page::message("Not decided", &e.to_string(), Some((&name, &s.csrf))),
                )
            }
        }
    }
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn set_cookie(r: &mut Response<Body>, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookie(r: &mut Response<Body>, name: &str) {
    set_cookie(
        r,
        &format!("{name}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
}

/// The headers every answer carries.
fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    r
}
