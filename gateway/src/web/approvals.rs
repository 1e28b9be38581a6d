//! What the page lists and decides: the pending holds and the decisions on them.
//!
//! Single node for now (the local [`Holds`]); with a fleet, every node's holds through
//! `crate::fleet::Fleet` (same calls). A decision is authorized by the one
//! [`super::authz::authorize`] before it is handed over.

use std::sync::Arc;

use super::{
    authz::{Action, Principal, authorize},
    page::Row,
};
use crate::hold::{Decision, HoldConfig, HoldError, Holds};

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
        let by = authorize(&self.hold, who, Action::Decide, true)
            .map_err(|e| DecideError::Forbidden(e.to_string()))?;
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
        // A signed-in identity is nobody's uid on this host.
        let uid = match who {
            Principal::Local { uid, .. } => *uid,
            Principal::Oidc { .. } => u32::MAX,
        };
        match self.holds.decide(n, d, uid) {
            Ok(_) => Ok(by),
            Err(e @ HoldError::SelfApproval { .. }) => Err(DecideError::Forbidden(e.to_string())),
            Err(e) => Err(DecideError::Gone(e.to_string())),
        }
    }
}
