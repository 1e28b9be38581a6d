//! The fleet bus on NATS JetStream: what a node publishes and what it answers.
//!
//! Streams (created by the first node that finds them missing; `fleet.replicas` copies):
//! - `GW_JOURNAL`, subjects `gw.journal.NODE`: every journal record of every node, as stored
//!   (its per-node `prev`/`hash` chain kept), one message per record, `Nats-Msg-Id` =
//!   `NODE:ID` (the server drops a resend within its duplicate window), `Gw-Id` = the record
//!   id, `Gw-Sig` = the node's Ed25519 signature ([`super::sign`]). Published from a durable
//!   cursor ([`super::source`]): a node that loses the bus keeps journaling locally and
//!   catches up when it returns, starting after the last record of its own on the stream.
//! - `GW_HOLDS`, subjects `gw.holds.NODE.ID`: the latest state of each hold (`pending`,
//!   `approved`, `denied`, `gone`) with its masked [`HoldInfo`]; one message kept per subject.
//!   Every node follows it to list the fleet's pending holds.
//! - `GW_NODES`, subjects `gw.nodes.NODE`: each node's public signing key.
//!
//! Decisions for a node's holds arrive as core NATS requests on `gw.decide.NODE` (never
//! stored): the node checks the approver's ID token itself and answers whether it applied.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::{
    Decided, Fleet, FleetConfig, FleetError, FleetHold, FleetId, IdToken, Verdict, sign::NodeKey,
};
use crate::hold::{Decision, HoldEvent, HoldInfo};

pub const JOURNAL_STREAM: &str = "GW_JOURNAL";
pub const HOLDS_STREAM: &str = "GW_HOLDS";
pub const NODES_STREAM: &str = "GW_NODES";

pub fn journal_subject(node: &str) -> String {
    format!("gw.journal.{node}")
}
fn holds_subject(node: &str, id: u64) -> String {
    format!("gw.holds.{node}.{id}")
}
pub fn nodes_subject(node: &str) -> String {
    format!("gw.nodes.{node}")
}
fn decide_subject(node: &str) -> String {
    format!("gw.decide.{node}")
}

/// A hold's state on `GW_HOLDS`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldMsg {
    /// pending | approved | denied | gone
    pub state: String,
    pub node: String,
    pub hold: HoldInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A node's key on `GW_NODES`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMsg {
    pub node: String,
    /// Ed25519, base64.
    pub public_key: String,
    pub at: u64,
}

/// A decision sent to the holding node. `Debug` leaves the token out.
#[derive(Clone, Serialize, Deserialize)]
struct DecideRequest {
    hold: u64,
    verdict: Verdict,
    reason: Option<String>,
    id_token: IdToken,
    from: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DecideReply {
    ok: bool,
    #[serde(default)]
    decided: Option<Decided>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: u16,
}

/// The connect options every connection to the bus uses (the daemon's and `journal verify
/// --fleet`'s): authentication, TLS, timeouts, reconnecting for ever.
async fn options(cfg: &FleetConfig, name: &str) -> Result<async_nats::ConnectOptions, FleetError> {
    let mut o = match (&cfg.credentials, &cfg.token_env) {
        (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| FleetError::Bus(format!("fleet.credentials {}: {e}", path.display())))?,
        (None, Some(var)) => {
            let token = std::env::var(var).map_err(|_| {
                FleetError::Bus(format!(
                    "fleet.token_env: the environment variable {var} is not set"
                ))
            })?;
            async_nats::ConnectOptions::with_token(token)
        }
        (None, None) => async_nats::ConnectOptions::new(),
    };
    if let Some(ca) = &cfg.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
        o = o.add_client_certificate(c.clone(), k.clone());
    }
    if cfg.require_tls {
        o = o.require_tls(true);
    }
    Ok(o.name(name)
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(cfg.decide_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1_000))))
}

fn servers(cfg: &FleetConfig) -> Vec<String> {
    cfg.nats.split(',').map(|s| s.trim().to_string()).collect()
}

/// One connection, now (the CLI's): an error when the bus cannot be reached.
pub async fn connect(cfg: &FleetConfig, name: &str) -> Result<async_nats::Client, FleetError> {
    options(cfg, name)
        .await?
        .connect(servers(cfg))
        .await
        .map_err(|e| FleetError::Bus(format!("cannot connect to {}: {e}", cfg.nats)))
}

