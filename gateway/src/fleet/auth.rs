//! How this node checks the proof a decision from the bus carries: the approver's ID token,
//! verified here (the node that holds the request) with the `[oidc]` verifier. Without
//! `[oidc]` every such decision is refused. What the verified principal may do is decided by
//! [`crate::hold::authorize`], as for every other caller.

use std::sync::Arc;

use super::{FleetError, IdToken};
use crate::{hold::Principal, oidc::Verifier};

/// What checks an ID token.
#[derive(Default)]
pub struct Auth {
    verifier: Option<Arc<Verifier>>,
}

impl Auth {
    pub fn new(verifier: Option<Arc<Verifier>>) -> Self {
        Self { verifier }
    }

    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }

    /// The principal an ID token proves (signature, issuer, audience, lifetime), or why not.
    pub async fn verify(&self, token: &IdToken) -> Result<Principal, FleetError> {
        let Some(v) = &self.verifier else {
            return Err(FleetError::Forbidden(
                "this node cannot verify ID tokens: no [oidc] is configured here, so a \
                 signed-in approver cannot be checked (refused)"
                    .into(),
            ));
        };
        v.verify(&token.0)
            .await
            .map_err(|e| FleetError::Forbidden(format!("ID token refused: {e}")))
    }
}
