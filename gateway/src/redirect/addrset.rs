//! The provider address set in the kernel (`GW_PROVIDERS_V4/V6` LPM tries), the one FQDN → IP
//! cache that the programs' decisions read (Cilium's DNS proxy owns the same for toFQDNs).
//!
//! Three sources: static CIDRs from the config (and built-ins' published ranges); what the
//! gateway's own resolver answers for the providers' exact host names (A and AAAA); and — the
//! source that makes coverage exact — the DNS answers the workloads themselves receive, written
//! here by the DNS proxy (`redirect::dns`) *before* the answer is passed on. Each address carries
//! `ADDR_*` bits (provider; shared with unrelated sites) and lives for its TTL (clamped to
//! dns.min_ttl..dns.max_ttl) plus a grace period, so a provider rotating addresses never opens a
//! window where a still-cached address goes direct. A name that does not resolve is logged and
//! retried, never fatal. Entries found in the tries at start (an adopted or carried-over set)
//! get a grace period too.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use hickory_resolver::{
    Resolver, TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};
use ipnet::IpNet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Dns;

use super::RedirectError;

/// Where the set is written: the kernel tries, or a map in tests.
pub trait CidrSink: Send + 'static {
    fn current(&self) -> BTreeMap<IpNet, u8>;
    fn insert(&mut self, net: IpNet, flags: u8) -> Result<(), RedirectError>;
    fn remove(&mut self, net: IpNet) -> Result<(), RedirectError>;
}

pub struct BpfCidrs {
    pub v4: LpmTrie<MapData, [u8; 4], u8>,
    pub v6: LpmTrie<MapData, [u8; 16], u8>,
}

fn map_err(what: &'static str) -> impl FnOnce(aya::maps::MapError) -> RedirectError {
    move |e| RedirectError::Bpf {
        what: what.into(),
        source: Box::new(e),
    }
}

impl CidrSink for BpfCidrs {
    fn current(&self) -> BTreeMap<IpNet, u8> {
        let v4 = self.v4.iter().filter_map(Result::ok).filter_map(|(k, v)| {
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(k.data()), k.prefix_len() as u8)
                .ok()
                .map(|n| (IpNet::V4(n), v))
        });
        let v6 = self.v6.iter().filter_map(Result::ok).filter_map(|(k, v)| {
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(k.data()), k.prefix_len() as u8)
                .ok()
                .map(|n| (IpNet::V6(n), v))
        });
        v4.chain(v6).collect()
    }

    fn insert(&mut self, net: IpNet, flags: u8) -> Result<(), RedirectError> {
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(
                    &Key::new(n.prefix_len().into(), n.network().octets()),
                    flags,
                    0,
                )
                .map_err(map_err("insert into GW_PROVIDERS_V4")),
            IpNet::V6(n) => self
                .v6
                .insert(
                    &Key::new(n.prefix_len().into(), n.network().octets()),
                    flags,
                    0,
                )
                .map_err(map_err("insert into GW_PROVIDERS_V6")),
        }
    }

    fn remove(&mut self, net: IpNet) -> Result<(), RedirectError> {
        match net {
            IpNet::V4(n) => self
                .v4
                .remove(&Key::new(n.prefix_len().into(), n.network().octets()))
                .map_err(map_err("remove from GW_PROVIDERS_V4")),
            IpNet::V6(n) => self
                .v6
                .remove(&Key::new(n.prefix_len().into(), n.network().octets()))
                .map_err(map_err("remove from GW_PROVIDERS_V6")),
        }
    }
}

/// A learned address: until when, and its bits (shared only while every claim says shared).
#[derive(Debug, Clone, Copy)]
struct Learned {
    until: Instant,
    flags: u8,
}

/// The set's bookkeeping, separate from I/O so it can be tested with a fake clock.
pub struct AddrSet {
    static_nets: BTreeMap<IpNet, u8>,
    /// address → when it stops being redirected unless re-confirmed, and its bits.
    dynamic: HashMap<IpAddr, Learned>,
}

impl AddrSet {
    pub fn new(static_nets: BTreeMap<IpNet, u8>) -> Self {
        Self {
            static_nets,
            dynamic: HashMap::new(),
        }
    }