/// The streams, created when missing (an existing stream is used as it is).
pub async fn ensure_streams(js: &jetstream::Context, cfg: &FleetConfig) -> Result<(), FleetError> {
    let specs = [
        stream::Config {
            name: JOURNAL_STREAM.into(),
            subjects: vec!["gw.journal.*".into()],
            max_age: cfg.journal_max_age,
            duplicate_window: Duration::from_secs(120),
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: HOLDS_STREAM.into(),
            subjects: vec!["gw.holds.*.*".into()],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(86_400),
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: NODES_STREAM.into(),
            subjects: vec!["gw.nodes.*".into()],
            max_messages_per_subject: 16,
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    ];
    for s in specs {
        let name = s.name.clone();
        js.get_or_create_stream(s)
            .await
            .map_err(|e| FleetError::Bus(format!("stream {name}: {e}")))?;
    }
    Ok(())
}

/// This node on the bus.
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    node: String,
    cfg: FleetConfig,
    key: NodeKey,
    /// The other nodes' pending holds, by fleet id, as last published.
    remote: Mutex<HashMap<String, FleetHold>>,
    /// The streams exist (set after each (re)connect that found or made them).
    ready: watch::Sender<bool>,
}

impl Bus {
    pub fn is_connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    pub fn remote_pending(&self) -> Vec<FleetHold> {
        self.remote
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn node_key(&self) -> &NodeKey {
        &self.key
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the streams are ready (false while disconnected).
    pub(crate) fn ready_rx(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Wait until the streams are there (after a (re)connect).
    pub(crate) async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Send a decision to the node holding `fid` and return its answer.
    pub async fn decide_remote(
        &self,
        fid: &FleetId,
        verdict: Verdict,
        reason: Option<String>,
        token: IdToken,
    ) -> Result<Decided, FleetError> {
        let unreachable = |why: String| FleetError::Unreachable {
            id: fid.to_string(),
            node: fid.node.clone(),
            why,
        };
        if !self.is_connected() {
            warn!(hold = %fid, "decision not sent: the fleet bus is down");
            return Err(unreachable(
                "down (this node is not connected to it)".into(),
            ));
        }
        let req = DecideRequest {
            hold: fid.hold,
            verdict,
            reason,
            id_token: token,
            from: self.node.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&req).unwrap_or_default());
        drop(req);
        let answer = tokio::time::timeout(
            self.cfg.decide_timeout,
            self.client.request(decide_subject(&fid.node), payload),
        )
        .await;
        let msg = match answer {
            Err(_) => {
                return Err(unreachable(format!(
                    "not answering for node `{}` within {}",
                    fid.node,
                    crate::config::dur::format(&self.cfg.decide_timeout)
                )));
            }
            Ok(Err(e)) => {
                use async_nats::client::RequestErrorKind as K;
                let why = match e.kind() {
                    K::NoResponders => format!(
                        "up, but node `{}` is not on it (stopped, or cut off from the bus)",
                        fid.node
                    ),
                    K::TimedOut => format!("not answering for node `{}` in time", fid.node),
                    _ => format!("failing ({e})"),
                };
                return Err(unreachable(why));
            }
            Ok(Ok(m)) => m,
        };
        let reply: DecideReply = serde_json::from_slice(&msg.payload).map_err(|e| {
            FleetError::Bus(format!("node `{}` answered something else: {e}", fid.node))
        })?;
        match (reply.ok, reply.decided) {
            (true, Some(d)) => {
                info!(hold = %fid, by = %d.by, decision = ?verdict, "hold on another node decided");
                Ok(d)
            }
            _ => {
                let reason = crate::hold::printable(
                    reply.error.as_deref().unwrap_or("refused, no reason given"),
                    true,
                );
                warn!(hold = %fid, status = reply.status, reason = %reason, "the holding node refused the decision");
                Err(match reply.status {
                    404 => FleetError::Unknown(fid.to_string()),
                    _ => FleetError::Refused {
                        id: fid.to_string(),
                        node: fid.node.clone(),
                        reason,
                    },
                })
            }
        }
    }
}

/// Connect this node to the bus (in the background: a bus that is down now is retried for
/// ever; the node serves meanwhile) and start its publishers and its decision responder.
pub async fn start(
    cfg: &FleetConfig,
    fleet: Arc<Fleet>,
    journal: Option<Arc<crate::journal::Journal>>,
    state_dir: &std::path::Path,
) -> Result<Arc<Bus>, FleetError> {
    let node = fleet.node().to_string();
    let key = NodeKey::load_or_create(state_dir)?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<async_nats::Event>();
    let client = connect_with_events(cfg, &format!("gateway {node}"), events_tx).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(3));
    let bus = Arc::new(Bus {
        client,
        js,
        node: node.clone(),
        cfg: cfg.clone(),
        key,
        remote: Mutex::default(),
        ready: watch::channel(false).0,
    });
    info!(node = %node, nats = %cfg.nats, public_key = %bus.key.public(), "fleet bus configured");
    fleet.set_bus(bus.clone());

    // Supervisor: after each (re)connect, the streams, the node's key, its pending holds.
    {
        let bus = bus.clone();
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if first || bus.is_connected() {
                    match on_connect(&bus, &fleet).await {
                        Ok(()) => {
                            bus.ready.send_replace(true);
                            info!(node = %bus.node, "fleet bus connected; streams ready");
                            first = false;
                        }
                        Err(e) => {
                            if bus.is_connected() {
                                warn!(error = %e, "fleet bus: setting up the streams failed; retrying");
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                match events_rx.recv().await {
                    Some(async_nats::Event::Connected) => {}
                    Some(async_nats::Event::Disconnected) => {
                        bus.ready.send_replace(false);
                        warn!(node = %bus.node, "fleet bus disconnected: holds stay held here, the journal is kept locally and published when the bus returns");
                    }
                    Some(e) => debug!(event = %e, "fleet bus event"),
                    None => return,
                }
            }
        });
    }
    tokio::spawn(publish_holds(bus.clone(), fleet.clone()));
    tokio::spawn(follow_holds(bus.clone()));
    tokio::spawn(answer_decisions(bus.clone(), fleet.clone()));
    if let Some(j) = journal {
        tokio::spawn(super::source::pump(bus.clone(), j));
    }
    Ok(bus)
}

/// The daemon's connection: made in the background (a bus that is down when the node starts
/// is retried for ever), its events sent to the supervisor.
async fn connect_with_events(
    cfg: &FleetConfig,
    name: &str,
    events: tokio::sync::mpsc::UnboundedSender<async_nats::Event>,
) -> Result<async_nats::Client, FleetError> {
    options(cfg, name)
        .await?
        .retry_on_initial_connect()
        .event_callback(move |e| {
            let tx = events.clone();
            async move {
                let _ = tx.send(e);
            }
        })
        .connect(servers(cfg))
        .await
        .map_err(|e| FleetError::Bus(format!("cannot connect to {}: {e}", cfg.nats)))
}

/// After a (re)connect: the streams, this node's key (when the stream does not have it as
/// its last word yet), and every pending hold of this node again (events published while the
/// bus was down were lost).
async fn on_connect(bus: &Bus, fleet: &Fleet) -> Result<(), FleetError> {
    ensure_streams(&bus.js, &bus.cfg).await?;
    let subject = nodes_subject(&bus.node);
    let known = match bus.js.get_stream(NODES_STREAM).await {
        Ok(s) => s
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()
            .and_then(|m| serde_json::from_slice::<NodeMsg>(&m.payload).ok())
            .is_some_and(|m| m.public_key == bus.key.public()),
        Err(e) => return Err(FleetError::Bus(format!("stream {NODES_STREAM}: {e}"))),
    };
    if !known {
        let msg = NodeMsg {
            node: bus.node.clone(),
            public_key: bus.key.public(),
            at: crate::hold::now(),
        };
        publish_acked(
            bus,
            &subject,
            serde_json::to_vec(&msg).unwrap_or_default(),
            None,
        )
        .await?;
        info!(node = %bus.node, "fleet: this node's public key announced on the bus");
    }
    for h in fleet.holds().list() {
        publish_hold(bus, "pending", h, None).await?;
    }
    Ok(())
}

async fn publish_acked(
    bus: &Bus,
    subject: &str,
    body: Vec<u8>,
    headers: Option<async_nats::HeaderMap>,
) -> Result<(), FleetError> {
    let fut = match headers {
        Some(h) => {
            bus.js
                .publish_with_headers(subject.to_string(), h, body.into())
                .await
        }
        None => bus.js.publish(subject.to_string(), body.into()).await,
    }
    .map_err(|e| FleetError::Bus(format!("publish {subject}: {e}")))?;
    fut.await
        .map_err(|e| FleetError::Bus(format!("publish {subject}: {e}")))?;
    Ok(())
}

async fn publish_hold(
    bus: &Bus,
    state: &str,
    hold: HoldInfo,
    by: Option<String>,
) -> Result<(), FleetError> {
    let subject = holds_subject(&bus.node, hold.id);
    let msg = HoldMsg {
        state: state.into(),
        node: bus.node.clone(),
        hold,
        by,
    };
    publish_acked(
        bus,
        &subject,
        serde_json::to_vec(&msg).unwrap_or_default(),
        None,
    )
    .await
}

/// This node's hold events, published as they happen (while the bus is down they are
/// dropped: the next connect publishes the pending ones again, and a hold decided or gone
/// meanwhile expires from the others' lists).
async fn publish_holds(bus: Arc<Bus>, fleet: Arc<Fleet>) {
    let mut rx = fleet.holds().events();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    lost = n,
                    "fleet: hold events came faster than the bus took them; publishing the pending list again"
                );
                for h in fleet.holds().list() {
                    let _ = publish_hold(&bus, "pending", h, None).await;
                }
                continue;
            }
            Err(_) => return,
        };
        if !bus.is_connected() {
            continue;
        }
        let (state, info, by) = match ev {
            HoldEvent::Opened(i) => ("pending", i, None),
            HoldEvent::Decided(i, Decision::Approved { by, .. }) => ("approved", i, Some(by)),
            HoldEvent::Decided(i, Decision::Denied { by, .. }) => ("denied", i, Some(by)),
            HoldEvent::Gone(i) => ("gone", i, None),
        };
        let id = info.id;
        if let Err(e) = publish_hold(&bus, state, info, by).await {
            warn!(hold = id, state, error = %e, "fleet: hold state not published");
        }
    }
}

