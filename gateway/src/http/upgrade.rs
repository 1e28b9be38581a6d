//! The HTTP side of a WebSocket session ([`crate::websocket`]): the upgrade request passes the
//! same `prepare` as every request (credentials stripped by name and value, the vault key only
//! when the client presented one, Host pinned to the SNI), then the provider's side is opened
//! and the client answered; the relay runs in a task of its own with the exchange's record.
//! Anything that fails before the 101 is answered here like any request, through [`rescue`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use tracing::{debug, warn};

use super::{ConnCtx, ExchangeError, RespBody, mask_headers, prepare, rescue};
use crate::{
    journal::Exchange,
    policy::{
        credentials,
        scan::{Ctx, Direction},
    },
    websocket::{self, Connected, Hello, Upgrade, WsError},
};

/// The most of a provider's refusal (a non-101 answer) that is read and passed on.
const MAX_REFUSAL: usize = 64 << 10;

/// Serve a request that asks for an upgrade. `ex` is the exchange's record; `endpoint` the
/// adapter's label for the path.
pub(super) async fn exchange(
    req: Request<Incoming>,
    upgrade: Upgrade,
    path_error: Option<crate::request::RequestError>,
    ctx: Arc<ConnCtx>,
    mut ex: Exchange,
    endpoint: &'static str,
) -> Response<RespBody> {
    let adapter = ctx.provider.adapter();
    let endpoint = websocket::endpoint(endpoint);
    ex.rec.endpoint = endpoint.to_string();
    let (resp, stripped, key_name) = match open(req, upgrade, path_error, &ctx, &mut ex).await {
        Ok(Step::Refused(resp)) => {
            drop(ex.finish("completed"));
            return resp;
        }
        Ok(Step::Open(o)) => return start(*o, ctx, ex, endpoint),
        Err((e, stripped, key_name)) => (rescue::respond(adapter, &e), stripped, key_name),
    };
    ex.rec.status = resp.status().as_u16();
    ex.rec.gateway_error = resp
        .headers()
        .get("x-gateway-error")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    ex.rec.key = key_name;
    ex.rec.stripped_headers += stripped.headers;
    ex.rec.stripped_params = stripped.params;
    ex.rec.ttfb_ms = Some(ex.elapsed_ms());
    warn!(
        conn = ctx.conn_id,
        provider = %ctx.provider.name,
        endpoint,
        status = resp.status().as_u16(),
        gateway_error = ex.rec.gateway_error.as_deref(),
        "websocket upgrade refused"
    );
    drop(ex.finish("completed"));
    resp
}

type Refusal = (ExchangeError, credentials::Stripped, Option<String>);

/// Where the upgrade got to.
enum Step {
    /// The provider answered something else than a 101: that answer, for the client.
    Refused(Response<RespBody>),
    Open(Box<Ready>),
}

/// Both sides agreed: what the session starts with.
struct Ready {
    resp: Response<RespBody>,
    opened: websocket::Opened,
    on_upgrade: hyper::upgrade::OnUpgrade,
    scanner: Arc<crate::policy::scan::Scanner>,
    h2: bool,
}

/// The relay in a task of its own, once the client's side is upgraded; it writes the record.
fn start(
    r: Ready,
    ctx: Arc<ConnCtx>,
    mut ex: Exchange,
    endpoint: &'static str,
) -> Response<RespBody> {
    let Ready {
        resp,
        opened,
        on_upgrade,
        scanner,
        h2,
    } = r;
    let session = websocket::relay::Session {
        conn_id: ctx.conn_id,
        scanner,
        identity: ctx.identity.clone(),
        unreadable: ctx.policy.config().unreadable,
        hold: ctx.hold.clone(),
        journal: ctx.journal.clone(),
        provider: ctx.provider.name.clone(),
        endpoint,
        max_message: ctx.max_ws_message,
        h2,
        keepalive: websocket::relay::KEEPALIVE,
    };
    let conn = ctx.conn_id;
    let span = tracing::debug_span!("ws", conn, endpoint);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            match on_upgrade.await {
                Ok(client) => {
                    let client = hyper_util::rt::TokioIo::new(client);
                    websocket::relay::run(session, client, opened.io, ex).await;
                }
                Err(e) => {
                    debug!(conn, error = %e, "the client's upgrade did not complete");
                    ex.rec.status = 101;
                    drop(ex.finish("client_gone"));
                }
            }
        },
        span,
    ));
    resp
}

