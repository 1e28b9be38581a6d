//! The kernel relay's program and maps (gateway-ebpf/src/relay.rs), loaded with the rest of
//! the object. The program is attached to the gateway's own sockhash only (never to a cgroup),
//! and nothing here is pinned: the sockets in the maps are this daemon's, and so are the maps.
//! The protocol that uses them (when to insert a pair, how a FIN is passed on) is in
//! `intercept::relay`.

use std::{os::fd::AsRawFd, sync::Mutex};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, SockHash},
    programs::{SkSkb, sk_skb::SkSkbLink},
};
use gateway_common::{maps, programs};

use super::{RedirectError, take};

/// The loaded relay: two sockhashes, the byte counts, and the attachment (kept alive here).
pub struct RelayMaps {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for RelayMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayMaps")
    }
}

struct Inner {
    /// Socket under its peer's cookie.
    targets: SockHash<MapData, u64>,
    /// Socket under its own cookie; the verdict program is attached here.
    relay: SockHash<MapData, u64>,
    counts: HashMap<MapData, u64, u64>,
    /// Dropping it detaches the program from `relay`.
    _link: SkSkbLink,
}

fn bpf<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(E) -> RedirectError {
    let what = what.to_string();
    move |e| RedirectError::Bpf {
        what,
        source: Box::new(e),
    }
}

/// Load the verdict program and attach it to its sockhash. An error here leaves every spliced
/// connection to splice(2); the caller says so in the log.
pub fn load(ebpf: &mut Ebpf) -> Result<RelayMaps, RedirectError> {
    let targets: SockHash<MapData, u64> = take(ebpf, maps::RELAY_TARGETS)?;
    let relay: SockHash<MapData, u64> = take(ebpf, maps::RELAY)?;
    let counts: HashMap<MapData, u64, u64> = take(ebpf, maps::RELAY_COUNTS)?;
    let prog: &mut SkSkb = ebpf
        .program_mut(programs::RELAY)
        .ok_or(RedirectError::MissingProgram(programs::RELAY))?
        .try_into()
        .map_err(bpf(programs::RELAY))?;
    prog.load().map_err(bpf("load gw_relay"))?;
    let id = prog
        .attach(relay.fd())
        .map_err(bpf("attach gw_relay to GW_RELAY"))?;
    let link = prog.take_link(id).map_err(bpf("take link gw_relay"))?;
    Ok(RelayMaps {
        inner: Mutex::new(Inner {
            targets,
            relay,
            counts,
            _link: link,
        }),
    })
}

/// One socket of a pair: its cookie (`SO_COOKIE`) and the socket itself.
pub struct Side<'a, F: AsRawFd> {
    pub cookie: u64,
    pub fd: &'a F,
}

impl RelayMaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it left the maps as they were after some whole syscall.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts and targets for both sockets: nothing is relayed yet (no verdict on them).
    /// On error the entries made are removed again.
    pub fn prepare<A: AsRawFd, B: AsRawFd>(
        &self,
        a: &Side<'_, A>,
        b: &Side<'_, B>,
    ) -> Result<(), RedirectError> {
        let mut m = self.lock();
        let r = (|| {
            m.counts
                .insert(a.cookie, 0, 0)
                .map_err(bpf("GW_RELAY_COUNTS"))?;
            m.counts
                .insert(b.cookie, 0, 0)
                .map_err(bpf("GW_RELAY_COUNTS"))?;
            m.targets
                .insert(a.cookie, b.fd.as_raw_fd(), 0)
                .map_err(bpf("GW_RELAY_TARGETS"))?;
            m.targets
                .insert(b.cookie, a.fd.as_raw_fd(), 0)
                .map_err(bpf("GW_RELAY_TARGETS"))
        })();
        if r.is_err() {
            drop(m);
            self.remove(a.cookie, b.cookie);
        }
        r
    }

    /// Start the verdict on one socket: from here on, what it receives goes to its target.
    pub fn start<A: AsRawFd>(&self, s: &Side<'_, A>) -> Result<(), RedirectError> {
        self.lock()
            .relay
            .insert(s.cookie, s.fd.as_raw_fd(), 0)
            .map_err(bpf("GW_RELAY"))
    }

    /// Bytes the relay has handed on from the socket with this cookie.
    pub fn count(&self, cookie: u64) -> u64 {
        self.lock().counts.get(&cookie, 0).unwrap_or(0)
    }

    /// Forget a pair (entries already gone, as when a socket closed, are fine).
    pub fn remove(&self, a: u64, b: u64) {
        let mut m = self.lock();
        for c in [a, b] {
            let _ = m.relay.remove(&c);
            let _ = m.targets.remove(&c);
            let _ = m.counts.remove(&c);
        }
    }
}