/// Follow `GW_HOLDS` (the latest message of every hold) into the list of the other nodes'
/// pending holds.
async fn follow_holds(bus: Arc<Bus>) {
    use jetstream::consumer::{DeliverPolicy, push};
    loop {
        bus.wait_ready().await;
        let stream = match bus.js.get_stream(HOLDS_STREAM).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "fleet: cannot follow the holds stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: bus.client.new_inbox(),
                filter_subject: "gw.holds.*.*".into(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await;
        let mut msgs = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "fleet: cannot follow the holds stream; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(e) => {
                warn!(error = %e, "fleet: cannot follow the holds stream; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(m) = msgs.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %e, "fleet: holds stream interrupted");
                    break;
                }
            };
            let Ok(h) = serde_json::from_slice::<HoldMsg>(&m.payload) else {
                warn!(subject = %m.subject, "fleet: a message on the holds stream is not a hold; ignored");
                continue;
            };
            if h.node == bus.node || super::config::valid_node(&h.node).is_err() {
                continue;
            }
            let fh = FleetHold::new(&h.node, h.hold);
            if let Ok(mut map) = bus.remote.lock() {
                if h.state == "pending" {
                    map.insert(fh.fleet_id.clone(), fh);
                } else {
                    map.remove(&fh.fleet_id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Answer decisions for this node's holds (`gw.decide.NODE`): the approver's token checked
/// here, by the node that holds the request.
async fn answer_decisions(bus: Arc<Bus>, fleet: Arc<Fleet>) {
    let subject = decide_subject(&bus.node);
    let mut sub = loop {
        match bus.client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                warn!(error = %e, "fleet: cannot take decisions from the bus yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(m) = sub.next().await {
        let Some(reply_to) = m.reply.clone() else {
            continue;
        };
        let fleet = fleet.clone();
        let bus = bus.clone();
        tokio::spawn(async move {
            let reply = match serde_json::from_slice::<DecideRequest>(&m.payload) {
                Err(_) => DecideReply {
                    ok: false,
                    decided: None,
                    error: Some("not a decision request".into()),
                    status: 400,
                },
                Ok(req) => {
                    let from = crate::hold::printable(&req.from, true);
                    let decided = match fleet.auth().verify(&req.id_token).await {
                        Ok(p) => {
                            fleet
                                .decide_here(req.hold, req.verdict, req.reason, &p, "bus")
                                .await
                        }
                        Err(e) => {
                            warn!(hold = req.hold, from = %from, error = %e, "decision from the bus refused: its ID token does not verify here");
                            Err(e)
                        }
                    };
                    match decided {
                        Ok(d) => {
                            info!(hold = %d.fleet_id, by = %d.by, from = %from, "decision from the bus applied");
                            DecideReply {
                                ok: true,
                                decided: Some(d),
                                error: None,
                                status: 200,
                            }
                        }
                        Err(e) => DecideReply {
                            ok: false,
                            decided: None,
                            status: e.status(),
                            error: Some(e.to_string()),
                        },
                    }
                }
            };
            let body = Bytes::from(serde_json::to_vec(&reply).unwrap_or_default());
            if let Err(e) = bus.client.publish(reply_to, body).await {
                error!(error = %e, "fleet: the answer to a decision could not be sent");
            }
        });
    }
}
