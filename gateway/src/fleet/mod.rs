//! The fleet (issue I): many gateways as one system over a NATS JetStream bus (DESIGN §7a).
//!
//! A shared service beside `hold` and `journal`: each node publishes its holds and its journal
//! records ([`bus`]), takes decisions for its own holds from anywhere, and answers
//! [`Fleet::pending`] with every node's pending holds. The admin API (Unix socket and HTTPS),
//! the approval web page and the CLI all go through one [`Fleet`] handle:
//!
//! - [`Fleet::pending`]: every pending hold of the fleet, as [`FleetHold`]s (masked excerpts
//!   only, the node, identity, provider, model, wait time). Without `[fleet]`: this node's.
//! - [`Fleet::decide`]: approve or deny a hold by its fleet id (`NODE:ID`, the same on every
//!   node; a bare number is a hold on this node). The node that holds the request decides
//!   whether the approver may ([`auth`]): a local proof (the Unix peer) counts on that node
//!   only; a decision for another node must carry a signed-in approver's OIDC ID token, which
//!   travels with the decision and is verified by the holding node itself. The bus being down
//!   is an error for the caller, never an approval.
//!
//! Nothing secret goes on the bus but that token (in a core NATS request, never stored in a
//! stream, never logged or journaled): hold excerpts are the masked [`HoldInfo`] ones, journal
//! records are published as stored (bodies masked or absent per `journal.bodies`).

pub mod auth;
pub mod bus;
pub mod config;
pub mod id;
pub mod sign;
pub mod source;
pub mod verify;

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use config::FleetConfig;
pub use id::FleetId;

use crate::hold::{Action, Decision, HoldConfig, HoldError, HoldInfo, Holds, Principal, authorize};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "`{0}` is not a hold id: give NODE:ID as `approvals list` shows it (or a number for a hold on this node)"
    )]
    BadId(String),
    #[error("no pending hold {0} (decided, timed out or withdrawn)")]
    Unknown(String),
    /// The approver may not decide this hold (why, and what would do).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Hold(#[from] HoldError),
    #[error(
        "hold {id} is on node `{node}`, and the fleet bus is {why}: the decision was not sent \
         and the request stays held there (nothing is approved while the bus is down)"
    )]
    Unreachable {
        id: String,
        node: String,
        why: String,
    },
    #[error("node `{node}` refused the decision on hold {id}: {reason}")]
    Refused {
        id: String,
        node: String,
        reason: String,
    },
    #[error("fleet bus: {0}")]
    Bus(String),
    #[error(transparent)]
    Sign(#[from] sign::SignError),
}

impl FleetError {
    /// The HTTP status the admin APIs answer with.
    pub fn status(&self) -> u16 {
        match self {
            FleetError::BadId(_) => 400,
            FleetError::Unknown(_) | FleetError::Hold(HoldError::Unknown(_)) => 404,
            FleetError::Forbidden(_) | FleetError::Hold(HoldError::Denied(_)) => 403,
            FleetError::Refused { .. } => 403,
            FleetError::Unreachable { .. } => 503,
            _ => 500,
        }
    }
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

/// An OIDC ID token (compact JWS) as presented by an approver: never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdToken(pub String);

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdToken([redacted])")
    }
}

/// Who asks for a decision: the principal the caller established (a Unix socket peer, or an
/// identity whose ID token this node verified) and, for a signed-in approver, the ID token
/// itself. A hold on this node is authorized with the principal ([`crate::hold::authorize`]);
/// a hold on another node only with the token, which goes to that node and is verified there
/// (local rights count on their own node only).
#[derive(Debug, Clone)]
pub struct Proof {
    pub principal: Principal,
    pub token: Option<IdToken>,
}

impl Proof {
    /// A Unix socket peer (no token).
    pub fn local(uid: u32, gid: u32) -> Self {
        Self {
            principal: Principal::local(uid, gid),
            token: None,
        }
    }
}

/// One pending hold of the fleet, as every node lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetHold {
    /// `NODE:ID`: the same on every node.
    pub fleet_id: String,
    /// The node holding the request (its host).
    pub node: String,
    /// Masked excerpt and model, printable fields; `hold.id` is the node's local number.
    pub hold: HoldInfo,
}

impl FleetHold {
    pub fn new(node: &str, hold: HoldInfo) -> Self {
        Self {
            fleet_id: FleetId::new(node, hold.id).to_string(),
            node: node.to_string(),
            hold,
        }
    }

    /// Seconds the request has waited so far.
    pub fn waited_secs(&self) -> u64 {
        crate::hold::now().saturating_sub(self.hold.created)
    }

    /// The listing's JSON object (`approvals list --json`): the hold's fields, plus `node`,
    /// `fleet_id`, `host` and `waited_secs`. With a fleet configured, `id` is the fleet id
    /// (`NODE:ID`, what `approvals approve` takes on any node) and `hold` the local number;
    /// on a single node `id` stays the local number.
    pub fn listing(&self, fleet: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.hold).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("node".into(), self.node.clone().into());
            m.insert("host".into(), self.node.clone().into());
            m.insert("fleet_id".into(), self.fleet_id.clone().into());
            m.insert("waited_secs".into(), self.waited_secs().into());
            if fleet {
                m.insert("hold".into(), self.hold.id.into());
                m.insert("id".into(), self.fleet_id.clone().into());
            }
        }
        v
    }
}

/// What a decision did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    pub fleet_id: String,
    pub node: String,
    pub verdict: Verdict,
    /// Who decided, as the holding node recorded it.
    pub by: String,
    pub hold: HoldInfo,
}

