//! Who is signed in, and what they may do: the one authorization decision and the ID-token
//! verifier, as the web page and the HTTPS admin API see them.
//!
//! PLACEHOLDER until the OIDC module lands (i-oidc): the same names and shapes, so the callers
//! do not change when these become re-exports of `crate::oidc` / `crate::hold`.

use crate::hold::HoldConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Local {
        uid: u32,
        gid: u32,
        name: String,
    },
    Oidc {
        issuer: String,
        subject: String,
        name: Option<String>,
        email: Option<String>,
        groups: Vec<String>,
    },
}

impl Principal {
    /// How a decision names who made it.
    pub fn display(&self) -> String {
        match self {
            Principal::Local { name, .. } => name.clone(),
            Principal::Oidc {
                subject,
                name,
                email,
                ..
            } => email
                .clone()
                .or_else(|| name.clone())
                .unwrap_or_else(|| subject.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Decide,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The one decision: may `p` do `a` on a hold (of this node when `local`)?
pub fn authorize(
    cfg: &HoldConfig,
    p: &Principal,
    _a: Action,
    local: bool,
) -> Result<String, Denied> {
    match p {
        Principal::Local { uid, gid, name } => {
            if !local {
                return Err(Denied(format!(
                    "{name}: a hold on another node needs a signed-in approver (OIDC)"
                )));
            }
            crate::hold::may_approve(&cfg.approvers, *uid, *gid).ok_or_else(|| {
                Denied(format!(
                    "uid {uid} is not an approver (hold.approvers; root always is)"
                ))
            })
        }
        Principal::Oidc {
            groups, subject, ..
        } => {
            let ok = cfg.approvers.iter().any(|a| {
                a.strip_prefix("@oidc:")
                    .is_some_and(|g| groups.iter().any(|x| x == g))
                    || a.strip_prefix("oidc:sub:") == Some(subject.as_str())
            });
            if ok {
                Ok(p.display())
            } else {
                Err(Denied(format!(
                    "{} is not an approver: no group of theirs is in hold.approvers",
                    p.display()
                )))
            }
        }
    }
}

/// PLACEHOLDER: the ID-token verifier (`crate::oidc::Verifier`).
pub struct Verifier;

impl Verifier {
    pub async fn verify(&self, _id_token: &str) -> Result<Principal, String> {
        Err("no OIDC verifier in this build".into())
    }
}
