//! `gateway login`, `logout`, `whoami`, and the ID token the CLI attaches to admin calls.
//!
//! - Authorization code + PKCE (S256, RFC 7636) with a loopback redirect listener on
//!   127.0.0.1 (ephemeral port, RFC 8252 §7.3); `state` and `nonce` checked. The browser is
//!   opened with `$BROWSER` or `xdg-open` (with a display); the URL is printed in any case.
//! - Device authorization grant (RFC 8628) with `--device`, or when no browser can be opened:
//!   the verification URI and user code are printed, the token endpoint polled every
//!   `interval` (`slow_down` adds 5 s; `authorization_pending` waits; `expired_token` and
//!   `access_denied` end it with their own message).
//! - The ID token is verified like the daemon does ([`super::Verifier`]) before it is kept;
//!   within a minute of its expiry it is refreshed with the refresh token.

use std::{io::Write as _, path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    OidcConfig, OidcError, Verifier,
    http::{Url, challenge, form_decode, form_encode, random_token},
    printable,
    tokens::{self, Tokens},
    unix_now,
};
use crate::hold::Principal;

/// An ID token this close to its expiry is refreshed before use.
pub const REFRESH_BEFORE: u64 = 60;
/// How long the loopback listener waits for the browser.
const BROWSER_WAIT: Duration = Duration::from_secs(300);
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `gateway login` flags.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    pub device: bool,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// The token file (default [`tokens::default_path`]).
    pub tokens: Option<PathBuf>,
}

/// The `[oidc]` the CLI uses: the config's, with `--issuer` / `--client-id` overriding.
pub fn effective(
    cfg: Option<&OidcConfig>,
    issuer: Option<&str>,
    client_id: Option<&str>,
) -> Result<OidcConfig, OidcError> {
    let mut c = match (cfg, issuer) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => OidcConfig::default(),
        (None, None) => return Err(OidcError::NotConfigured),
    };
    if let Some(i) = issuer {
        c.issuer = i.to_string();
    }
    if let Some(id) = client_id {
        c.client_id = id.to_string();
    }
    c.validate()
        .map_err(|(k, r)| OidcError::Login(format!("`{k}`: {r}")))?;
    Ok(c)
}

fn runtime() -> Result<tokio::runtime::Runtime, OidcError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OidcError::Login(format!("cannot start a runtime: {e}")))
}

fn client_secret(cfg: &OidcConfig) -> Result<Option<String>, OidcError> {
    match &cfg.client_secret_env {
        None => Ok(None),
        Some(var) => std::env::var(var).map(Some).map_err(|_| {
            OidcError::Login(format!(
                "oidc.client_secret_env names `{var}`, which is not set"
            ))
        }),
    }
}

