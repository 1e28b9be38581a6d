//! What the page lists and decides: the pending holds and the decisions on them.
//!
//! Single node for now (the local [`Holds`]); with a fleet, every node's holds through
//! `crate::fleet::Fleet` (same calls). Every listing and decision is authorized by the one
//! [`authorize`] (a decision: with the hold in hand, so self-approval is refused too).

use std::sync::Arc;

use super::page::Row;
use crate::hold::{Action, Decision, HoldConfig, HoldError, Holds, Principal, authorize};

pub struct Approvals {
    pub holds: Arc<Holds>,
    pub hold: HoldConfig,
    /// This node's name (shown with each hold).
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    BadId(String),
}

impl Approvals {
    /// The holds `who` may see; refused when they may not list at all.
    pub fn pending(&self, who: &Principal) -> Result<Vec<Row>, String> {
        authorize(&self.hold, who, Action::List, true).map_err(|e| e.to_string())?;
        let now = crate::hold::now();
        Ok(self
            .holds
            .list()
            .into_iter()
            .map(|h| Row {
                id: h.id.to_string(),
                node: self.node.clone(),
                user: h.user,
                uid: Some(h.uid),
                unit: None,
                pod: None,
                cgroup: h.cgroup,
                comm: h.comm,
                provider: h.provider,
                endpoint: h.endpoint,
                model: h.model,
                rule: h.reason,
                excerpt: h.excerpt,
                waited: now.saturating_sub(h.created),
                left: h.expires.saturating_sub(now),
                waiting: h.waiting,
            })
            .collect())
    }

    /// Decide hold `id` as `who`; returns who the decision names.
    pub fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        reason: Option<String>,
        who: &Principal,
    ) -> Result<String, DecideError> {
        let n: u64 = id
            .parse()
            .map_err(|_| DecideError::BadId(format!("`{id}` is not a hold id")))?;
        let by = authorize(&self.hold, who, Action::List, true)
            .map_err(|e| DecideError::Forbidden(e.to_string()))?;
        let approve = verdict == Verdict::Approve;
        let d = if approve {
            Decision::Approved {
                by: by.clone(),
                reason,
            }
        } else {
            Decision::Denied {
                by: by.clone(),
                reason,
            }
        };
        let check = |info: &crate::hold::HoldInfo| {
            let action = if approve {
                Action::Approve(info)
            } else {
                Action::Deny(info)
            };
            authorize(&self.hold, who, action, true)
                .map(|_| ())
                .map_err(HoldError::from)
        };
        match self.holds.decide(n, d, check) {
            Ok(_) => Ok(by),
            Err(e @ HoldError::Denied(_)) => Err(DecideError::Forbidden(e.to_string())),
            Err(e) => Err(DecideError::Gone(e.to_string())),
        }
    }
}
