//! The provider address set in the kernel (`GW_PROVIDERS_V4/V6` LPM tries).
//!
//! Static CIDRs from the config, plus what the providers' exact host names resolve to. Each
//! resolved address is kept for its TTL (clamped to dns.min_ttl..dns.max_ttl) plus a grace
//! period, so a provider rotating addresses never opens a window where a still-cached address
//! goes direct. A name that does not resolve (an offline host) is logged and retried, never
//! fatal. Entries found in the tries at start (an adopted set) get a grace period too.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use hickory_resolver::{
    Resolver, TokioResolver,
    config::{NameServerConfig, NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};
use ipnet::IpNet;
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

use crate::config::Dns;

use super::RedirectError;

/// Where the set is written: the kernel tries, or a set in tests.
pub trait CidrSink: Send + 'static {
    fn current(&self) -> BTreeSet<IpNet>;
    fn insert(&mut self, net: IpNet) -> Result<(), RedirectError>;
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
    fn current(&self) -> BTreeSet<IpNet> {
        let v4 = self.v4.keys().filter_map(Result::ok).filter_map(|k| {
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(k.data()), k.prefix_len() as u8)
                .ok()
                .map(IpNet::V4)
        });
        let v6 = self.v6.keys().filter_map(Result::ok).filter_map(|k| {
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(k.data()), k.prefix_len() as u8)
                .ok()
                .map(IpNet::V6)
        });
        v4.chain(v6).collect()
    }

    fn insert(&mut self, net: IpNet) -> Result<(), RedirectError> {
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(&Key::new(n.prefix_len().into(), n.network().octets()), 1, 0)
                .map_err(map_err("insert into GW_PROVIDERS_V4")),
            IpNet::V6(n) => self
                .v6
                .insert(&Key::new(n.prefix_len().into(), n.network().octets()), 1, 0)
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

/// The set's bookkeeping, separate from I/O so it can be tested with a fake clock.
pub struct AddrSet {
    static_nets: BTreeSet<IpNet>,
    /// address → when it stops being redirected unless re-confirmed.
    dynamic: HashMap<IpAddr, Instant>,
}

impl AddrSet {
    pub fn new(static_nets: BTreeSet<IpNet>) -> Self {
        Self {
            static_nets,
            dynamic: HashMap::new(),
        }
    }

    /// Keep what an earlier daemon left in the tries for `grace`, unless it is static.
    pub fn inherit(&mut self, existing: &BTreeSet<IpNet>, now: Instant, grace: Duration) {
        for net in existing {
            if !self.static_nets.contains(net) && net.prefix_len() == net.max_prefix_len() {
                self.dynamic.entry(net.addr()).or_insert(now + grace);
            }
        }
    }

    /// A resolution confirmed `ips` until `until` (TTL + grace).
    pub fn confirm(&mut self, ips: &[IpAddr], until: Instant) {
        for ip in ips {
            let e = self.dynamic.entry(*ip).or_insert(until);
            if *e < until {
                *e = until;
            }
        }
    }

    pub fn desired(&mut self, now: Instant) -> BTreeSet<IpNet> {
        self.dynamic.retain(|_, until| *until > now);
        self.static_nets
            .iter()
            .copied()
            .chain(self.dynamic.keys().map(|ip| IpNet::from(*ip)))
            .collect()
    }

    /// Bring `sink` to the desired set: insert first, then remove.
    pub fn sync(
        &mut self,
        sink: &mut dyn CidrSink,
        now: Instant,
    ) -> Result<(usize, usize), RedirectError> {
        let want = self.desired(now);
        let have = sink.current();
        let add: Vec<_> = want.difference(&have).copied().collect();
        let del: Vec<_> = have.difference(&want).copied().collect();
        for n in &add {
            sink.insert(*n)?;
        }
        for n in &del {
            sink.remove(*n)?;
        }
        Ok((add.len(), del.len()))
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.dynamic.values().min().copied()
    }
}

/// A resolver for provider hosts: the configured servers, or the system's.
pub fn resolver(cfg: &Dns) -> Result<TokioResolver, RedirectError> {
    if cfg.servers.is_empty() {
        let b = Resolver::builder_tokio().map_err(|e| RedirectError::Dns(e.to_string()))?;
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
    Ok(b.build())
}

struct Resolved {
    host: String,
    ips: Vec<IpAddr>,
    until: Instant,
}

/// Keep the kernel's provider set in step with the config and DNS, until the task is dropped.
pub async fn maintain(
    mut set: AddrSet,
    mut sink: Box<dyn CidrSink>,
    hosts: BTreeSet<String>,
    cfg: Dns,
) {
    let now = Instant::now();
    set.inherit(&sink.current(), now, cfg.grace);
    match set.sync(sink.as_mut(), now) {
        Ok((add, del)) => info!(added = add, removed = del, "provider address set loaded"),
        Err(e) => warn!(error = %e, "cannot write provider address set"),
    }
    let (tx, mut rx) = mpsc::channel::<Resolved>(64);
    let resolver = match resolver(&cfg) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(error = %e, "no DNS resolver: only static provider addresses are redirected");
            None
        }
    };
    if let Some(resolver) = resolver {
        for host in hosts {
            tokio::spawn(resolve_loop(
                resolver.clone(),
                host,
                cfg.clone(),
                tx.clone(),
            ));
        }
    }
    drop(tx);
    loop {
        let wake = set
            .next_expiry()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(r) => {
                    debug!(host = %r.host, addrs = ?r.ips, "provider host resolved");
                    set.confirm(&r.ips, r.until);
                }
                None => {
                    // No resolver tasks: only expiries are left to handle.
                    tokio::time::sleep_until(wake).await;
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        if let Err(e) = set.sync(sink.as_mut(), Instant::now()) {
            warn!(error = %e, "cannot update provider address set");
        }
    }
}

async fn resolve_loop(resolver: TokioResolver, host: String, cfg: Dns, tx: mpsc::Sender<Resolved>) {
    let mut failures: u32 = 0;
    loop {
        let wait = match resolver.lookup_ip(format!("{host}.")).await {
            Ok(lookup) => {
                failures = 0;
                let now = Instant::now();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
                    .clamp(cfg.min_ttl, cfg.max_ttl);
                let ips: Vec<IpAddr> = lookup.iter().collect();
                let until = now + ttl + cfg.grace;
                if tx
                    .send(Resolved {
                        host: host.clone(),
                        ips,
                        until,
                    })
                    .await
                    .is_err()
                {
                    return;
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

    #[derive(Default)]
    struct SetSink(BTreeSet<IpNet>);
    impl CidrSink for SetSink {
        fn current(&self) -> BTreeSet<IpNet> {
            self.0.clone()
        }
        fn insert(&mut self, net: IpNet) -> Result<(), RedirectError> {
            self.0.insert(net);
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

    #[test]
    fn resolved_addresses_live_for_ttl_plus_grace_and_static_ones_forever() {
        let t0 = Instant::now();
        let mut set = AddrSet::new([net("127.10.0.0/24")].into());
        let mut sink = SetSink::default();
        set.confirm(
            &["192.0.2.7".parse().unwrap()],
            t0 + Duration::from_secs(90),
        );
        set.sync(&mut sink, t0).unwrap();
        assert!(sink.0.contains(&net("192.0.2.7/32")));
        assert!(sink.0.contains(&net("127.10.0.0/24")));
        // Re-resolution moved the name elsewhere: the old address stays until its time is up.
        set.confirm(
            &["192.0.2.8".parse().unwrap()],
            t0 + Duration::from_secs(200),
        );
        set.sync(&mut sink, t0 + Duration::from_secs(60)).unwrap();
        assert!(sink.0.contains(&net("192.0.2.7/32")));
        set.sync(&mut sink, t0 + Duration::from_secs(91)).unwrap();
        assert!(!sink.0.contains(&net("192.0.2.7/32")));
        assert!(sink.0.contains(&net("192.0.2.8/32")));
        set.sync(&mut sink, t0 + Duration::from_secs(100_000))
            .unwrap();
        assert_eq!(sink.0, [net("127.10.0.0/24")].into());
    }

    #[test]
    fn inherited_entries_get_a_grace_period_and_stale_static_ones_go() {
        let t0 = Instant::now();
        let mut sink = SetSink([net("198.51.100.1/32"), net("10.9.0.0/16")].into());
        let mut set = AddrSet::new([net("127.10.0.1/32")].into());
        set.inherit(&sink.current(), t0, Duration::from_secs(600));
        set.sync(&mut sink, t0).unwrap();
        assert!(
            sink.0.contains(&net("198.51.100.1/32")),
            "kept for the grace period"
        );
        assert!(
            !sink.0.contains(&net("10.9.0.0/16")),
            "a CIDR no longer configured goes at once"
        );
        set.sync(&mut sink, t0 + Duration::from_secs(601)).unwrap();
        assert_eq!(sink.0, [net("127.10.0.1/32")].into());
    }

    #[test]
    fn a_later_confirmation_extends_never_shortens() {
        let t0 = Instant::now();
        let mut set = AddrSet::new(BTreeSet::new());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        set.confirm(&[ip], t0 + Duration::from_secs(500));
        set.confirm(&[ip], t0 + Duration::from_secs(100));
        assert_eq!(set.next_expiry(), Some(t0 + Duration::from_secs(500)));
    }
}
