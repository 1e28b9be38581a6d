//! Who opened a redirected connection: the kernel's record (pid, tgid, uid, gid, comm, cgroup
//! id) plus what userspace can add: the user name, the cgroup path, and from that path a systemd
//! unit, a user slice, a Kubernetes pod UID or a container id where present, read only from
//! positions the system owns below the identity root (see `place`).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tracing::warn;

use super::origdst::ConnRecord;

pub mod groups;
mod place;

pub use place::CgroupOwner;
use place::Placed;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub user: Option<String>,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub unit: Option<String>,
    pub slice: Option<String>,
    pub pod_uid: Option<String>,
    /// From the Kubernetes API, when it is configured and knows the pod.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_id: Option<String>,
    /// The `[groups]` it is in ([`groups::WorkloadGroups::of`]), decided when it is resolved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Identity {
    /// What the kernel recorded, and nothing userspace adds (no user name, cgroup, unit, pod).
    pub fn of_record(rec: &ConnRecord) -> Self {
        Self {
            pid: rec.pid,
            tgid: rec.tgid,
            uid: rec.uid,
            gid: rec.gid,
            comm: rec.comm.clone(),
            cgroup_id: rec.cgroup_id,
            ..Default::default()
        }
    }
}

/// The identity fields rules and key selections can name; each given one must match (a cgroup
/// is a path prefix: the cgroup itself or one below it).
pub struct Match<'a> {
    pub uid: Option<u32>,
    pub user: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl Match<'_> {
    pub fn matches(&self, id: &Identity) -> bool {
        let same = |want: Option<&str>, have: &Option<String>| {
            want.is_none_or(|w| have.as_deref() == Some(w))
        };
        self.uid.is_none_or(|u| u == id.uid)
            && same(self.user, &id.user)
            && same(self.unit, &id.unit)
            && same(self.pod_uid, &id.pod_uid)
            && self.cgroup.is_none_or(|c| {
                id.cgroup.as_deref().is_some_and(|have| {
                    have == c || have.starts_with(&format!("{}/", c.trim_end_matches('/')))
                })
            })
    }
}