/// The fleet handle: this node's holds and, with `[fleet]`, the bus.
pub struct Fleet {
    node: String,
    holds: Arc<Holds>,
    hold_cfg: HoldConfig,
    auth: auth::Auth,
    /// Set once the bus is configured (it may be disconnected at any time).
    bus: OnceLock<Arc<bus::Bus>>,
    configured: bool,
}

impl Fleet {
    /// `fleet`: the `[fleet]` section, if any (the bus is started by [`bus::start`]); `node`:
    /// this node's name ([`crate::config::Config::node_name`]).
    pub fn new(
        fleet: Option<&FleetConfig>,
        node: String,
        holds: Arc<Holds>,
        hold_cfg: HoldConfig,
        auth: auth::Auth,
    ) -> Self {
        Self {
            node,
            holds,
            hold_cfg,
            auth,
            bus: OnceLock::new(),
            configured: fleet.is_some(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Is `[fleet]` configured (ids listed as `NODE:ID`)?
    pub fn is_fleet(&self) -> bool {
        self.configured
    }

    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    pub fn hold_cfg(&self) -> &HoldConfig {
        &self.hold_cfg
    }

    pub fn auth(&self) -> &auth::Auth {
        &self.auth
    }

    pub(crate) fn set_bus(&self, bus: Arc<bus::Bus>) {
        let _ = self.bus.set(bus);
    }

    pub fn bus(&self) -> Option<&Arc<bus::Bus>> {
        self.bus.get()
    }

    /// Every pending hold of the fleet, oldest first: this node's as they are now, the other
    /// nodes' as last published on the bus (past their expiry: left out).
    pub fn pending(&self) -> Vec<FleetHold> {
        let mut all: Vec<FleetHold> = self
            .holds
            .list()
            .into_iter()
            .map(|h| FleetHold::new(&self.node, h))
            .collect();
        if let Some(bus) = self.bus() {
            let now = crate::hold::now();
            all.extend(
                bus.remote_pending()
                    .into_iter()
                    .filter(|h| h.node != self.node && h.hold.expires > now),
            );
        }
        all.sort_by(|a, b| {
            (a.hold.created, &a.node, a.hold.id).cmp(&(b.hold.created, &b.node, b.hold.id))
        });
        all
    }

    /// The listing as JSON objects ([`FleetHold::listing`]).
    pub fn pending_json(&self) -> Vec<serde_json::Value> {
        self.pending()
            .iter()
            .map(|h| h.listing(self.configured))
            .collect()
    }

    /// Decide hold `id` (`NODE:ID`, or a number for this node) for the approver `proof`
    /// names. A hold on this node is decided here; one on another node is sent to it over the
    /// bus, with the proof, and that node's answer returned (within `fleet.decide_timeout`).
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        reason: Option<String>,
        proof: Proof,
    ) -> Result<Decided, FleetError> {
        let fid = FleetId::parse(id, &self.node)?;
        if fid.node == self.node {
            return self
                .decide_here(fid.hold, verdict, reason, &proof.principal, "local")
                .await;
        }
        let token = match (&proof.principal, proof.token) {
            (Principal::Oidc { .. }, Some(t)) => t,
            _ => {
                warn!(hold = %fid, principal = %proof.principal.label(), "decision for another node's hold refused: no signed-in identity");
                return Err(FleetError::Forbidden(format!(
                    "hold {fid} is on node `{}`: local root or hold.approvers membership counts \
                     only on the node that holds the request. Sign in with the identity \
                     provider (`gateway login`) and decide it again, or decide it on `{}`",
                    fid.node, fid.node
                )));
            }
        };
        let Some(bus) = self.bus() else {
            return Err(FleetError::Unreachable {
                id: fid.to_string(),
                node: fid.node.clone(),
                why: "not configured on this node ([fleet] nats = ...)".into(),
            });
        };
        bus.decide_remote(&fid, verdict, reason, token).await
    }

    /// Decide a hold of this node for `principal`, authorized here by the one
    /// [`authorize`]. `via`: where the decision came from (`local`, `bus`), for the log.
    pub(crate) async fn decide_here(
        &self,
        hold: u64,
        verdict: Verdict,
        reason: Option<String>,
        principal: &Principal,
        via: &str,
    ) -> Result<Decided, FleetError> {
        let fid = FleetId::new(&self.node, hold);
        let by = principal.label();
        let d = match verdict {
            Verdict::Approve => Decision::Approved {
                by: by.clone(),
                reason,
            },
            Verdict::Deny => Decision::Denied {
                by: by.clone(),
                reason,
            },
        };
        let check = |info: &HoldInfo| {
            let action = match verdict {
                Verdict::Approve => Action::Approve(info),
                Verdict::Deny => Action::Deny(info),
            };
            authorize(&self.hold_cfg, principal, action, true)
                .map(|_| ())
                .map_err(HoldError::from)
        };
        let decision = match verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        match self.holds.decide(hold, d, check) {
            Ok(info) => {
                info!(hold, fleet_id = %fid, by = %by, decision, via, "hold decided");
                Ok(Decided {
                    fleet_id: fid.to_string(),
                    node: self.node.clone(),
                    verdict,
                    by,
                    hold: info,
                })
            }
            Err(e @ HoldError::Denied(_)) => {
                warn!(hold, fleet_id = %fid, by = %by, via, error = %e, "decision refused");
                Err(e.into())
            }
            Err(HoldError::Unknown(_)) => Err(FleetError::Unknown(fid.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
