//! `gateway journal verify --fleet`: every node's chain, read back from `GW_JOURNAL`.
//!
//! What can be verified from the stream, and with what:
//! - **Who published each record, and that its bytes are unchanged**: every message carries the
//!   node's Ed25519 signature over the node name and the record's bytes ([`super::sign`]). The
//!   public key is the one pinned in `fleet.node_keys`, else the one the node announced on
//!   `gw.nodes.NODE` (trust on first use: a second, different key announced for a node is a
//!   break, unless a key is pinned); for the node running the command, its own key file.
//! - **Each node's chain**: records of a node come in id order, one after the other (a gap or a
//!   record twice is a break), each record's `prev` is the previous record's `hash`, and the
//!   first record is id 1 with the genesis link, or the oldest one the stream still keeps
//!   (`fleet.journal_max_age`: named in the report).
//! - **The keyed hash itself** (HMAC-SHA256 under the node's secret `journal.key`): only where
//!   the key is, i.e. for the node running the command when its key file is readable. Other
//!   nodes' keys never leave them; their records are vouched for by their signatures.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use super::{
    FleetConfig, FleetError,
    bus::{JOURNAL_STREAM, NODES_STREAM, NodeMsg},
    sign,
};
use crate::journal::{seal::Seal, store};

/// One node's chain as found on the stream.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeReport {
    pub node: String,
    pub records: u64,
    pub first: u64,
    pub last: u64,
    /// pinned | announced | own
    pub key: String,
    /// The keyed hashes were checked too (this node's own key).
    pub keyed: bool,
    pub breaks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct FleetVerdict {
    pub messages: u64,
    pub nodes: Vec<NodeReport>,
    /// Problems not tied to one node's chain (a message that is not a record, a bad subject).
    pub other: Vec<String>,
}

impl FleetVerdict {
    pub fn ok(&self) -> bool {
        self.other.is_empty() && self.nodes.iter().all(|n| n.breaks.is_empty())
    }
}

/// What checks one node's records.
struct Chain {
    report: NodeReport,
    public: Option<Vec<u8>>,
    seal: Option<Seal>,
    last: Option<(u64, String)>,
}

