//! What the page lists and decides: the fleet's pending holds ([`crate::fleet::Fleet`]: this
//! node's alone without `[fleet]`) and the decisions on them.
//!
//! Listing is authorized by the one [`authorize`]; a decision goes through
//! [`Fleet::decide`], which authorizes it with the hold in hand (self-approval included): on
//! this node with the signed-in principal, on another node with the approver's ID token as
//! proof, verified by the holding node itself.

use std::sync::Arc;

use super::page::Row;
use crate::{
    fleet::{Fleet, FleetError, IdToken, Proof, Verdict},
    hold::{Action, Principal, authorize},
};

pub struct Approvals {
    pub fleet: Arc<Fleet>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    Fleet(#[from] FleetError),
}

impl DecideError {
    pub fn status(&self) -> u16 {
        match self {
            DecideError::Fleet(e) => e.status(),
        }
    }
}

impl Approvals {
    /// The holds `who` may see; refused when they may not list at all.
    pub fn pending(&self, who: &Principal) -> Result<Vec<Row>, String> {
        let cfg = self.fleet.hold_cfg();
        authorize(cfg, who, Action::List, true).map_err(|e| e.to_string())?;
        let here = self.fleet.node().to_string();
        Ok(self
            .fleet
            .pending()
            .into_iter()
            .filter(|h| authorize(cfg, who, Action::List, h.node == here).is_ok())
            .map(|f| {
                let waited = f.waited_secs();
                let h = f.hold;
                Row {
                    id: if self.fleet.is_fleet() {
                        f.fleet_id
                    } else {
                        h.id.to_string()
                    },
                    node: f.node,
                    user: h.user,
                    uid: Some(h.uid),
                    unit: h.unit,
                    pod: h.pod,
                    cgroup: h.cgroup,
                    comm: h.comm,
                    provider: h.provider,
                    endpoint: h.endpoint,
                    model: h.model,
                    rule: h.reason,
                    excerpt: h.excerpt,
                    waited,
                    left: h.expires.saturating_sub(crate::hold::now()),
                    waiting: h.waiting,
                }
            })
            .collect())
    }

    /// Decide hold `id` (as listed) as `who`, whose ID token is `token`; who the decision
    /// names.
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        reason: Option<String>,
        who: &Principal,
        token: &str,
    ) -> Result<String, DecideError> {
        let proof = Proof {
            principal: who.clone(),
            token: Some(IdToken(token.to_string())),
        };
        let d = self.fleet.decide(id, verdict, reason, proof).await?;
        Ok(d.by)
    }
}