/// POST a form to the token endpoint; the JSON answer, or the provider's `error` code and
/// description.
async fn token_call(
    v: &Verifier,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<Result<Value, (String, String)>, OidcError> {
    let cfg = v.config();
    let secret = client_secret(cfg)?;
    let url = Url::parse(endpoint).map_err(OidcError::Login)?;
    let client = v
        .client()
        .ok_or_else(|| OidcError::Login("no HTTP client".into()))?;
    let basic = secret.as_deref().map(|s| (cfg.client_id.as_str(), s));
    let mut pairs = form.to_vec();
    if basic.is_none() {
        pairs.push(("client_id", &cfg.client_id));
    }
    let (status, body) = client
        .post_form(&url, &form_encode(&pairs), basic)
        .await
        .map_err(OidcError::Login)?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == 200 {
        // A revocation answers 200 with an empty body.
        return Ok(Ok(if v.is_object() { v } else { Value::Null }));
    }
    let code = v["error"]
        .as_str()
        .map(printable)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let desc = v["error_description"]
        .as_str()
        .map(printable)
        .unwrap_or_default();
    Ok(Err((code, desc)))
}

/// Keep the token endpoint's answer, after verifying its ID token.
async fn keep(
    v: &Verifier,
    answer: &Value,
    nonce: Option<&str>,
    old_refresh: Option<String>,
    path: &std::path::Path,
) -> Result<Principal, OidcError> {
    let id_token = answer["id_token"].as_str().ok_or_else(|| {
        OidcError::Login(
            "the token endpoint sent no id_token (is `openid` among oidc.scopes?)".into(),
        )
    })?;
    let p = v.verify_nonce(id_token, nonce).await?;
    let expires = match &p {
        Principal::Oidc { expires, .. } => *expires,
        Principal::Local { .. } => 0,
    };
    let t = Tokens {
        issuer: v.config().issuer.clone(),
        client_id: v.config().client_id.clone(),
        id_token: id_token.to_string(),
        refresh_token: answer["refresh_token"]
            .as_str()
            .map(String::from)
            .or(old_refresh),
        expires,
    };
    tokens::save(path, &t)?;
    Ok(p)
}

/// `gateway login`: sign in and keep the tokens. What to tell the user.
pub fn login(cfg: &OidcConfig, o: &LoginOptions) -> Result<String, OidcError> {
    let path = match &o.tokens {
        Some(p) => p.clone(),
        None => tokens::default_path()?,
    };
    let v = Verifier::new(cfg, None)?;
    runtime()?.block_on(async {
        let d = v.discovery().await?;
        let browser = browser_command();
        let p = if o.device || browser.is_none() {
            if !o.device {
                eprintln!(
                    "No browser can be opened here (no DISPLAY or BROWSER): using the device flow."
                );
            }
            device_flow(&v, &d, &path).await?
        } else {
            code_flow(&v, &d, browser, &path).await?
        };
        Ok(format!(
            "Signed in. {}\nTokens kept in {}",
            describe(&p),
            path.display()
        ))
    })
}

fn describe(p: &Principal) -> String {
    match p {
        Principal::Oidc {
            issuer,
            subject,
            name,
            email,
            username,
            groups,
            expires,
        } => {
            let left = expires.saturating_sub(unix_now());
            format!(
                "subject: {subject}\nname: {}\nuser name: {}\ne-mail: {}\ngroups: {}\nissuer: {issuer}\nexpires: {expires} (in {left}s)",
                name.as_deref().unwrap_or("-"),
                username.as_deref().unwrap_or("-"),
                email.as_deref().unwrap_or("-"),
                if groups.is_empty() {
                    "-".to_string()
                } else {
                    groups.join(", ")
                },
            )
        }
        Principal::Local { name, uid, .. } => format!("local user {name} (uid {uid})"),
    }
}

/// The browser to open, if one can be: `$BROWSER`, or `xdg-open` with a display.
fn browser_command() -> Option<String> {
    if let Some(b) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        return Some(b);
    }
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    display.then(|| "xdg-open".to_string())
}

