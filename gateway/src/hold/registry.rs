//! Every pending hold, and the decisions bound to a request's key ([`super::digest`]).
//!
//! A hold is one request an approver decides; it may have several requests waiting on it: a
//! request whose key is the key of a pending hold joins it (the client's resend after its
//! watchdog gave up), and one decision releases (or refuses) every one of them. A decided hold
//! leaves its decision bound to its key for `hold.approval_ttl`: a request with that key then
//! gets the decision at once, without a new hold. A hold is withdrawn when its last waiting
//! request goes away (the client hung up). Timeouts do not bind: a resend after one is held
//! again.
//!
//! `hold.max_pending` and `hold.max_bytes` count every waiting request and its body, joined
//! ones included: a resend costs the memory of a request too.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{HoldConfig, HoldInfo, Request, digest::Key, ids, now, printable::printable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `reason`: what the approver wrote (journaled with the record), if anything.
    Approved {
        by: String,
        reason: Option<String>,
    },
    Denied {
        by: String,
        reason: Option<String>,
    },
}

struct Pending {
    /// `info.waiting` is the number of requests waiting on it.
    info: HoldInfo,
    /// Sum of the waiting requests' bodies.
    bytes: u64,
    key: Option<Key>,
    deadline: Instant,
    tx: watch::Sender<Option<Decision>>,
}

/// A decision bound to a key until `until`.
struct Bound {
    hold: u64,
    decision: Decision,
    until: Instant,
}

#[derive(Default)]
pub(super) struct State {
    pending: BTreeMap<u64, Pending>,
    by_key: HashMap<Key, u64>,
    bound: HashMap<Key, Bound>,
    /// Sum of the pending bodies.
    pub(super) bytes: u64,
    /// Requests waiting, over every hold.
    waiting: usize,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.bytes -= p.bytes;
        self.waiting -= p.info.waiting;
        if let Some(k) = p.key
            && self.by_key.get(&k) == Some(&id)
        {
            self.by_key.remove(&k);
        }
        Some(p)
    }
}

/// Every pending hold.
pub struct Holds {
    state: Mutex<State>,
    ids: ids::Ids,
    max_pending: usize,
    max_bytes: u64,
    approval_ttl: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error("no pending hold {0} (decided, timed out or withdrawn)")]
    Unknown(u64),
    /// [`super::authorize`] refused the decision.
    #[error(transparent)]
    Denied(#[from] super::principal::Denied),
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Ids(#[from] ids::IdsError),
}

/// One request waiting on a hold; it leaves the hold when dropped (the hold is withdrawn with
/// its last waiting request).
pub struct Waiting {
    holds: Arc<Holds>,
    pub id: u64,
    bytes: u64,
    deadline: Instant,
    rx: watch::Receiver<Option<Decision>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut st = self.holds.lock();
        let Some(p) = st.pending.get_mut(&self.id) else {
            return;
        };
        p.info.waiting -= 1;
        p.bytes -= self.bytes;
        let last = p.info.waiting == 0;
        st.bytes -= self.bytes;
        st.waiting -= 1;
        if last {
            st.remove(self.id);
        }
    }
}

pub enum Outcome {
    Decided(Decision),
    TimedOut,
}

impl Waiting {
    /// Wait for a decision, at most `timeout` and never past the hold's own deadline (a
    /// request that joined a hold waits as long as the hold has left).
    pub async fn wait(mut self, timeout: Duration) -> Outcome {
        let until = self.deadline.min(Instant::now() + timeout);
        let decided = tokio::time::timeout_at(until.into(), self.rx.wait_for(Option::is_some));
        match decided.await {
            Ok(Ok(d)) => match d.clone() {
                Some(d) => Outcome::Decided(d),
                None => Outcome::TimedOut,
            },
            // The registry dropped the hold without a decision: treat as timed out.
            Ok(Err(_)) | Err(_) => Outcome::TimedOut,
        }
    }
}

