//! Redirect: the first stage of the data path (DESIGN §1, §4).
//!
//! Loads the eBPF programs from `gateway-ebpf` (or adopts pinned ones), attaches them to the
//! configured cgroup, keeps the provider address set current, forwards the programs' aya-log
//! output into tracing, and exposes the original destination + identity of each redirected
//! connection through [`origdst::OrigDst`].

pub mod addrset;
pub mod cgroup;
pub mod dns;
pub mod identity;
pub mod loader;
pub mod origdst;
pub mod pods;
pub mod relay;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use aya::maps::{HashMap, MapData, lpm_trie::LpmTrie};
use gateway_common::{PROXY_F_DNS, PROXY_F_V6, ProxyConfig, maps};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use crate::{config::Config, provider::Catalog};

pub use loader::{AttachMode, DetachReport, detach};

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("{what}: {}", chain(source.as_ref()))]
    Bpf {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("DNS resolver: {0}")]
    Dns(String),
    #[error("[groups]: {0}")]
    Groups(String),
}

/// An error and its sources on one line (aya's errors keep the errno in `source()`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// The running redirect stage.
pub struct Redirect {
    pub orig_dst: Arc<dyn origdst::OrigDst>,
    /// Who sent each redirected DNS datagram, and to which server.
    pub udp_flows: Arc<dyn origdst::UdpOrigDst>,
    pub identity: Arc<identity::IdentityResolver>,
    /// The kernel's provider set: the DNS proxy writes what workloads learn into it.
    pub set: Arc<addrset::ProviderSet>,
    pub mode: AttachMode,
    pub cgroup: PathBuf,
    /// The kernel relay for spliced connections; `None`: splice(2) relays them (logged).
    pub relay: Option<Arc<relay::RelayMaps>>,
}

fn proxy_config(cfg: &Config, v6_listening: bool, own_cgroup: u64) -> ProxyConfig {
    let v4 = match cfg.listen.addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("validated: listen.addr is IPv4"),
    };
    let (v6_addr, v6_port) = match cfg.listen.addr6 {
        Some(SocketAddr::V6(a)) if v6_listening => {
            (origdst::ip_to_words((*a.ip()).into()), a.port())
        }
        _ => ([0; 4], 0),
    };
    ProxyConfig {
        v4_addr: u32::from_ne_bytes(v4.ip().octets()),
        v6_addr,
        v4_port: v4.port(),
        v6_port,
        bypass_mark: cfg.redirect.bypass_mark,
        flags: if v6_listening && v6_port != 0 {
            PROXY_F_V6
        } else {
            0
        } | if cfg.dns.learn { PROXY_F_DNS } else { 0 },
        bypass_cgroup: own_cgroup,
    }
}

fn take<T>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<T, RedirectError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(RedirectError::MissingMap(name))?;
    T::try_from(map).map_err(|e| RedirectError::Bpf {
        what: name.into(),
        source: Box::new(e),
    })
}

impl Redirect {
    /// Attach (or adopt), then start the background tasks. Must run inside a tokio runtime, with
    /// the TCP and (when `dns.learn`) UDP listeners already bound: the first redirected call
    /// must find them.
    pub fn start(
        cfg: &Config,
        catalog: &Catalog,
        v6_listening: bool,
    ) -> Result<Self, RedirectError> {
        let cg_root = cgroup::cgroup2_mount()?;
        let cgroup = cfg
            .redirect
            .cgroup
            .clone()
            .unwrap_or_else(|| cg_root.clone());
        cgroup::check_cgroup_dir(&cgroup)?;
        let sha = loader::object_sha256();
        let own_cgroup = cgroup::own_cgroup_id(&cg_root)?;
        if own_cgroup == cgroup::cgroup_id(&cgroup)? {
            warn!(
                cgroup = %cgroup.display(),
                "the gateway runs in the very cgroup it covers: its exemption rests on the socket mark alone (CAP_NET_ADMIN); run it in a cgroup of its own (a systemd unit)"
            );
        }
        let static_nets = catalog.static_cidrs();
        let attached = loader::attach_or_adopt(&loader::AttachOptions {
            pin_dir: &cfg.redirect.pin_dir,
            cgroup: &cgroup,
            proxy: proxy_config(cfg, v6_listening, own_cgroup),
            ports: &cfg.redirect.ports,
            static_nets: &static_nets,
        })?;
        info!(
            mode = ?attached.mode,
            cgroup = %cgroup.display(),
            cgroup_id = attached.cgroup_id,
            pin_dir = %cfg.redirect.pin_dir.display(),
            object_sha256 = %loader::hex(&sha),
            "eBPF redirect in force",
        );
        let mut ebpf = attached.ebpf;

        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_log_forwarder(logger),
            Err(e) => warn!(error = %e, "eBPF log forwarding unavailable"),
        }

        let relay = if cfg.intercept.kernel_relay {
            match relay::load(&mut ebpf) {
                Ok(r) => {
                    info!("kernel relay for spliced connections in force (sk_skb verdict)");
                    Some(Arc::new(r))
                }
                Err(e) => {
                    warn!(error = %e, "kernel relay unavailable: spliced connections are relayed with splice(2)");
                    None
                }
            }
        } else {
            info!("intercept.kernel_relay is off: spliced connections are relayed with splice(2)");
            None
        };
        let flows: HashMap<MapData, _, _> = take(&mut ebpf, maps::FLOWS)?;
        let udp_flows: HashMap<MapData, _, _> = take(&mut ebpf, maps::UDP_FLOWS)?;
        let v4: LpmTrie<MapData, [u8; 4], u8> = take(&mut ebpf, maps::PROVIDERS_V4)?;
        let v6: LpmTrie<MapData, [u8; 16], u8> = take(&mut ebpf, maps::PROVIDERS_V6)?;
        let set = Arc::new(addrset::ProviderSet::new(
            addrset::AddrSet::new(static_nets),
            Box::new(addrset::BpfCidrs { v4, v6 }),
            &cfg.dns,
        )?);
        tokio::spawn(addrset::maintain(
            set.clone(),
            catalog.resolvable_hosts(),
            cfg.dns.clone(),
        ));
        // Maps and pins outlive `ebpf`: the maps taken above hold their own fds, and the links
        // are pinned, so dropping the object here detaches nothing.
        drop(ebpf);

        Ok(Self {
            orig_dst: Arc::new(origdst::BpfOrigDst::new(flows)),
            udp_flows: Arc::new(origdst::BpfUdpFlows::new(udp_flows)),
            set,
            identity: Arc::new(
                identity::IdentityResolver::new(
                    Some(cg_root.clone()),
                    cfg.redirect.identity_root.clone().unwrap_or(cg_root),
                )
                .with_pod_names(pods::start(&cfg.kubernetes))
                .with_groups(Arc::new(
                    identity::groups::WorkloadGroups::new(&cfg.groups)
                        .map_err(|(k, r)| RedirectError::Groups(format!("`{k}`: {r}")))?,
                )),
            ),
            mode: attached.mode,
            cgroup,
            relay,
        })
    }
}

fn spawn_log_forwarder(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // The logger owns its ring-buffer fd and moves into the AsyncFd, so the fd cannot close
    // while registered: the soundness problem behind the deprecation does not arise here, and
    // the replacement is `unsafe`, which this crate forbids.
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(logger, tokio::io::Interest::READABLE);
    let mut fd = match fd {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "eBPF log forwarding unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!(error = %e, "eBPF log forwarding stopped");
                    return;
                }
            }
        }
    });
}
