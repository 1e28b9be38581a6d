//! Hold: park a request until a person approves or denies it, or it times out (DESIGN §7).
//!
//! The request waits in memory with the client's connection open and nothing sent upstream.
//! Approvers see it through the admin socket (`gateway approvals`) and, when configured, a
//! webhook POST. A client that hangs up withdraws its hold (the waiting future is dropped and
//! its guard removes the entry). A held streaming request is answered at once and kept alive
//! meanwhile (`hold.keepalive`; the request path does that: `crate::http`'s `held` module).
//!
//! Each held request has a key ([`digest`]): an identical request of the same caller joins the
//! pending hold (one decision for all of them), and a decision stays bound to the key for
//! `hold.approval_ttl` ([`registry`]).
//!
//! What approvers see cannot be abused: the excerpt is masked again here with every rule
//! (whatever its action) and every free-text field is made printable ([`printable`]); nobody
//! approves their own request unless `hold.self_approval`; ids are never reused ([`ids`]); and
//! the number and size of held requests are bounded (`hold.max_pending`, `hold.max_bytes`).

pub mod digest;
pub mod ids;
pub mod principal;
pub mod printable;
mod registry;
pub mod webhook;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub use principal::{Action, Approver, Denied, Principal, authorize};
pub use printable::printable;
pub use registry::{Admission, Decision, HoldError, Holds, Outcome, Waiting};

use crate::{
    policy::{Policy, scan::Direction},
    redirect::identity::Identity,
};

/// `[hold]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoldConfig {
    /// A prompt containing one of these (case-insensitive) waits for approval.
    pub keywords: Vec<String>,
    /// A prompt estimated above this many tokens waits for approval.
    pub max_prompt_tokens: Option<usize>,
    #[serde(with = "crate::config::dur")]
    pub timeout: Duration,
    /// Who may approve: local user names, `@group` (Unix), `@oidc:GROUP` (a group in the
    /// ID token's groups claim), `oidc:sub:SUBJECT`. root always may, on its own node
    /// ([`principal`]).
    pub approvers: Vec<String>,
    /// POSTed a JSON description of every new hold (http:// or https://).
    pub webhook: Option<String>,
    /// May an approver approve a request their own uid made? (root's own requests included.)
    /// Denying is always allowed.
    pub self_approval: bool,
    /// Requests waiting at once; one more is refused at once (429), nothing sent.
    pub max_pending: usize,
    /// Sum of the held requests' bodies, in bytes; a request that would pass it is refused.
    pub max_bytes: u64,
    /// A held streaming request is answered at once (status and headers) and sent a keepalive
    /// event this often until it is decided; must be above zero and below `timeout`.
    #[serde(with = "crate::config::dur")]
    pub keepalive: Duration,
    /// A decision stays bound to the held request's key ([`digest`]) this long: the same
    /// request from the same caller is approved (or denied) again at once, without a new hold.
    /// `"0s"`: decisions are not reused. At most a day.
    #[serde(with = "crate::config::dur")]
    pub approval_ttl: Duration,
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            keywords: Vec::new(),
            max_prompt_tokens: None,
            timeout: Duration::from_secs(600),
            approvers: Vec::new(),
            webhook: None,
            self_approval: false,
            max_pending: 256,
            max_bytes: 64 << 20,
            keepalive: Duration::from_secs(15),
            approval_ttl: Duration::from_secs(600),
        }
    }
}