async fn open(
    req: Request<Incoming>,
    upgrade: Upgrade,
    path_error: Option<crate::request::RequestError>,
    ctx: &Arc<ConnCtx>,
    ex: &mut Exchange,
) -> Result<Step, Refusal> {
    let none = credentials::Stripped::default();
    let h2 = match upgrade {
        Upgrade::WebSocket { h2 } => h2,
        Upgrade::Other(what) => {
            return Err((WsError::Unsupported(what).into(), none, None));
        }
        Upgrade::None => unreachable!("only upgrades come here"),
    };
    if let Some(e) = path_error {
        return Err((e.into(), none, None));
    }
    let (mut parts, _body) = req.into_parts();
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let hello = Hello::read(&parts.headers, h2).map_err(|e| (e.into(), none, None))?;
    let Some(on_upgrade) = on_upgrade else {
        return Err((
            WsError::BadUpgrade("the connection cannot be upgraded".into()).into(),
            none,
            None,
        ));
    };
    // Realtime names its model in the query.
    if let Some(model) = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("model=")))
    {
        ex.rec.model = Some(model.chars().take(100).collect());
    }
    let (parts, stripped, key_name, key) = prepare(parts, ctx)
        .await
        .map_err(|(e, stripped)| (e, stripped, None))?;
    let scanner = match key
        .as_ref()
        .map(|e| ctx.policy.with_key(&ctx.provider.adapter().answer_key(e)))
    {
        None => ctx.policy.scanner(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            return Err((
                ExchangeError::Uninspectable(format!("policy: {e}")),
                stripped,
                key_name,
            ));
        }
    };
    drop(key);
    let connected = websocket::connect(&ctx.upstreams, ctx.orig_dst, &ctx.sni, parts, &hello)
        .await
        .map_err(|e| (ExchangeError::from(e), stripped, key_name.clone()))?;
    ex.rec.key = key_name;
    ex.rec.stripped_headers += stripped.headers;
    ex.rec.stripped_params = stripped.params;
    let mut opened = match connected {
        Connected::Open(o) => *o,
        Connected::Refused(resp) => {
            // The provider's own refusal (its status and error body), masked like any answer.
            let resp = refusal(resp, ctx, &scanner).await;
            ex.rec.status = resp.status().as_u16();
            ex.rec.ttfb_ms = Some(ex.elapsed_ms());
            debug!(
                conn = ctx.conn_id,
                status = ex.rec.status,
                "websocket upgrade refused by the provider"
            );
            return Ok(Step::Refused(resp));
        }
    };
    for h in mask_headers(&mut opened.headers, &scanner, &ctx.identity) {
        ex.decision(crate::journal::Decision {
            direction: "response".into(),
            rule: scanner.rules()[h.rule].name.clone(),
            detector: h.detector.into(),
            action: h.effect.as_str().into(),
            count: 1,
        });
    }
    let resp = websocket::accept(&hello, &opened)
        .map(|()| Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
    ex.rec.status = 101;
    ex.rec.ttfb_ms = Some(ex.elapsed_ms());
    ex.rec.websocket = Some(crate::journal::ws::WsSession {
        protocol: opened
            .protocol
            .as_ref()
            .and_then(|p| p.to_str().ok())
            .map(String::from),
        ..Default::default()
    });
    Ok(Step::Open(Box::new(Ready {
        resp,
        opened,
        on_upgrade,
        scanner,
        h2,
    })))
}

/// A provider's non-101 answer to the upgrade: its status, content type and body (bounded),
/// the body masked whole.
async fn refusal(
    resp: Response<Incoming>,
    ctx: &ConnCtx,
    scanner: &crate::policy::scan::Scanner,
) -> Response<RespBody> {
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, MAX_REFUSAL)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let (masked, _) = scanner.mask(
        &text,
        Ctx {
            dir: Direction::Response,
            id: &ctx.identity,
        },
    );
    let mut out = Response::new(
        Full::new(Bytes::from(masked))
            .map_err(|n| match n {})
            .boxed(),
    );
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        out.headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.clone());
    }
    out
}