    /// Keep what an earlier daemon left in the tries for `grace`, unless it is static.
    pub fn inherit(&mut self, existing: &BTreeMap<IpNet, u8>, now: Instant, grace: Duration) {
        for (net, flags) in existing {
            if !self.static_nets.contains_key(net) && net.prefix_len() == net.max_prefix_len() {
                self.dynamic.entry(net.addr()).or_insert(Learned {
                    until: now + grace,
                    flags: *flags | gateway_common::ADDR_PROVIDER,
                });
            }
        }
    }

    /// A resolution confirmed `ips` until `until` (TTL + grace) with `flags`. Returns the
    /// addresses whose kernel entry must change (new, or no longer shared).
    pub fn confirm(&mut self, ips: &[IpAddr], until: Instant, flags: u8) -> Vec<(IpNet, u8)> {
        let mut changed = Vec::new();
        for ip in ips {
            let net = IpNet::from(*ip);
            match self.dynamic.get_mut(ip) {
                Some(e) => {
                    if e.until < until {
                        e.until = until;
                    }
                    let f = e.flags & flags;
                    if f != e.flags {
                        e.flags = f;
                        changed.push((net, self.effective(net, f)));
                    }
                }
                None => {
                    self.dynamic.insert(*ip, Learned { until, flags });
                    changed.push((net, self.effective(net, flags)));
                }
            }
        }
        changed
    }

    /// A /32 or /128 that is also a static net keeps the static bits where they are stricter.
    fn effective(&self, net: IpNet, flags: u8) -> u8 {
        self.static_nets.get(&net).map_or(flags, |s| s & flags)
    }

    pub fn desired(&mut self, now: Instant) -> BTreeMap<IpNet, u8> {
        self.dynamic.retain(|_, e| e.until > now);
        let mut out = self.static_nets.clone();
        for (ip, e) in &self.dynamic {
            let net = IpNet::from(*ip);
            let f = self.effective(net, e.flags);
            out.insert(net, f);
        }
        out
    }

    /// Bring `sink` to the desired set: insert and update first, then remove.
    pub fn sync(
        &mut self,
        sink: &mut dyn CidrSink,
        now: Instant,
    ) -> Result<(usize, usize), RedirectError> {
        let want = self.desired(now);
        let have = sink.current();
        let add: Vec<_> = want
            .iter()
            .filter(|(n, f)| have.get(n) != Some(f))
            .map(|(n, f)| (*n, *f))
            .collect();
        let del: Vec<_> = have
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        for (n, f) in &add {
            sink.insert(*n, *f)?;
        }
        for n in &del {
            sink.remove(*n)?;
        }
        Ok((add.len(), del.len()))
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.dynamic.values().map(|e| e.until).min()
    }
}

/// The provider set shared by the periodic resolver, the DNS proxy and expiry: one lock, and
/// the kernel written before `learn` returns.
pub struct ProviderSet {
    inner: Mutex<(AddrSet, Box<dyn CidrSink>)>,
    grace: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    /// Wakes the expiry task when a learned address may expire sooner than it planned.
    wake: tokio::sync::Notify,
}