async fn code_flow(
    v: &Verifier,
    d: &super::verifier::Discovery,
    browser: Option<String>,
    path: &std::path::Path,
) -> Result<Principal, OidcError> {
    let cfg = v.config();
    let auth = d.authorization_endpoint.as_deref().ok_or_else(|| {
        OidcError::Login("the issuer has no authorization_endpoint: use --device".into())
    })?;
    let token_ep = d
        .token_endpoint
        .as_deref()
        .ok_or_else(|| OidcError::Login("the issuer has no token_endpoint".into()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| {
            OidcError::Login(format!("cannot listen on 127.0.0.1 for the redirect: {e}"))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| OidcError::Login(e.to_string()))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge = challenge(&verifier);
    let scope = cfg.scopes.join(" ");
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", cfg.client_id.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("scope", scope.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    // OpenID Connect Core §11: offline_access is honoured with prompt=consent.
    if cfg.scopes.iter().any(|s| s == "offline_access") {
        q.push(("prompt", "consent"));
    }
    let sep = if auth.contains('?') { '&' } else { '?' };
    let url = format!("{auth}{sep}{}", form_encode(&q));
    eprintln!("To sign in, open this URL in a browser:\n\n  {url}\n");
    let _ = std::io::stderr().flush();
    if let Some(b) = browser {
        open_browser(&b, &url);
    }
    let code = tokio::time::timeout(BROWSER_WAIT, callback(&listener, &state))
        .await
        .map_err(|_| {
            OidcError::Login(format!(
                "no answer from the browser within {}s: try again, or `gateway login --device`",
                BROWSER_WAIT.as_secs()
            ))
        })??;
    let answer = token_call(
        v,
        token_ep,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await?
    .map_err(|(c, d)| OidcError::Login(format!("the provider refused the code: {c} {d}")))?;
    keep(v, &answer, Some(&nonce), None, path).await
}

fn open_browser(browser: &str, url: &str) {
    // $BROWSER may list several, colon-separated; `%s` stands for the URL.
    for b in browser.split(':').filter(|b| !b.trim().is_empty()) {
        let mut words = b.split_whitespace();
        let Some(prog) = words.next() else { continue };
        let mut args: Vec<String> = words.map(|w| w.replace("%s", url)).collect();
        if !b.contains("%s") {
            args.push(url.to_string());
        }
        if std::process::Command::new(prog)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
    eprintln!("Could not start a browser ({browser}): open the URL above yourself.");
}

/// Wait for the browser's redirect to `/callback`; the code, once `state` matched.
async fn callback(listener: &tokio::net::TcpListener, state: &str) -> Result<String, OidcError> {
    loop {
        let (mut s, peer) = listener
            .accept()
            .await
            .map_err(|e| OidcError::Login(format!("redirect listener: {e}")))?;
        if !peer.ip().is_loopback() {
            continue;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head = loop {
            let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break None,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            if buf.len() > 16 * 1024 {
                break None;
            }
        };
        let Some(head) = head else { continue };
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let (p, query) = target.split_once('?').unwrap_or((target, ""));
        if p != "/callback" {
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let q = form_decode(query);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (result, page) = if get("state").as_deref() != Some(state) {
            (
                Err(OidcError::Login(
                    "the redirect's state does not match this sign-in (a forged or stale redirect): refused".into(),
                )),
                "Sign-in refused: the state does not match. Close this window and try again.",
            )
        } else if let Some(e) = get("error") {
            let desc = get("error_description").unwrap_or_default();
            (
                Err(OidcError::Login(format!(
                    "the provider refused the sign-in: {} {}",
                    printable(&e),
                    printable(&desc)
                ))),
                "Sign-in refused by the identity provider. You may close this window.",
            )
        } else if let Some(code) = get("code") {
            (
                Ok(code),
                "Signed in to the gateway. You may close this window.",
            )
        } else {
            (
                Err(OidcError::Login("the redirect carries no code".into())),
                "Sign-in failed: no code. You may close this window.",
            )
        };
        let body = format!("<!DOCTYPE html><html><body><p>{page}</p></body></html>");
        let _ = s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = s.shutdown().await;
        return result;
    }
}

async fn device_flow(
    v: &Verifier,
    d: &super::verifier::Discovery,
    path: &std::path::Path,
) -> Result<Principal, OidcError> {
    let cfg = v.config();
    let ep = d.device_authorization_endpoint.as_deref().ok_or_else(|| {
        OidcError::Login(
            "the issuer does not offer the device flow (no device_authorization_endpoint)".into(),
        )
    })?;
    let token_ep = d
        .token_endpoint
        .as_deref()
        .ok_or_else(|| OidcError::Login("the issuer has no token_endpoint".into()))?;
    let scope = cfg.scopes.join(" ");
    let a = token_call(v, ep, &[("scope", &scope)])
        .await?
        .map_err(|(c, d)| {
            OidcError::Login(format!("the device authorization was refused: {c} {d}"))
        })?;
    let device_code = a["device_code"].as_str().ok_or_else(|| {
        OidcError::Login("the device authorization answer has no device_code".into())
    })?;
    let user_code = a["user_code"].as_str().unwrap_or("");
    let uri = a["verification_uri"].as_str().unwrap_or("");
    let expires_in = a["expires_in"].as_u64().unwrap_or(600).min(3600);
    let mut interval = a["interval"].as_u64().unwrap_or(5).clamp(1, 60);
    eprintln!(
        "To sign in, open {} and enter the code {}",
        printable(uri),
        printable(user_code)
    );
    if let Some(c) = a["verification_uri_complete"].as_str() {
        eprintln!("(or open {} directly)", printable(c));
    }
    eprintln!("Waiting for the sign-in to complete…");
    let _ = std::io::stderr().flush();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(expires_in);
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() > deadline {
            return Err(OidcError::Login(
                "the code expired before the sign-in was completed: run `gateway login` again"
                    .into(),
            ));
        }
        match token_call(
            v,
            token_ep,
            &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
        )
        .await?
        {
            Ok(answer) => return keep(v, &answer, None, None, path).await,
            Err((code, desc)) => match code.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += 5,
                "expired_token" => {
                    return Err(OidcError::Login(
                        "the code expired before the sign-in was completed: run `gateway login` again"
                            .into(),
                    ));
                }
                "access_denied" => {
                    return Err(OidcError::Login(
                        "the sign-in was denied at the identity provider".into(),
                    ));
                }
                _ => {
                    return Err(OidcError::Login(format!(
                        "the provider ended the device flow: {code} {desc}"
                    )));
                }
            },
        }
    }
}

/// The kept ID token, refreshed first when it expires within [`REFRESH_BEFORE`]; `None`
/// when nobody signed in (for this issuer and client).
pub fn current_token(
    cfg: &OidcConfig,
    path: Option<&std::path::Path>,
) -> Result<Option<String>, OidcError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => tokens::default_path()?,
    };
    let Some(t) = tokens::load(&path)? else {
        return Ok(None);
    };
    if t.issuer != cfg.issuer || t.client_id != cfg.client_id {
        return Err(OidcError::Login(format!(
            "you are signed in to {} (client {}), not to the configured {} (client {}): run `gateway login`",
            t.issuer, t.client_id, cfg.issuer, cfg.client_id
        )));
    }
    if t.expires > unix_now() + REFRESH_BEFORE {
        return Ok(Some(t.id_token));
    }
    let Some(rt) = t.refresh_token.clone() else {
        return Err(OidcError::Login(
            "your sign-in expired and there is no refresh token: run `gateway login` again".into(),
        ));
    };
    let v = Verifier::new(cfg, None)?;
    runtime()?.block_on(async {
        let d = v.discovery().await?;
        let ep = d
            .token_endpoint
            .as_deref()
            .ok_or_else(|| OidcError::Login("the issuer has no token_endpoint".into()))?;
        let answer = token_call(&v, ep, &[("grant_type", "refresh_token"), ("refresh_token", &rt)])
            .await?
            .map_err(|(c, d)| {
                OidcError::Login(format!(
                    "your sign-in expired and could not be refreshed ({c} {d}): run `gateway login` again"
                ))
            })?;
        keep(&v, &answer, None, Some(rt.clone()), &path).await?;
        Ok(tokens::load(&path)?.map(|t| t.id_token))
    })
}

/// `gateway whoami`: who the kept token names (verified, refreshed when due); never the token.
pub fn whoami(cfg: &OidcConfig, path: Option<&std::path::Path>) -> Result<String, OidcError> {
    let token = current_token(cfg, path)?
        .ok_or_else(|| OidcError::Login("not signed in: run `gateway login`".into()))?;
    let v = Verifier::new(cfg, None)?;
    let p = runtime()?.block_on(v.verify(&token))?;
    Ok(describe(&p))
}

/// `gateway logout`: revoke the refresh token where the issuer offers it (best effort), remove
/// the token file.
pub fn logout(
    cfg: Option<&OidcConfig>,
    path: Option<&std::path::Path>,
) -> Result<String, OidcError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => tokens::default_path()?,
    };
    let t = tokens::load(&path).ok().flatten();
    if let (Some(cfg), Some(t)) = (cfg, &t)
        && let Some(rt) = &t.refresh_token
        && cfg.issuer == t.issuer
        && let Ok(v) = Verifier::new(cfg, None)
        && let Ok(rt_) = runtime()
    {
        let revoked = rt_.block_on(async {
            let d = v.discovery().await.ok()?;
            let ep = d.revocation_endpoint?;
            token_call(
                &v,
                &ep,
                &[("token", rt), ("token_type_hint", "refresh_token")],
            )
            .await
            .ok()?
            .ok()
        });
        if revoked.is_none() {
            eprintln!(
                "(the refresh token could not be revoked at the issuer; the local copy is removed)"
            );
        }
    }
    Ok(if tokens::remove(&path)? {
        format!("Signed out: {} removed", path.display())
    } else {
        "Not signed in.".into()
    })
}
