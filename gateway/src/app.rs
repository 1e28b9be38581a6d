//! The daemon (`gateway run`) and the one-shot commands (`check`, `detach`): wiring the stages
//! of the data path together. Errors here are either config errors (exit 64) or startup errors.

use std::{net::SocketAddr, path::Path, sync::Arc};

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    admin::{Admin, AdminError},
    config::{Config, ConfigError},
    hold::{HoldService, Holds, ids::Ids, webhook::Webhook},
    intercept::{Intercept, InterceptConfig, Interception},
    provider::Catalog,
    redirect::{self, Redirect, RedirectError},
    tls::{Terminator, TlsError, ca::Ca},
    upstream::pool::{PoolError, Upstreams, root_store},
    vault::{Vault, VaultError},
    workers::{Workers, WorkersError},
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("redirect: {0}")]
    Redirect(#[from] RedirectError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("upstream: {0}")]
    Upstream(#[from] PoolError),
    #[error(transparent)]
    Workers(#[from] WorkersError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("CA trust: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Oidc(#[from] crate::oidc::OidcError),
}

impl AppError {
    /// sysexits: 64 (EX_USAGE) for a bad config, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) => 64,
            _ => 1,
        }
    }
}

/// Run the daemon until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    info!(config = %cfg.effective(), "effective configuration");
    crate::export::check_env(&cfg.exports).map_err(|(key, reason)| ConfigError::Invalid {
        origin: "config".into(),
        key,
        reason,
    })?;
    let catalog = Arc::new(Catalog::from_config(&cfg));
    let nofile = raise_nofile();
    // A fleet root (`[ca] root`): this node's intermediate first; no start without one.
    let fleet_ca = crate::tls::fleet_ca::renew::start(&cfg)
        .await
        .map_err(TlsError::from)?
        .map(|(handle, _)| handle);
    let interception = Arc::new(interception(&cfg, fleet_ca)?);
    let verifier = match &cfg.oidc {
        Some(o) => Some(Arc::new(
            crate::oidc::Verifier::new(o, Some(cfg.redirect.bypass_mark))
                .map_err(|e| AppError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    let fleet = Arc::new(crate::fleet::Fleet::new(
        cfg.fleet.as_ref(),
        cfg.node_name(),
        interception.hold.holds.clone(),
        cfg.hold.clone(),
        crate::fleet::auth::Auth::new(verifier.clone()),
    ));
    if let Some(f) = &cfg.fleet {
        crate::fleet::bus::start(
            f,
            fleet.clone(),
            interception.journal.clone(),
            &cfg.state_dir,
        )
        .await
        .map_err(|e| AppError::Usage(e.to_string()))?;
    }
    let admin = Arc::new(Admin {
        fleet: fleet.clone(),
        hold: cfg.hold.clone(),
        verifier: verifier.clone(),
        journal: interception.journal.clone(),
    });
    crate::admin::serve(crate::admin::socket_path(&cfg.state_dir), admin.clone()).await?;
    // The HTTPS admin API and the approval page, when configured (issue I).
    crate::web::start(&cfg, admin, interception.terminator.issuing.clone()).await?;
    crate::metrics::serve(&cfg.metrics).await?;
    if let Some(j) = &interception.journal {
        crate::export::start(&cfg.exports, j, &cfg.node_name())?;
    }

    // Listen before attaching, so the first redirected connect finds the proxy.
    let v4 = TcpListener::bind(cfg.listen.addr)
        .await
        .map_err(|source| AppError::Listen {
            addr: cfg.listen.addr,
            source,
        })?;
    let v6 = match cfg.listen.addr6 {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(%addr, error = %e, "no IPv6 listener: redirected IPv6 dials will be refused");
                None
            }
        },
        None => None,
    };

    // The workloads' DNS lands on the same address and port, over UDP (TCP queries come
    // through the TCP listener). Bound before attaching, like the TCP listeners; a socket that
    // cannot be bound stops the start: the programs would send every query nowhere.
    let mut udp = Vec::new();
    if cfg.dns.learn {
        let mut addrs = vec![v4.local_addr()?];
        if let Some(l6) = &v6 {
            addrs.push(l6.local_addr()?);
        }
        for addr in addrs {
            let s = std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|source| AppError::Listen { addr, source })?;
            udp.push((s, addr));
        }
    }

    let redirect = Redirect::start(&cfg, &catalog, v6.is_some())?;
    let dns = cfg.dns.learn.then(|| {
        Arc::new(redirect::dns::DnsProxy::new(
            catalog.clone(),
            redirect.set.clone(),
            cfg.redirect.bypass_mark,
            cfg.dns.query_timeout,
            cfg.dns.max_inflight,
            udp.iter().map(|(_, a)| *a).collect(),
        ))
    });
    if let Some(dns) = &dns {
        redirect::dns::spawn_udp(dns.clone(), udp, redirect.udp_flows.clone())?;
    }
    let limits = Arc::new(crate::limits::Limits::new(
        cfg.limits.per_workload,
        cfg.limits.max_connections,
        nofile,
    ));
    info!(
        per_workload = limits.per_workload(),
        max_connections = limits.total(),
        dns_learning = cfg.dns.learn,
        "connection bounds"
    );
    let intercept = Arc::new(Intercept::new(
        catalog.clone(),
        redirect.orig_dst.clone(),
        redirect.identity.clone(),
        interception,
        InterceptConfig {
            client_hello_timeout: cfg.intercept.client_hello_timeout,
            connect_timeout: cfg.intercept.connect_timeout,
            handshake_timeout: cfg.intercept.handshake_timeout,
            header_read_timeout: cfg.intercept.header_read_timeout,
            bypass_mark: cfg.redirect.bypass_mark,
            exempt_namespaces: cfg.kubernetes.exempt_namespaces.clone(),
            kernel_relay: redirect.relay.clone(),
        },
        limits,
        dns,
    ));
    let workers = Arc::new(Workers::start(cfg.listen.workers)?);
    let mut listening = vec![v4.local_addr()?];
    tokio::spawn(intercept.clone().serve(v4, workers.clone()));
    if let Some(v6) = v6 {
        listening.push(v6.local_addr()?);
        tokio::spawn(intercept.clone().serve(v6, workers.clone()));
    }
    info!(
        listen = ?listening,
        cgroup = %redirect.cgroup.display(),
        mode = ?redirect.mode,
        providers = catalog.iter().count(),
        workers = workers.len(),
        "gateway ready"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!(
        pin_dir = %cfg.redirect.pin_dir.display(),
        "stopping; programs stay attached, provider connections are refused until restart or `gateway detach`"
    );
    Ok(())
}

/// The state dir, created 0755 when missing (the CA certificate in it must be readable; the CA
/// key and the vault file are 0600 themselves).
pub fn ensure_state_dir(cfg: &Config) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !cfg.state_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&cfg.state_dir)?;
    }
    Ok(())
}

