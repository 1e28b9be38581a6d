//! Hold: park a request until a person approves or denies it, or it times out (DESIGN §7).
//!
//! The request waits in memory with the client's connection open and nothing sent upstream.
//! Approvers see it through the admin socket (`gateway approvals`) and, when configured, a
//! webhook POST. A client that hangs up withdraws its hold (the waiting future is dropped and
//! its guard removes the entry).

pub mod webhook;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::redirect::identity::Identity;

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
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            keywords: Vec::new(),
            max_prompt_tokens: None,
            timeout: Duration::from_secs(600),
            approvers: Vec::new(),
            webhook: None,
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
}

/// What an approver sees of a held request (the excerpt is already masked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldInfo {
    pub id: u64,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    pub pid: u32,
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
    tx: oneshot::Sender<Decision>,
}

/// Every pending hold.
#[derive(Default)]
pub struct Holds {
    pending: Mutex<BTreeMap<u64, Pending>>,
    next: AtomicU64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error("no pending hold {0} (decided, timed out or withdrawn)")]
    Unknown(u64),
}

/// Removes its hold when the waiting request goes away (client hung up, or decided).
pub struct Waiting {
    holds: Arc<Holds>,
    pub id: u64,
    rx: Option<oneshot::Receiver<Decision>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.holds.lock().remove(&self.id);
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

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Park a request; the returned guard waits for the decision and withdraws on drop.
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        self: &Arc<Self>,
        id: &Identity,
        provider: &str,
        endpoint: &str,
        model: Option<String>,
        reason: String,
        excerpt: String,
        timeout: Duration,
    ) -> (HoldInfo, Waiting) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let created = now();
        let info = HoldInfo {
            id: n,
            created,
            expires: created + timeout.as_secs(),
            pid: id.tgid,
            uid: id.uid,
            user: id.user.clone(),
            comm: id.comm.clone(),
            cgroup: id.cgroup.clone(),
            provider: provider.to_string(),
            endpoint: endpoint.to_string(),
            model,
            reason,
            excerpt,
        };
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            n,
            Pending {
                info: info.clone(),
                tx,
            },
        );
        (
            info,
            Waiting {
                holds: self.clone(),
                id: n,
                rx: Some(rx),
            },
        )
    }

    pub fn list(&self) -> Vec<HoldInfo> {
        self.lock().values().map(|p| p.info.clone()).collect()
    }

    pub fn decide(&self, id: u64, d: Decision) -> Result<HoldInfo, HoldError> {
        let p = self.lock().remove(&id).ok_or(HoldError::Unknown(id))?;
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
mod tests {
    use super::*;

    #[test]
    fn triggers() {
        let c = HoldConfig {
            keywords: vec!["Production Database".into()],
            max_prompt_tokens: Some(10),
            ..Default::default()
        };
        assert_eq!(
            c.trigger(&["drop the production database now"], &[])
                .as_deref(),
            Some("keyword `Production Database`")
        );
        assert!(c.trigger(&["short"], &["short"]).is_none());
        assert!(
            c.trigger(&[], &[&"x".repeat(41)])
                .unwrap()
                .contains("limit 10")
        );
    }

    #[tokio::test]
    async fn decide_wait_and_withdraw() {
        let holds = Arc::new(Holds::default());
        let id = Identity::default();
        let (info, w) = holds.hold(
            &id,
            "openai",
            "chat.completions",
            None,
            "r".into(),
            "e".into(),
            Duration::from_secs(5),
        );
        assert_eq!(holds.list().len(), 1);
        holds
            .decide(info.id, Decision::Approved { by: "root".into() })
            .unwrap();
        assert!(matches!(
            w.wait(Duration::from_secs(1)).await,
            Outcome::Decided(Decision::Approved { .. })
        ));
        assert!(holds.list().is_empty());
        // Withdrawn when the waiter goes away.
        let (info, w) = holds.hold(
            &id,
            "openai",
            "x",
            None,
            "r".into(),
            "e".into(),
            Duration::from_secs(5),
        );
        drop(w);
        assert!(holds.list().is_empty());
        assert_eq!(
            holds
                .decide(info.id, Decision::Approved { by: "root".into() })
                .err(),
            Some(HoldError::Unknown(info.id))
        );
        // Timeout.
        let (_, w) = holds.hold(
            &id,
            "openai",
            "x",
            None,
            "r".into(),
            "e".into(),
            Duration::from_secs(5),
        );
        assert!(matches!(
            w.wait(Duration::from_millis(20)).await,
            Outcome::TimedOut
        ));
    }

    #[test]
    fn root_always_approves_others_only_when_listed() {
        assert!(may_approve(&[], 0, 0).is_some());
        assert!(may_approve(&[], 65534, 65534).is_none());
        assert!(may_approve(&["nobody".into()], 65534, 65534).is_some());
        assert!(may_approve(&["@root".into()], 65534, 65534).is_none());
        assert!(may_approve(&["@root".into()], 65534, 0).is_some());
    }
}