/// Read `GW_NODES` and `GW_JOURNAL` and check every node's chain. `own`: this node's name,
/// public key and (when readable) journal seal.
pub async fn run(
    cfg: &FleetConfig,
    own: Option<(String, String, Option<Seal>)>,
) -> Result<FleetVerdict, FleetError> {
    let client = super::bus::connect(cfg, "gateway journal verify --fleet").await?;
    let js = jetstream::new(client);
    let mut verdict = FleetVerdict::default();

    // The keys: pinned, own, then announced (first seen; another one later is a break).
    let mut keys: HashMap<String, (Vec<u8>, &'static str)> = HashMap::new();
    let mut key_breaks: HashMap<String, String> = HashMap::new();
    for (node, k) in &cfg.node_keys {
        if let Ok(k) = sign::public_key(k) {
            keys.insert(node.clone(), (k, "pinned"));
        }
    }
    let mut own_seal = None;
    if let Some((node, public, seal)) = own {
        if let Ok(k) = sign::public_key(&public) {
            keys.entry(node.clone()).or_insert((k, "own"));
        }
        own_seal = seal.map(|s| (node, s));
    }
    for m in read_all(&js, NODES_STREAM, "gw.nodes.*").await? {
        let Ok(n) = serde_json::from_slice::<NodeMsg>(&m.payload) else {
            verdict.other.push(format!(
                "message {} on {NODES_STREAM} is not a node key",
                m.seq
            ));
            continue;
        };
        if m.subject != super::bus::nodes_subject(&n.node) {
            verdict.other.push(format!(
                "message {} on {NODES_STREAM} announces node `{}` on another node's subject {}",
                m.seq, n.node, m.subject
            ));
            continue;
        }
        let Ok(k) = sign::public_key(&n.public_key) else {
            verdict.other.push(format!(
                "node `{}` announced a key that is not Ed25519",
                n.node
            ));
            continue;
        };
        match keys.get(&n.node) {
            None => {
                keys.insert(n.node.clone(), (k, "announced"));
            }
            Some((have, how)) if *have != k && *how == "announced" => {
                key_breaks.insert(
                    n.node.clone(),
                    format!(
                        "node `{}` announced a second, different signing key (message {}): \
                         pin the right one in fleet.node_keys",
                        n.node, m.seq
                    ),
                );
            }
            _ => {}
        }
    }

    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    for m in read_all(&js, JOURNAL_STREAM, "gw.journal.*").await? {
        verdict.messages += 1;
        let Some(node) = m.subject.strip_prefix("gw.journal.") else {
            verdict
                .other
                .push(format!("message {} has subject {}", m.seq, m.subject));
            continue;
        };
        let chain = chains.entry(node.to_string()).or_insert_with(|| {
            let mut report = NodeReport {
                node: node.to_string(),
                ..Default::default()
            };
            let public = keys.get(node).map(|(k, how)| {
                report.key = (*how).to_string();
                k.clone()
            });
            if let Some(b) = key_breaks.get(node) {
                report.breaks.push(b.clone());
            }
            let seal = match &own_seal {
                Some((n, _)) if n == node => own_seal.take().map(|(_, s)| s),
                _ => None,
            };
            report.keyed = seal.is_some();
            Chain {
                report,
                public,
                seal,
                last: None,
            }
        });
        chain.check(&m);
    }
    verdict.nodes = chains.into_values().map(|c| c.report).collect();
    Ok(verdict)
}

impl Chain {
    fn brk(&mut self, seq: u64, what: String) {
        // The first few are enough to find the place; the count says the rest.
        if self.report.breaks.len() < 20 {
            self.report
                .breaks
                .push(format!("stream message {seq}: {what}"));
        }
    }

    fn check(&mut self, m: &Msg) {
        self.report.records += 1;
        let node = self.report.node.clone();
        let header = |k: &str| m.headers.get(k).map(|v| v.to_string());
        if header("Gw-Node").as_deref() != Some(node.as_str()) {
            return self.brk(m.seq, format!("not marked as published by `{node}`"));
        }
        let Some(public) = &self.public else {
            return self.brk(
                m.seq,
                format!(
                    "no public key for node `{node}` (none announced on gw.nodes.{node}, none \
                     pinned in fleet.node_keys): its records cannot be checked"
                ),
            );
        };
        let sig = header("Gw-Sig").unwrap_or_default();
        if !sign::verify(public, &node, &m.payload, &sig) {
            return self.brk(
                m.seq,
                format!(
                    "its signature does not match: the record was changed on the stream, or was \
                     not published by `{node}`"
                ),
            );
        }
        let v: Value = match serde_json::from_slice(&m.payload) {
            Ok(v) => v,
            Err(e) => return self.brk(m.seq, format!("not a JSON record ({e})")),
        };
        let Some(id) = v["id"].as_u64() else {
            return self.brk(m.seq, "a record without an id".into());
        };
        if header("Gw-Id").and_then(|s| s.parse::<u64>().ok()) != Some(id) {
            return self.brk(m.seq, format!("record {id} under another id's header"));
        }
        let prev = v["prev"].as_str().unwrap_or("").to_string();
        let hash = v["hash"].as_str().unwrap_or("").to_string();
        match &self.last {
            None => {
                self.report.first = id;
                if id == 1 && prev != store::GENESIS {
                    self.brk(m.seq, "record 1 does not start the chain".into());
                }
            }
            Some((last, last_hash)) => {
                if id == *last {
                    return self.brk(m.seq, format!("record {id} is on the stream twice"));
                }
                if id != last + 1 {
                    self.brk(
                        m.seq,
                        format!(
                            "record {id} follows record {last}: records {}..{} are missing (or \
                             out of order)",
                            last + 1,
                            id.saturating_sub(1).max(last + 1)
                        ),
                    );
                } else if prev != *last_hash {
                    self.brk(
                        m.seq,
                        format!("record {id}'s prev link is not record {last}'s hash"),
                    );
                }
            }
        }
        if let Some(seal) = &self.seal
            && seal.record_mac(&prev, &v) != hash
            && store::chain_hash(&prev, &v) != hash
        {
            self.brk(
                m.seq,
                format!("record {id}'s keyed hash does not match its content (journal.key)"),
            );
        }
        self.report.last = id;
        self.last = Some((id, hash));
    }
}

/// One message as read back.
struct Msg {
    seq: u64,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
}

/// Every message of `stream` (filtered), in stream order, up to its last one now.
async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<Vec<Msg>, FleetError> {
    let bus = |e: String| FleetError::Bus(format!("stream {stream}: {e}"));
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| bus(e.to_string()))?;
    let state = s
        .info()
        .await
        .map_err(|e| bus(e.to_string()))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| bus(e.to_string()))?;
    let mut msgs = consumer.messages().await.map_err(|e| bus(e.to_string()))?;
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), msgs.next()).await;
        let m = match next {
            Err(_) => {
                return Err(bus(format!(
                    "stopped delivering after {} messages (of {} up to sequence {})",
                    out.len(),
                    state.messages,
                    state.last_sequence
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(bus(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        let info = m.info().map_err(|e| bus(e.to_string()))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let m = m.message;
        out.push(Msg {
            seq,
            subject: m.subject.to_string(),
            headers: m.headers.unwrap_or_default(),
            payload: m.payload,
        });
        if pending == 0 || seq >= state.last_sequence {
            break;
        }
    }
    Ok(out)
}

/// The verdict as text: one line per node, then every break.
pub fn render(v: &FleetVerdict) -> String {
    let mut out = Vec::new();
    for n in &v.nodes {
        out.push(format!(
            "node {}: {} records ({}..={}), signatures checked with its {} key{}{}",
            n.node,
            n.records,
            n.first,
            n.last,
            if n.key.is_empty() {
                "(missing)"
            } else {
                &n.key
            },
            if n.keyed {
                ", keyed hashes checked with this node's journal key"
            } else {
                ""
            },
            if n.breaks.is_empty() {
                ": chain intact".to_string()
            } else {
                format!(": BROKEN ({} problems)", n.breaks.len())
            }
        ));
        for b in &n.breaks {
            out.push(format!("  node {}: {b}", n.node));
        }
    }
    for o in &v.other {
        out.push(format!("  {o}"));
    }
    if v.nodes.is_empty() {
        out.push("no journal records on the bus yet".into());
    }
    out.join("\n")
}