/// What becomes of a request that must wait for approval.
// Made once per held request and taken apart at once: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Admission {
    /// It waits: on a new hold, or `joined` to a pending one with its key.
    Held {
        info: HoldInfo,
        waiting: Waiting,
        joined: bool,
    },
    /// Hold `hold`, with its key, was decided within `hold.approval_ttl`: the same decision.
    Bound { hold: u64, decision: Decision },
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
            approval_ttl: cfg.approval_ttl,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Park a request with no key (it joins nothing); the returned guard waits for the
    /// decision and withdraws on drop.
    pub fn hold(
        self: &Arc<Self>,
        req: Request<'_>,
        timeout: Duration,
    ) -> Result<(HoldInfo, Waiting), HoldError> {
        match self.admit(req, timeout, None)? {
            Admission::Held { info, waiting, .. } => Ok((info, waiting)),
            Admission::Bound { hold, .. } => Err(HoldError::Unknown(hold)),
        }
    }

    /// A request that must wait: the decision bound to its key, if one is; else it joins the
    /// pending hold with its key, if one is; else a new hold. Refused, with nothing kept, when
    /// it would pass `max_pending` or `max_bytes`.
    pub fn admit(
        self: &Arc<Self>,
        req: Request<'_>,
        timeout: Duration,
        key: Option<Key>,
    ) -> Result<Admission, HoldError> {
        let bytes = req.body_len as u64;
        let at = Instant::now();
        let mut st = self.lock();
        st.bound.retain(|_, b| b.until > at);
        if let Some(k) = &key
            && let Some(b) = st.bound.get(k)
        {
            return Ok(Admission::Bound {
                hold: b.hold,
                decision: b.decision.clone(),
            });
        }
        if st.waiting >= self.max_pending {
            return Err(HoldError::Full(format!(
                "{} requests are waiting for approval already (hold.max_pending = {})",
                st.waiting, self.max_pending
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
        let joined = key
            .as_ref()
            .and_then(|k| st.by_key.get(k).copied())
            .filter(|id| st.pending.get(id).is_some_and(|p| p.deadline > at));
        if let Some(id) = joined {
            st.bytes += bytes;
            st.waiting += 1;
            let p = st.pending.get_mut(&id).expect("found above");
            p.info.waiting += 1;
            p.bytes += bytes;
            let waiting = Waiting {
                holds: self.clone(),
                id,
                bytes,
                deadline: p.deadline,
                rx: p.tx.subscribe(),
            };
            return Ok(Admission::Held {
                info: p.info.clone(),
                waiting,
                joined: true,
            });
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
            waiting: 1,
        };
        let (tx, rx) = watch::channel(None);
        let deadline = at + timeout;
        st.bytes += bytes;
        st.waiting += 1;
        if let Some(k) = key {
            st.by_key.insert(k, n);
        }
        st.pending.insert(
            n,
            Pending {
                info: info.clone(),
                bytes,
                key,
                deadline,
                tx,
            },
        );
        drop(st);
        Ok(Admission::Held {
            info,
            waiting: Waiting {
                holds: self.clone(),
                id: n,
                bytes,
                deadline,
                rx,
            },
            joined: false,
        })
    }

    pub fn list(&self) -> Vec<HoldInfo> {
        self.lock()
            .pending
            .values()
            .map(|p| p.info.clone())
            .collect()
    }

    /// Decide hold `id`. `check` sees the hold first and may refuse (the hold then stays):
    /// callers pass [`super::authorize`] there, the one decision of who may approve what.
    /// Every request waiting on it gets the decision, and it stays bound to the hold's key for
    /// `hold.approval_ttl`.
    pub fn decide(
        &self,
        id: u64,
        d: Decision,
        check: impl FnOnce(&HoldInfo) -> Result<(), HoldError>,
    ) -> Result<HoldInfo, HoldError> {
        let mut st = self.lock();
        let p = st.pending.get(&id).ok_or(HoldError::Unknown(id))?;
        check(&p.info)?;
        let p = st.remove(id).ok_or(HoldError::Unknown(id))?;
        if let Some(k) = p.key
            && !self.approval_ttl.is_zero()
        {
            st.bound.insert(
                k,
                Bound {
                    hold: id,
                    decision: d.clone(),
                    until: Instant::now() + self.approval_ttl,
                },
            );
        }
        drop(st);
        // The requesters may have just gone: then the decision has nobody to tell.
        p.tx.send(Some(d)).map_err(|_| HoldError::Unknown(id))?;
        Ok(p.info)
    }
}
