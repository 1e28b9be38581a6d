//! Who may decide a hold of this node, from the proof a decision carries: the one place the
//! fleet asks. A local proof (the Unix admin socket's peer) is root or a `hold.approvers`
//! member ([`crate::hold::may_approve`]); an ID token is verified by this node itself (the
//! node that holds the request) with the `[oidc]` verifier, then its groups are matched
//! against `hold.approvers`. No verifier configured: every token is refused.

use super::{FleetError, Proof, Verdict};
use crate::hold::{HoldConfig, may_approve};

/// The approver as the holding node records it.
pub struct Approver {
    /// Written in the journal and the log as who decided.
    pub by: String,
    /// Compared with the requester's uid for `hold.self_approval`; `u32::MAX` (no Unix uid)
    /// for a signed-in approver.
    pub uid: u32,
}

/// What checks a proof.
#[derive(Default)]
pub struct Auth {}

impl Auth {
    pub async fn approver(
        &self,
        cfg: &HoldConfig,
        proof: &Proof,
        _verdict: Verdict,
    ) -> Result<Approver, FleetError> {
        match proof {
            Proof::Local { uid, gid } => match may_approve(&cfg.approvers, *uid, *gid) {
                Some(by) => Ok(Approver { by, uid: *uid }),
                None => Err(FleetError::Forbidden(format!(
                    "uid {uid} is not an approver (hold.approvers; root always is)"
                ))),
            },
            Proof::IdToken(_) => Err(FleetError::Forbidden(
                "this node cannot verify ID tokens: no [oidc] is configured here, so a \
                 signed-in approver cannot be checked (refused)"
                    .into(),
            )),
        }
    }
}