/// CA, leaf cache, upstream TLS and the vault: everything interception needs, checked before
/// the programs attach so a bad vault or CA stops the start, not the first request.
fn interception(
    cfg: &Config,
    fleet_ca: Option<crate::tls::issuing::IssuingHandle>,
) -> Result<Interception, AppError> {
    ensure_state_dir(cfg)?;
    let terminator = match fleet_ca {
        Some(handle) => Terminator::with_issuer(handle, cfg.upstream.leaf_cache)?,
        None => {
            let (ca, created) = Ca::load_or_create(&cfg.state_dir)?;
            info!(
                cert = %ca.dir.join(crate::tls::ca::CA_CERT).display(),
                created,
                "internal CA ready; clients must trust this certificate (`gateway ca install`)"
            );
            Terminator::new(Arc::new(ca), cfg.upstream.leaf_cache)?
        }
    };
    let mut vault = Vault::new(&cfg.vault, &cfg.state_dir)?;
    vault.check()?;
    vault.watch();
    let roots = root_store(&cfg.upstream.extra_roots)?;
    let upstreams = Arc::new(Upstreams::new(
        roots,
        cfg.redirect.bypass_mark,
        cfg.intercept.connect_timeout,
        cfg.upstream.idle_timeout,
    ));
    // Vertex AI entries are service-account keys: tokens are minted over the upstream TLS.
    vault.enable_gcp(crate::vault::gcp::Minter::new(
        upstreams.tls_h1(),
        cfg.redirect.bypass_mark,
        cfg.intercept.connect_timeout,
    ));
    let policy = Arc::new(
        crate::policy::Policy::new(&cfg.rules, &cfg.policy)
            .map_err(|e| AppError::Usage(format!("rules: {e}")))?,
    );
    let webhook = match &cfg.hold.webhook {
        Some(url) => Some(Arc::new(
            Webhook::new(url, upstreams.tls_h1(), cfg.redirect.bypass_mark)
                .map_err(|e| AppError::Usage(format!("hold.webhook: {e}")))?,
        )),
        None => None,
    };
    // The credential detectors every request head goes through, compiled now rather than
    // on the first request.
    crate::policy::credentials::warm();
    Ok(Interception {
        terminator: Arc::new(terminator),
        upstreams,
        hold: Arc::new(HoldService {
            holds: Arc::new(Holds::new(
                &cfg.hold,
                Ids::open(&cfg.state_dir).map_err(|e| AppError::Usage(e.to_string()))?,
            )),
            cfg: cfg.hold.clone(),
            webhook,
            policy: policy.clone(),
        }),
        vault: Arc::new(vault),
        policy,
        max_request_body: cfg.limits.max_request_body(),
        max_streams: cfg.limits.streams_per_connection(),
        max_ws_message: cfg.limits.max_ws_message(),
        journal: if cfg.journal.enabled {
            Some(Arc::new(crate::journal::Journal::open(
                &cfg.journal,
                &cfg.state_dir,
            )?))
        } else {
            None
        },
    })
}

/// Every connection costs the gateway two descriptors (client and upstream): lift the soft
/// limit to the hard one, as nginx's worker_rlimit_nofile would. Returns the limit in force
/// (the connection budget is derived from it).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                info!(from = soft, to = hard, "raised the open files limit");
                hard
            }
            Err(e) => {
                warn!(error = %e, soft, "cannot raise the open files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// `gateway check`: the config's verdict as one line.
pub fn check(path: &Path) -> Result<String, AppError> {
    let cfg = Config::load(Some(path))?;
    crate::export::check_env(&cfg.exports).map_err(|(key, reason)| ConfigError::Invalid {
        origin: path.display().to_string(),
        key,
        reason,
    })?;
    let catalog = Catalog::from_config(&cfg);
    Ok(format!(
        "{}: ok ({} providers, ports {:?}, listen {})",
        path.display(),
        catalog.iter().count(),
        cfg.redirect.ports,
        cfg.listen.addr
    ))
}

/// `gateway detach`: remove the pins, and say what that means.
pub fn detach(cfg: &Config) -> Result<String, AppError> {
    let pin_dir = &cfg.redirect.pin_dir;
    let report = redirect::detach(pin_dir)?;
    Ok(if report.existed {
        format!(
            "detached: removed {} program links and their maps under {}; connections to providers now go direct, unchecked, until `gateway run` starts again",
            report.links,
            pin_dir.display()
        )
    } else {
        format!("nothing to detach: no pins under {}", pin_dir.display())
    })
}
