//! Loading, pinning, adopting and detaching the eBPF programs (DESIGN §4, fail-closed).
//!
//! Layout under the pin dir (default /sys/fs/bpf/gateway):
//! `maps/<MAP>`, `progs/<prog>`, `links/<prog>`. Links are pinned, so the programs stay attached
//! while the daemon is down: a redirected connect then hits a closed port and is refused, never
//! sent direct. A restarted daemon adopts pins made from the same object for the same cgroup
//! (no second attachment); pins from another object or cgroup are replaced, the new programs
//! attached before the old links go so that no connect slips through in between.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use gateway_common::{Meta, ProxyConfig, maps, programs};
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

use super::RedirectError;

/// The eBPF object, built by build.rs (aya-build) and embedded in the binary.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// SHA-256 of the embedded object, hex.
pub fn object_sha256() -> [u8; 32] {
    Sha256::digest(EBPF_OBJECT).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Nothing was pinned: programs loaded, attached and pinned.
    Fresh,
    /// Pins of this object for this cgroup existed: reused as they are.
    Adopted,
    /// Pins of another object or cgroup existed: new programs attached, old links removed.
    Replaced,
}

pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    pub fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }
    fn all_programs() -> impl Iterator<Item = &'static str> {
        programs::SOCK_ADDR
            .into_iter()
            .chain([programs::SOCK_OPS, programs::EGRESS])
    }
}

pub struct AttachOptions<'a> {
    pub pin_dir: &'a Path,
    pub cgroup: &'a Path,
    pub proxy: ProxyConfig,
    pub ports: &'a [u16],
    /// Static provider nets, written before any new program is attached.
    pub static_nets: &'a BTreeMap<IpNet, u8>,
}

/// The loaded object with its (pinned) maps, after attach or adoption.
pub struct Attached {
    pub ebpf: Ebpf,
    pub mode: AttachMode,
    pub cgroup_id: u64,
}

fn pin_err(what: impl Into<String>) -> impl FnOnce(aya::pin::PinError) -> RedirectError {
    let what = what.into();
    move |e| RedirectError::Bpf {
        what,
        source: Box::new(e),
    }
}