impl HoldConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.timeout.is_zero() {
            return Err(("hold.timeout".into(), "must be greater than zero".into()));
        }
        if let Some(w) = &self.webhook
            && !(w.starts_with("http://") || w.starts_with("https://"))
        {
            return Err((
                "hold.webhook".into(),
                "must be an http:// or https:// URL".into(),
            ));
        }
        for (i, a) in self.approvers.iter().enumerate() {
            Approver::parse(a).map_err(|reason| (format!("hold.approvers[{i}]"), reason))?;
        }
        if self.keepalive.is_zero() || self.keepalive >= self.timeout {
            return Err((
                "hold.keepalive".into(),
                format!(
                    "must be greater than zero and below hold.timeout ({}): a held stream is \
                     sent a keepalive that often while it waits",
                    crate::config::dur::format(&self.timeout)
                ),
            ));
        }
        if self.approval_ttl > Duration::from_secs(86_400) {
            return Err((
                "hold.approval_ttl".into(),
                "must be at most 1d (an approval is for a request seen now, not a standing \
                 permission); \"0s\" turns reuse off"
                    .into(),
            ));
        }
        if self.max_pending == 0 {
            return Err((
                "hold.max_pending".into(),
                "must be at least 1 (a hold rule would refuse every request it matches)".into(),
            ));
        }
        if self.max_bytes == 0 {
            return Err((
                "hold.max_bytes".into(),
                "must be at least 1 byte (a hold rule would refuse every request it matches)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Why a request must wait, if it must: a keyword anywhere in its text (`all`), or the
    /// estimated size of its prompt (`prompt`, as the adapter locates it).
    pub fn trigger(&self, all: &[&str], prompt: &[&str]) -> Option<String> {
        if !self.keywords.is_empty() {
            for text in all {
                let lower = text.to_lowercase();
                if let Some(k) = self
                    .keywords
                    .iter()
                    .find(|k| lower.contains(&k.to_lowercase()))
                {
                    return Some(format!("keyword `{k}`"));
                }
            }
        }
        if let Some(max) = self.max_prompt_tokens {
            let tokens = estimate_tokens(prompt);
            if tokens > max {
                return Some(format!("~{tokens} prompt tokens (limit {max})"));
            }
        }
        None
    }
}

/// About four characters per token, the usual rule of thumb for English text and code.
pub fn estimate_tokens(prompt: &[&str]) -> usize {
    prompt
        .iter()
        .map(|t| t.chars().count())
        .sum::<usize>()
        .div_ceil(4)
}

/// Everything the request path needs to hold requests.
pub struct HoldService {
    pub holds: Arc<Holds>,
    pub cfg: HoldConfig,
    pub webhook: Option<Arc<webhook::Webhook>>,
    /// Its scanner masks what approvers see once more, with every rule (second line of
    /// defence: the request stage hands over an excerpt that is already masked).
    pub policy: Arc<Policy>,
}

/// A request to be held: who made it, and what an approver is shown of it.
pub struct Request<'a> {
    pub identity: &'a Identity,
    pub provider: &'a str,
    pub endpoint: &'a str,
    pub model: Option<String>,
    /// The rule or trigger that held it.
    pub reason: String,
    pub excerpt: String,
    /// Size of the held body (counted against `hold.max_bytes`).
    pub body_len: usize,
}

impl HoldService {
    /// Park a request (its excerpt and model masked with every rule first); refused when
    /// the holds are full or no id can be recorded.
    pub fn hold(&self, req: Request<'_>) -> Result<(HoldInfo, Waiting), HoldError> {
        match self.admit(req, None)? {
            Admission::Held { info, waiting, .. } => Ok((info, waiting)),
            Admission::Bound { hold, .. } => Err(HoldError::Unknown(hold)),
        }
    }

    /// As [`Self::hold`], for a request with a key ([`digest`]): it may get a decision bound
    /// to its key, or join the pending hold with its key ([`Holds::admit`]).
    pub fn admit(
        &self,
        mut req: Request<'_>,
        key: Option<digest::Key>,
    ) -> Result<Admission, HoldError> {
        let scanner = self.policy.scanner();
        let id = req.identity;
        req.excerpt = scanner.redact(&req.excerpt, Direction::Request, id);
        req.model = req
            .model
            .map(|m| scanner.redact(&m, Direction::Request, id));
        self.holds.admit(req, self.cfg.timeout, key)
    }
}

/// What an approver sees of a held request: masked, and every text field printable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldInfo {
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    pub pid: u32,
    /// The requester's uid (an approver with the same uid cannot approve it).
    pub uid: u32,
    pub user: Option<String>,
    pub comm: String,
    pub cgroup: Option<String>,
    pub provider: String,
    pub endpoint: String,
    pub model: Option<String>,
    /// The rule or trigger that held it.
    pub reason: String,
    pub excerpt: String,
    /// Requests waiting on this hold: the first and every identical resend that joined it.
    #[serde(default)]
    pub waiting: usize,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