/// The owner a cgroup path names by position alone, for a caller whose kernel-reported uid is
/// `uid`. `path` is relative to the identity root. The directories' owners are not looked at:
/// [`IdentityResolver`] does that too.
pub fn parse_cgroup_path(path: &str, uid: u32) -> CgroupOwner {
    Placed::new(&components(path)).owner(usize::MAX, uid)
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// Resolves identities; caches user names and cgroups.
pub struct IdentityResolver {
    /// The cgroup v2 mount; `None`: no cgroup lookups.
    cgroup_root: Option<PathBuf>,
    /// The identity root's components below the mount; `None` when it is not below it.
    identity_root: Option<Vec<String>>,
    pods: Option<Arc<super::pods::PodNames>>,
    groups: Arc<groups::WorkloadGroups>,
    users: Mutex<HashMap<u32, Option<String>>>,
    /// By cgroup id; `None`: the id was not found in the tree (a cgroup id is never reused).
    cgroups: Mutex<HashMap<u64, Option<Arc<Cgroup>>>>,
}

/// One cgroup, looked up once.
struct Cgroup {
    /// Relative to the cgroup v2 mount, starting with '/'.
    path: String,
    placed: Placed,
    /// How many directories, from the identity root down, are owned by root (counted only as
    /// far as `placed` needs).
    owned: usize,
}

const MAX_CACHE: usize = 4096;

impl IdentityResolver {
    /// `cgroup_root` is the cgroup v2 mount (`None`: no cgroup lookups); `identity_root` the
    /// directory below it (or the mount itself) where systemd's and the kubelet's trees start.
    /// Units, slices and pods are read only from positions below the identity root; a cgroup
    /// outside it has none.
    pub fn new(cgroup_root: Option<PathBuf>, identity_root: PathBuf) -> Self {
        let below = cgroup_root.as_ref().and_then(|m| {
            identity_root
                .strip_prefix(m)
                .ok()?
                .components()
                .map(|c| match c {
                    Component::Normal(s) => s.to_str().map(str::to_string),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
        });
        if let Some(m) = &cgroup_root
            && below.is_none()
        {
            warn!(
                identity_root = %identity_root.display(),
                cgroup_root = %m.display(),
                "the identity root is not below the cgroup v2 mount: no connection gets a unit, slice or pod",
            );
        }
        Self {
            cgroup_root,
            identity_root: below,
            pods: None,
            groups: Default::default(),
            users: Mutex::new(HashMap::new()),
            cgroups: Mutex::new(HashMap::new()),
        }
    }

    /// Names for pod UIDs (the Kubernetes API), when configured.
    pub fn with_pod_names(mut self, pods: Option<Arc<super::pods::PodNames>>) -> Self {
        self.pods = pods;
        self
    }

    /// The `[groups]` every resolved identity is matched against.
    pub fn with_groups(mut self, groups: Arc<groups::WorkloadGroups>) -> Self {
        self.groups = groups;
        self
    }

    /// Resolve on this thread: may call getpwuid and walk the cgroup tree. For tests and the
    /// CLI; connections use [`Self::resolve_async`].
    pub fn resolve(&self, rec: &ConnRecord) -> Identity {
        let user = self.user_name(rec.uid);
        let cgroup = self.cgroup(rec.tgid, rec.cgroup_id);
        self.identity(rec, user, cgroup.as_deref())
    }

    /// Resolve from the caches when both know the caller, else on the blocking pool: an async
    /// worker never waits on getpwuid or a walk of the cgroup tree.
    pub async fn resolve_async(self: &Arc<Self>, rec: &ConnRecord) -> Identity {
        if let (Some(user), Some(cgroup)) =
            (self.cached_user(rec.uid), self.cached_cgroup(rec.cgroup_id))
        {
            return self.identity(rec, user, cgroup.as_deref());
        }
        let (this, r) = (self.clone(), rec.clone());
        match tokio::task::spawn_blocking(move || this.resolve(&r)).await {
            Ok(id) => id,
            Err(e) => {
                warn!(error = %e, "identity lookup failed: the kernel's record alone");
                self.identity(rec, None, None)
            }
        }
    }

    fn identity(&self, rec: &ConnRecord, user: Option<String>, cg: Option<&Cgroup>) -> Identity {
        let owner = cg
            .map(|c| c.placed.owner(c.owned, rec.uid))
            .unwrap_or_default();
        let named = owner
            .pod_uid
            .as_deref()
            .and_then(|u| self.pods.as_ref()?.get(u));
        let mut id = Identity {
            user,
            cgroup: cg.map(|c| c.path.clone()),
            unit: owner.unit,
            slice: owner.slice,
            pod_uid: owner.pod_uid,
            pod_namespace: named.as_ref().map(|n| n.0.clone()),
            pod_name: named.map(|n| n.1),
            container_id: owner.container_id,
            ..Identity::of_record(rec)
        };
        id.groups = self.groups.of(&id);
        id
    }

    fn cached_user(&self, uid: u32) -> Option<Option<String>> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(&uid).cloned()
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        if let Some(u) = self.cached_user(uid) {
            return u;
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() >= MAX_CACHE {
            users.clear();
        }
        users.insert(uid, name.clone());
        name
    }

    /// `Some(found)` when cgroup `id` needs no lookup.
    fn cached_cgroup(&self, id: u64) -> Option<Option<Arc<Cgroup>>> {
        if self.cgroup_root.is_none() {
            return Some(None);
        }
        let cgroups = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        cgroups.get(&id).cloned()
    }

    fn cgroup(&self, tgid: u32, id: u64) -> Option<Arc<Cgroup>> {
        if let Some(c) = self.cached_cgroup(id) {
            return c;
        }
        let found = self.lookup(tgid, id).map(Arc::new);
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        if cgroups.len() >= MAX_CACHE {
            cgroups.clear();
        }
        cgroups.insert(id, found.clone());
        found
    }

    /// The cgroup with id `id`: its path (from /proc/<tgid>/cgroup when that process still
    /// lives there, else by walking the hierarchy), what its positions name, and how far down
    /// its directories are root's.
    fn lookup(&self, tgid: u32, id: u64) -> Option<Cgroup> {
        let mount = self.cgroup_root.as_ref()?;
        let path = proc_cgroup(tgid)
            .filter(|rel| {
                rel.split('/').all(|c| c != "." && c != "..")
                    && ino(&mount.join(rel.trim_start_matches('/'))) == Some(id)
            })
            .or_else(|| walk_for(mount, id))?;
        let (placed, owned) = match (&self.identity_root, self.below_identity_root(&path)) {
            (Some(root), Some(comps)) => {
                let placed = Placed::new(&comps);
                let dir: PathBuf = std::iter::once(mount.as_os_str())
                    .chain(root.iter().map(|c| c.as_ref()))
                    .collect();
                let owned = root_owned(&dir, &comps, placed.needs());
                (placed, owned)
            }
            _ => (Placed::default(), 0),
        };
        Some(Cgroup {
            path,
            placed,
            owned,
        })
    }

    /// The components of `path` (relative to the mount) below the identity root.
    fn below_identity_root<'a>(&self, path: &'a str) -> Option<Vec<&'a str>> {
        let root = self.identity_root.as_ref()?;
        let comps = components(path);
        (comps.len() >= root.len() && comps.iter().zip(root).all(|(c, r)| c == r))
            .then(|| comps[root.len()..].to_vec())
    }
}

/// How many of the first `needs` directories (`root`, then `root/comps[0]`, ...) are owned by
/// root and writable by no one else; counting stops at the first that is not (or is gone).
fn root_owned(root: &Path, comps: &[&str], needs: usize) -> usize {
    let mut dir = root.to_path_buf();
    for i in 0..needs {
        if i > 0 {
            let Some(c) = comps.get(i - 1) else { return i };
            dir.push(c);
        }
        let ok = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0);
        if !ok {
            return i;
        }
    }
    needs
}

fn ino(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn proc_cgroup(tgid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Breadth-first search of the cgroup tree for a directory with inode `id`, bounded.
fn walk_for(root: &Path, id: u64) -> Option<String> {
    if ino(root) == Some(id) {
        return Some("/".into());
    }
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut visited = 0usize;
    while let Some(dir) = queue.pop_front() {
        visited += 1;
        if visited > 20_000 {
            return None;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if ino(&p) == Some(id) {
                let rel = p.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.display()));
            }
            queue.push_back(p);
        }
    }
    None
}

#[cfg(test)]
mod tests;