fn bpf_err<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> RedirectError {
    let what = what.into();
    move |e| RedirectError::Bpf {
        what,
        source: Box::new(e),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RedirectError + '_ {
    move |source| RedirectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read the META record of existing pins, if there is one.
fn pinned_meta(layout: &PinLayout) -> Option<Meta> {
    let data = MapData::from_pin(layout.map(maps::META)).ok()?;
    let arr: Array<MapData, Meta> = Array::try_from(Map::Array(data)).ok()?;
    let meta = arr.get(&0, 0).ok()?;
    (meta.valid == 1).then_some(meta)
}

fn all_links_pinned(layout: &PinLayout) -> bool {
    PinLayout::all_programs().all(|p| layout.link(p).exists())
}

fn loader_with_pins(layout: &PinLayout) -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    for name in maps::ALL {
        loader.map_pin_path(name, layout.map(name));
    }
    loader
}

/// Attach the programs to `cgroup`, or adopt pins that already do exactly that.
pub fn attach_or_adopt(opts: &AttachOptions<'_>) -> Result<Attached, RedirectError> {
    super::cgroup::ensure_bpffs(opts.pin_dir)?;
    let layout = PinLayout::new(opts.pin_dir);
    let sha = object_sha256();
    let cgroup_id = super::cgroup::cgroup_id(opts.cgroup)?;

    let existing = opts.pin_dir.exists();
    let meta = pinned_meta(&layout);
    let adopt = all_links_pinned(&layout)
        && meta.is_some_and(|m| m.object_sha256 == sha && m.cgroup_id == cgroup_id);

    let (ebpf, mode, old_links) = if adopt {
        let mut ebpf = loader_with_pins(&layout)
            .load(EBPF_OBJECT)
            .map_err(bpf_err("open pinned maps"))?;
        write_providers(&mut ebpf, opts.static_nets.iter().map(|(n, f)| (*n, *f)))?;
        write_config(&mut ebpf, opts, sha, cgroup_id)?;
        (ebpf, AttachMode::Adopted, Vec::new())
    } else {
        // What the old programs redirect today, carried over so the new ones start with it:
        // between the swap of the links and the first refresh, nothing may go direct.
        let carried = if existing {
            old_providers(&layout)
        } else {
            Vec::new()
        };
        // Keep the old links alive (and so the old programs attached) until the new ones are.
        let old_links = if existing {
            take_down_pins(&layout)?
        } else {
            Vec::new()
        };
        for dir in ["maps", "links", "progs"] {
            let d = opts.pin_dir.join(dir);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let what = if nix::unistd::geteuid().is_root() {
            "load eBPF object"
        } else {
            "load eBPF object (the gateway needs root: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
        };
        let mut ebpf = loader_with_pins(&layout)
            .load(EBPF_OBJECT)
            .map_err(bpf_err(what))?;
        // Everything the programs read is in place before the first one is attached.
        let n = carried.len();
        write_providers(
            &mut ebpf,
            carried
                .into_iter()
                .chain(opts.static_nets.iter().map(|(n, f)| (*n, *f))),
        )?;
        if n > 0 {
            tracing::info!(carried = n, "provider set carried over to the new programs");
        }
        write_config(&mut ebpf, opts, sha, cgroup_id)?;
        attach_all(&mut ebpf, &layout, opts.cgroup)?;
        let mode = if existing && !old_links.is_empty() {
            AttachMode::Replaced
        } else {
            AttachMode::Fresh
        };
        (ebpf, mode, old_links)
    };

    // The new programs are attached and configured: the old links may go now.
    drop(old_links);
    Ok(Attached {
        ebpf,
        mode,
        cgroup_id,
    })
}

/// Load program `$name` as `$ty`, attach it with `$attach`, pin its link and the program.
/// (A macro: the three program types share these steps but no trait that names them.)
macro_rules! attach_pinned {
    ($ebpf:expr, $layout:expr, $cgroup:expr, $name:expr, $ty:ty, |$prog:ident| $attach:expr) => {{
        let name = $name;
        let $prog: &mut $ty = $ebpf
            .program_mut(name)
            .ok_or(RedirectError::MissingProgram(name))?
            .try_into()
            .map_err(bpf_err(format!("program {name}")))?;
        $prog.load().map_err(bpf_err(format!("load {name}")))?;
        let id = $attach.map_err(bpf_err(format!("attach {name} to {}", $cgroup.display())))?;
        let link = $prog
            .take_link(id)
            .map_err(bpf_err(format!("take link {name}")))?;
        let link = FdLink::try_from(link).map_err(bpf_err(format!("link {name}")))?;
        link.pin($layout.link(name))
            .map_err(pin_err(format!("pin link {name}")))?;
        $prog
            .pin($layout.prog(name))
            .map_err(pin_err(format!("pin program {name}")))?;
    }};
}

/// With bpf_link (kernel >= 5.7) a cgroup attachment takes no flags and always coexists with
/// other programs (multi-attach semantics): `Single` is aya's way of passing 0.
fn attach_all(ebpf: &mut Ebpf, layout: &PinLayout, cgroup: &Path) -> Result<(), RedirectError> {
    let cg = File::open(cgroup).map_err(io_err(cgroup))?;
    for name in programs::SOCK_ADDR {
        attach_pinned!(ebpf, layout, cgroup, name, CgroupSockAddr, |p| p
            .attach(&cg, CgroupAttachMode::Single));
    }
    attach_pinned!(ebpf, layout, cgroup, programs::SOCK_OPS, SockOps, |p| p
        .attach(&cg, CgroupAttachMode::Single));
    attach_pinned!(ebpf, layout, cgroup, programs::EGRESS, CgroupSkb, |p| p
        .attach(&cg, CgroupSkbAttachType::Egress, CgroupAttachMode::Single));
    Ok(())
}

/// The provider entries of the pinned maps (an earlier daemon's), to carry over. A map that
/// cannot be read (another layout) carries nothing; the new set is then filled from the config
/// and DNS, and that is logged.
fn old_providers(layout: &PinLayout) -> Vec<(IpNet, u8)> {
    let v4 = MapData::from_pin(layout.map(maps::PROVIDERS_V4))
        .ok()
        .and_then(|d| LpmTrie::try_from(Map::LpmTrie(d)).ok());
    let v6 = MapData::from_pin(layout.map(maps::PROVIDERS_V6))
        .ok()
        .and_then(|d| LpmTrie::try_from(Map::LpmTrie(d)).ok());
    let (Some(v4), Some(v6)) = (v4, v6) else {
        tracing::warn!(
            "the pinned provider set cannot be read; the new programs start with the configured addresses only"
        );
        return Vec::new();
    };
    use super::addrset::CidrSink as _;
    super::addrset::BpfCidrs { v4, v6 }
        .current()
        .into_iter()
        .map(|(n, f)| (n, f | gateway_common::ADDR_PROVIDER))
        .collect()
}

/// Write provider nets into the object's tries (later entries for the same net win).
fn write_providers(
    ebpf: &mut Ebpf,
    nets: impl Iterator<Item = (IpNet, u8)>,
) -> Result<(), RedirectError> {
    let nets: Vec<(IpNet, u8)> = nets.collect();
    {
        let mut v4: LpmTrie<&mut MapData, [u8; 4], u8> = LpmTrie::try_from(
            ebpf.map_mut(maps::PROVIDERS_V4)
                .ok_or(RedirectError::MissingMap(maps::PROVIDERS_V4))?,
        )
        .map_err(bpf_err("GW_PROVIDERS_V4"))?;
        for (net, f) in &nets {
            if let IpNet::V4(n) = net {
                v4.insert(&Key::new(n.prefix_len().into(), n.network().octets()), f, 0)
                    .map_err(bpf_err("write GW_PROVIDERS_V4"))?;
            }
        }
    }
    let mut v6: LpmTrie<&mut MapData, [u8; 16], u8> = LpmTrie::try_from(
        ebpf.map_mut(maps::PROVIDERS_V6)
            .ok_or(RedirectError::MissingMap(maps::PROVIDERS_V6))?,
    )
    .map_err(bpf_err("GW_PROVIDERS_V6"))?;
    for (net, f) in &nets {
        if let IpNet::V6(n) = net {
            v6.insert(&Key::new(n.prefix_len().into(), n.network().octets()), f, 0)
                .map_err(bpf_err("write GW_PROVIDERS_V6"))?;
        }
    }
    Ok(())
}

/// Write the proxy address, the port set and META (last: it marks the pins complete).
fn write_config(
    ebpf: &mut Ebpf,
    opts: &AttachOptions<'_>,
    sha: [u8; 32],
    cgroup_id: u64,
) -> Result<(), RedirectError> {
    {
        let mut proxy: Array<&mut MapData, ProxyConfig> = Array::try_from(
            ebpf.map_mut(maps::PROXY)
                .ok_or(RedirectError::MissingMap(maps::PROXY))?,
        )
        .map_err(bpf_err("GW_PROXY"))?;
        proxy
            .set(0, opts.proxy, 0)
            .map_err(bpf_err("write GW_PROXY"))?;
    }
    {
        let mut ports: HashMap<&mut MapData, u16, u8> = HashMap::try_from(
            ebpf.map_mut(maps::PORTS)
                .ok_or(RedirectError::MissingMap(maps::PORTS))?,
        )
        .map_err(bpf_err("GW_PORTS"))?;
        let stale: Vec<u16> = ports
            .keys()
            .filter_map(Result::ok)
            .filter(|p| !opts.ports.contains(p))
            .collect();
        for p in opts.ports {
            ports.insert(p, 1, 0).map_err(bpf_err("write GW_PORTS"))?;
        }
        for p in stale {
            ports.remove(&p).map_err(bpf_err("prune GW_PORTS"))?;
        }
    }
    let mut meta: Array<&mut MapData, Meta> = Array::try_from(
        ebpf.map_mut(maps::META)
            .ok_or(RedirectError::MissingMap(maps::META))?,
    )
    .map_err(bpf_err("GW_META"))?;
    meta.set(
        0,
        Meta {
            object_sha256: sha,
            cgroup_id,
            valid: 1,
            _pad: 0,
        },
        0,
    )
    .map_err(bpf_err("write GW_META"))?;
    Ok(())
}

/// Unpin everything under the pin dir. Returns the old links, still alive while held.
fn take_down_pins(layout: &PinLayout) -> Result<Vec<FdLink>, RedirectError> {
    let mut links = Vec::new();
    let links_dir = layout.root.join("links");
    if let Ok(rd) = std::fs::read_dir(&links_dir) {
        for entry in rd.flatten() {
            let path = entry.path();
            match PinnedLink::from_pin(&path) {
                Ok(pinned) => links.push(pinned.unpin().map_err(io_err(&path))?),
                Err(_) => std::fs::remove_file(&path).map_err(io_err(&path))?,
            }
        }
    }
    for dir in ["progs", "maps"] {
        let d = layout.root.join(dir);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for entry in rd.flatten() {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
    }
    for dir in ["links", "progs", "maps"] {
        let d = layout.root.join(dir);
        if d.exists() {
            std::fs::remove_dir(&d).map_err(io_err(&d))?;
        }
    }
    Ok(links)
}

/// What `gateway detach` removed.
#[derive(Debug, Default)]
pub struct DetachReport {
    pub links: usize,
    pub existed: bool,
}

/// Remove every pin: the programs detach and redirected providers are reached directly again.
pub fn detach(pin_dir: &Path) -> Result<DetachReport, RedirectError> {
    if !pin_dir.exists() {
        return Ok(DetachReport::default());
    }
    let layout = PinLayout::new(pin_dir);
    let links = take_down_pins(&layout)?;
    let n = links.len();
    drop(links);
    std::fs::remove_dir(pin_dir).map_err(io_err(pin_dir))?;
    Ok(DetachReport {
        links: n,
        existed: true,
    })
}
