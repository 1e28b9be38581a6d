//! Hold: park a request until a person approves or denies it, or it times out (DESIGN §7).
//!
//! The request waits in memory with the client's connection open and nothing sent upstream.
//! Approvers see it through the admin socket (`gateway approvals`) and, when configured, a
//! webhook POST. A client that hangs up withdraws its hold (the waiting future is dropped and
//! its guard removes the entry).
//!
//! What approvers see cannot be abused: the excerpt is masked again here with every rule
//! (whatever its action) and every free-text field is made printable ([`printable`]); nobody
//! approves their own request unless `hold.self_approval`; ids are never reused ([`ids`]); and
//! the number and size of held requests are bounded (`hold.max_pending`, `hold.max_bytes`).

pub mod ids;
pub mod printable;
pub mod webhook;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use printable::printable;

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
    /// Who may approve: user names, or `@group`. root always may.
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
            if a.trim_start_matches('@').is_empty() {
                return Err((format!("hold.approvers[{i}]"), "empty name".into()));
            }
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
    pub fn hold(&self, mut req: Request<'_>) -> Result<(HoldInfo, Waiting), HoldError> {
        let scanner = self.policy.scanner();
        let id = req.identity;
        req.excerpt = scanner.redact(&req.excerpt, Direction::Request, id);
        req.model = req
            .model
            .map(|m| scanner.redact(&m, Direction::Request, id));
        self.holds.hold(req, self.cfg.timeout)
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved { by: String },
    Denied { by: String, reason: Option<String> },
}

struct Pending {
    info: HoldInfo,
    bytes: u64,
    tx: oneshot::Sender<Decision>,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<u64, Pending>,
    /// Sum of the pending bodies.
    bytes: u64,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.bytes -= p.bytes;
        Some(p)
    }
}

/// Every pending hold.
pub struct Holds {
    state: Mutex<State>,
    ids: ids::Ids,
    max_pending: usize,
    max_bytes: u64,
    self_approval: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error("no pending hold {0} (decided, timed out or withdrawn)")]
    Unknown(u64),
    #[error(
        "hold {id} is a request made by uid {uid}, your own: nobody approves their own request \
         (hold.self_approval = false); another approver must approve it (you may deny it)"
    )]
    SelfApproval { id: u64, uid: u32 },
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Ids(#[from] ids::IdsError),
}

/// Removes its hold when the waiting request goes away (client hung up, or decided).
pub struct Waiting {
    holds: Arc<Holds>,
    pub id: u64,
    rx: Option<oneshot::Receiver<Decision>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.holds.lock().remove(self.id);
    }
}

pub enum Outcome {
    Decided(Decision),
    TimedOut,
}

impl Waiting {
    /// Wait for a decision, at most `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Outcome {
        let rx = self.rx.take().expect("waited once");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(d)) => Outcome::Decided(d),
            // The registry dropped the sender without a decision: treat as timed out.
            Ok(Err(_)) | Err(_) => Outcome::TimedOut,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl Holds {
    pub fn new(cfg: &HoldConfig, ids: ids::Ids) -> Self {
        Self {
            state: Mutex::default(),
            ids,
            max_pending: cfg.max_pending,
            max_bytes: cfg.max_bytes,
            self_approval: cfg.self_approval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Park a request; the returned guard waits for the decision and withdraws on drop.
    /// Refused, with nothing kept, when it would pass `max_pending` or `max_bytes`.
    pub fn hold(
        self: &Arc<Self>,
        req: Request<'_>,
        timeout: Duration,
    ) -> Result<(HoldInfo, Waiting), HoldError> {
        let bytes = req.body_len as u64;
        let mut st = self.lock();
        if st.pending.len() >= self.max_pending {
            return Err(HoldError::Full(format!(
                "{} requests are waiting for approval already (hold.max_pending = {})",
                st.pending.len(),
                self.max_pending
            )));
        }
        if st.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(HoldError::Full(format!(
                "the requests waiting for approval hold {} and this one {} (hold.max_bytes = {})",
                mib(st.bytes),
                mib(bytes),
                mib(self.max_bytes)
            )));
        }
        let n = self.ids.next()?;
        let created = now();
        let id = req.identity;
        let text = |s: &str| printable(s, false);
        let info = HoldInfo {
            id: n,
            created,
            expires: created + timeout.as_secs(),
            pid: id.tgid,
            uid: id.uid,
            user: id.user.as_deref().map(text),
            comm: text(&id.comm),
            cgroup: id.cgroup.as_deref().map(text),
            provider: text(req.provider),
            endpoint: text(req.endpoint),
            model: req.model.as_deref().map(text),
            reason: text(&req.reason),
            excerpt: text(&req.excerpt),
        };
        let (tx, rx) = oneshot::channel();
        st.bytes += bytes;
        st.pending.insert(
            n,
            Pending {
                info: info.clone(),
                bytes,
                tx,
            },
        );
        drop(st);
        Ok((
            info,
            Waiting {
                holds: self.clone(),
                id: n,
                rx: Some(rx),
            },
        ))
    }

    pub fn list(&self) -> Vec<HoldInfo> {
        self.lock()
            .pending
            .values()
            .map(|p| p.info.clone())
            .collect()
    }

    /// Decide hold `id` for the approver with uid `by_uid`: approving a request of one's own
    /// uid is refused (and the hold stays) unless `hold.self_approval`.
    pub fn decide(&self, id: u64, d: Decision, by_uid: u32) -> Result<HoldInfo, HoldError> {
        let mut st = self.lock();
        let p = st.pending.get(&id).ok_or(HoldError::Unknown(id))?;
        if matches!(d, Decision::Approved { .. }) && !self.self_approval && p.info.uid == by_uid {
            return Err(HoldError::SelfApproval {
                id,
                uid: p.info.uid,
            });
        }
        let p = st.remove(id).ok_or(HoldError::Unknown(id))?;
        drop(st);
        let info = p.info.clone();
        // The requester may have just gone: then the decision has nobody to tell.
        p.tx.send(d).map_err(|_| HoldError::Unknown(id))?;
        Ok(info)
    }
}

/// May the peer with this uid (and primary gid) decide holds? root always; otherwise a
/// listed user name or a member of a listed `@group`.
pub fn may_approve(approvers: &[String], uid: u32, gid: u32) -> Option<String> {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"));
    if uid == 0 {
        return Some(name);
    }
    for a in approvers {
        let ok = match a.strip_prefix('@') {
            Some(group) => match nix::unistd::Group::from_name(group) {
                Ok(Some(g)) => g.gid.as_raw() == gid || g.mem.contains(&name),
                _ => false,
            },
            None => *a == name,
        };
        if ok {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests;