impl ProviderSet {
    /// Load the static nets and inherit what the tries already hold, then write the kernel.
    pub fn new(
        mut set: AddrSet,
        mut sink: Box<dyn CidrSink>,
        cfg: &Dns,
    ) -> Result<Self, RedirectError> {
        let now = Instant::now();
        set.inherit(&sink.current(), now, cfg.grace);
        let (add, del) = set.sync(sink.as_mut(), now)?;
        info!(added = add, removed = del, "provider address set loaded");
        Ok(Self {
            inner: Mutex::new((set, sink)),
            grace: cfg.grace,
            min_ttl: cfg.min_ttl,
            max_ttl: cfg.max_ttl,
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (AddrSet, Box<dyn CidrSink>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Addresses a DNS answer gave for a provider name, with the answer's TTL: in the kernel
    /// when this returns Ok (the caller passes the answer on only then). Returns how many
    /// entries were new or changed.
    pub fn learn(&self, ips: &[IpAddr], ttl: Duration, flags: u8) -> Result<usize, RedirectError> {
        let until = Instant::now() + ttl.clamp(self.min_ttl, self.max_ttl) + self.grace;
        let mut g = self.lock();
        let (set, sink) = &mut *g;
        let changed = set.confirm(ips, until, flags);
        for (net, f) in &changed {
            sink.insert(*net, *f)?;
        }
        drop(g);
        if !changed.is_empty() {
            self.wake.notify_one();
        }
        Ok(changed.len())
    }

    /// Drop what expired; returns when to look again.
    fn expire(&self) -> Instant {
        let now = Instant::now();
        let mut g = self.lock();
        let (set, sink) = &mut *g;
        if let Err(e) = set.sync(sink.as_mut(), now) {
            warn!(error = %e, "cannot update provider address set");
        }
        let hour = now + Duration::from_secs(3600);
        set.next_expiry().map_or(hour, |t| t.min(hour))
    }

    #[cfg(test)]
    pub fn snapshot(&self) -> BTreeMap<IpNet, u8> {
        self.lock().1.current()
    }
}

/// A resolver for provider hosts: the configured servers, or the system's.
pub fn resolver(cfg: &Dns) -> Result<TokioResolver, RedirectError> {
    if cfg.servers.is_empty() {
        let mut b = Resolver::builder_tokio().map_err(|e| RedirectError::Dns(e.to_string()))?;
        // Dual-stack hosts dial AAAA answers too: both families go into the set.
        b.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        return Ok(b.build());
    }
    let mut group = NameServerConfigGroup::new();
    for s in &cfg.servers {
        group.push(NameServerConfig::new(*s, Protocol::Udp));
    }
    let config = ResolverConfig::from_parts(None, vec![], group);
    let mut b = Resolver::builder_with_config(config, TokioConnectionProvider::default());
    b.options_mut().attempts = 1;
    b.options_mut().timeout = Duration::from_secs(2);
    b.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(b.build())
}

/// Keep the kernel's provider set current until the task is dropped: the gateway's own
/// resolution of `hosts` (A and AAAA, by TTL) and expiry of what everyone learned.
pub async fn maintain(set: Arc<ProviderSet>, hosts: BTreeMap<String, u8>, cfg: Dns) {
    match resolver(&cfg) {
        Ok(resolver) => {
            for (host, flags) in hosts {
                tokio::spawn(resolve_loop(
                    resolver.clone(),
                    host,
                    flags,
                    cfg.clone(),
                    set.clone(),
                ));
            }
        }
        Err(e) => {
            warn!(error = %e, "no DNS resolver of the gateway's own: provider addresses come from static ranges and the workloads' DNS answers")
        }
    }
    loop {
        let wake = set.expire();
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = set.wake.notified() => {}
        }
    }
}

async fn resolve_loop(
    resolver: TokioResolver,
    host: String,
    flags: u8,
    cfg: Dns,
    set: Arc<ProviderSet>,
) {
    let mut failures: u32 = 0;
    loop {
        let wait = match resolver.lookup_ip(format!("{host}.")).await {
            Ok(lookup) => {
                failures = 0;
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
                    .clamp(cfg.min_ttl, cfg.max_ttl);
                let ips: Vec<IpAddr> = lookup.iter().collect();
                debug!(%host, addrs = ?ips, "provider host resolved");
                if let Err(e) = set.learn(&ips, ttl, flags) {
                    warn!(%host, error = %e, "cannot write resolved provider addresses");
                }
                ttl
            }
            Err(e) => {
                failures += 1;
                // Warn on the first failure and then every tenth, so an offline host is not noisy.
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(%host, error = %e, failures, retry_in = ?cfg.retry, "provider host did not resolve; will retry");
                }
                cfg.retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::{ADDR_PROVIDER as P, ADDR_SHARED as S};

    #[derive(Default)]
    struct MapSink(BTreeMap<IpNet, u8>);
    impl CidrSink for MapSink {
        fn current(&self) -> BTreeMap<IpNet, u8> {
            self.0.clone()
        }
        fn insert(&mut self, net: IpNet, flags: u8) -> Result<(), RedirectError> {
            self.0.insert(net, flags);
            Ok(())
        }
        fn remove(&mut self, net: IpNet) -> Result<(), RedirectError> {
            self.0.remove(&net);
            Ok(())
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolved_addresses_live_for_ttl_plus_grace_and_static_ones_forever() {
        let t0 = Instant::now();
        let mut set = AddrSet::new([(net("127.10.0.0/24"), P)].into());
        let mut sink = MapSink::default();
        set.confirm(&[ip("192.0.2.7")], t0 + Duration::from_secs(90), P);
        set.sync(&mut sink, t0).unwrap();
        assert_eq!(sink.0.get(&net("192.0.2.7/32")), Some(&P));
        assert!(sink.0.contains_key(&net("127.10.0.0/24")));
        // Re-resolution moved the name elsewhere: the old address stays until its time is up.
        set.confirm(&[ip("192.0.2.8")], t0 + Duration::from_secs(200), P);
        set.sync(&mut sink, t0 + Duration::from_secs(60)).unwrap();
        assert!(sink.0.contains_key(&net("192.0.2.7/32")));
        set.sync(&mut sink, t0 + Duration::from_secs(91)).unwrap();
        assert!(!sink.0.contains_key(&net("192.0.2.7/32")));
        assert!(sink.0.contains_key(&net("192.0.2.8/32")));
        set.sync(&mut sink, t0 + Duration::from_secs(100_000))
            .unwrap();
        assert_eq!(sink.0, [(net("127.10.0.0/24"), P)].into());
    }

    #[test]
    fn inherited_entries_get_a_grace_period_and_stale_static_ones_go() {
        let t0 = Instant::now();
        let mut sink = MapSink([(net("198.51.100.1/32"), P | S), (net("10.9.0.0/16"), P)].into());
        let mut set = AddrSet::new([(net("127.10.0.1/32"), P)].into());
        set.inherit(&sink.current(), t0, Duration::from_secs(600));
        set.sync(&mut sink, t0).unwrap();
        assert_eq!(
            sink.0.get(&net("198.51.100.1/32")),
            Some(&(P | S)),
            "kept for the grace period, bits and all"
        );
        assert!(
            !sink.0.contains_key(&net("10.9.0.0/16")),
            "a CIDR no longer configured goes at once"
        );
        set.sync(&mut sink, t0 + Duration::from_secs(601)).unwrap();
        assert_eq!(sink.0, [(net("127.10.0.1/32"), P)].into());
    }

    #[test]
    fn a_later_confirmation_extends_never_shortens() {
        let t0 = Instant::now();
        let mut set = AddrSet::new(BTreeMap::new());
        let a = ip("2001:db8::1");
        set.confirm(&[a], t0 + Duration::from_secs(500), P);
        assert!(
            set.confirm(&[a], t0 + Duration::from_secs(100), P)
                .is_empty(),
            "nothing to write for a known address"
        );
        assert_eq!(set.next_expiry(), Some(t0 + Duration::from_secs(500)));
    }

    #[test]
    fn an_address_is_shared_only_while_every_claim_is_shared() {
        let t0 = Instant::now();
        let mut set = AddrSet::new([(net("203.0.113.9/32"), P)].into());
        let a = ip("198.51.100.4");
        let until = t0 + Duration::from_secs(60);
        assert_eq!(
            set.confirm(&[a], until, P | S),
            vec![(net("198.51.100.4/32"), P | S)]
        );
        // A provider that owns the address claims it too: no longer shared, written at once.
        assert_eq!(
            set.confirm(&[a], until, P),
            vec![(net("198.51.100.4/32"), P)]
        );
        assert!(
            set.confirm(&[a], until, P | S).is_empty(),
            "owned stays owned"
        );
        // A learned /32 inside the static owned set stays owned even if learned as shared.
        let b = ip("203.0.113.9");
        assert_eq!(
            set.confirm(&[b], until, P | S),
            vec![(net("203.0.113.9/32"), P)]
        );
    }

    #[test]
    fn learning_writes_the_kernel_before_it_returns() {
        let cfg = Dns::default();
        let ps = ProviderSet::new(
            AddrSet::new(BTreeMap::new()),
            Box::new(MapSink::default()),
            &cfg,
        )
        .unwrap();
        let n = ps
            .learn(
                &[ip("198.51.100.9"), ip("2001:db8::9")],
                Duration::from_secs(5),
                P | S,
            )
            .unwrap();
        assert_eq!(n, 2);
        let snap = ps.snapshot();
        assert_eq!(snap.get(&net("198.51.100.9/32")), Some(&(P | S)));
        assert_eq!(snap.get(&net("2001:db8::9/128")), Some(&(P | S)));
        assert_eq!(
            ps.learn(&[ip("198.51.100.9")], Duration::from_secs(5), P | S)
                .unwrap(),
            0
        );
    }
}
