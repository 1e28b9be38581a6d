//! Who opened a redirected connection: the kernel's record (pid, tgid, uid, gid, comm, cgroup
//! id) plus what userspace can add: the user name, the cgroup path, and from that path a systemd
//! unit, a user slice, a Kubernetes pod UID or a container id where present.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::Serialize;

use super::origdst::ConnRecord;

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

/// What a cgroup path tells about its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupOwner {
    pub unit: Option<String>,
    pub slice: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

/// Parse systemd, user-slice and Kubernetes conventions out of a cgroup path.
pub fn parse_cgroup_path(path: &str) -> CgroupOwner {
    let mut owner = CgroupOwner::default();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = comp
            .strip_prefix("user-")
            .and_then(|r| r.strip_suffix(".slice"))
            && uid.bytes().all(|b| b.is_ascii_digit())
        {
            owner.slice = Some(comp.to_string());
        }
        // cgroupfs driver: /kubepods/burstable/pod<uid>/<container id>
        // systemd driver:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
        if let Some(pos) = comp.rfind("pod") {
            let rest = comp[pos + 3..].trim_end_matches(".slice");
            if path.contains("kubepods") && is_uid_like(rest) {
                owner.pod_uid = Some(rest.replace('_', "-"));
                continue;
            }
        }
        let scope_id = comp
            .strip_suffix(".scope")
            .and_then(|s| s.rsplit_once('-'))
            .map(|(_, id)| id);
        if let Some(id) = scope_id.filter(|id| is_container_id(id)) {
            owner.container_id = Some(id.to_string());
        } else if is_container_id(comp) {
            owner.container_id = Some(comp.to_string());
        }
        if comp.ends_with(".service") || comp.ends_with(".scope") {
            owner.unit = Some(comp.to_string());
        }
    }
    owner
}

fn is_uid_like(s: &str) -> bool {
    s.len() == 36
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves identities; caches user names and cgroup paths.
pub struct IdentityResolver {
    cgroup_root: Option<PathBuf>,
    pods: Option<std::sync::Arc<super::pods::PodNames>>,
    users: Mutex<HashMap<u32, Option<String>>>,
    cgroups: Mutex<HashMap<u64, String>>,
}

const MAX_CACHE: usize = 4096;

impl IdentityResolver {
    pub fn new(cgroup_root: Option<PathBuf>) -> Self {
        Self {
            cgroup_root,
            pods: None,
            users: Mutex::new(HashMap::new()),
            cgroups: Mutex::new(HashMap::new()),
        }
    }

    /// Names for pod UIDs (the Kubernetes API), when configured.
    pub fn with_pod_names(mut self, pods: Option<std::sync::Arc<super::pods::PodNames>>) -> Self {
        self.pods = pods;
        self
    }

    pub fn resolve(&self, rec: &ConnRecord) -> Identity {
        let cgroup = self.cgroup_path(rec.tgid, rec.cgroup_id);
        let owner = cgroup.as_deref().map(parse_cgroup_path).unwrap_or_default();
        let named = owner
            .pod_uid
            .as_deref()
            .and_then(|u| self.pods.as_ref()?.get(u));
        Identity {
            pid: rec.pid,
            tgid: rec.tgid,
            uid: rec.uid,
            user: self.user_name(rec.uid),
            gid: rec.gid,
            comm: rec.comm.clone(),
            cgroup_id: rec.cgroup_id,
            cgroup,
            unit: owner.unit,
            slice: owner.slice,
            pod_uid: owner.pod_uid,
            pod_namespace: named.as_ref().map(|n| n.0.clone()),
            pod_name: named.map(|n| n.1),
            container_id: owner.container_id,
        }
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = users.get(&uid) {
            return u.clone();
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        if users.len() >= MAX_CACHE {
            users.clear();
        }
        users.insert(uid, name.clone());
        name
    }

    /// The cgroup path (relative to the v2 root, starting with '/') of a cgroup id: first from
    /// /proc/<tgid>/cgroup when that process still lives there, else by walking the hierarchy.
    fn cgroup_path(&self, tgid: u32, id: u64) -> Option<String> {
        let root = self.cgroup_root.as_ref()?;
        if let Some(p) = self
            .cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Some(p.clone());
        }
        let found = proc_cgroup(tgid)
            .filter(|rel| ino(&root.join(rel.trim_start_matches('/'))) == Some(id))
            .or_else(|| walk_for(root, id));
        if let Some(p) = &found {
            let mut c = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= MAX_CACHE {
                c.clear();
            }
            c.insert(id, p.clone());
        }
        found
    }
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
mod tests {
    use super::*;

    #[test]
    fn systemd_service_and_user_slice() {
        let o = parse_cgroup_path("/system.slice/gitlab-runner.service");
        assert_eq!(o.unit.as_deref(), Some("gitlab-runner.service"));
        let o = parse_cgroup_path("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(o.slice.as_deref(), Some("user-1000.slice"));
        assert_eq!(o.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(o.pod_uid, None);
    }

    #[test]
    fn kubernetes_systemd_and_cgroupfs_drivers() {
        let cid = "a".repeat(64);
        let o = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a3b_1d2e_4f50_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{cid}.scope"
        ));
        assert_eq!(
            o.pod_uid.as_deref(),
            Some("6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(o.container_id.as_deref(), Some(cid.as_str()));
        let o = parse_cgroup_path(&format!(
            "/kubepods/besteffort/pod6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b/{cid}"
        ));
        assert_eq!(
            o.pod_uid.as_deref(),
            Some("6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(o.container_id.as_deref(), Some(cid.as_str()));
    }

    #[test]
    fn plain_paths_carry_no_owner() {
        assert_eq!(parse_cgroup_path("/"), CgroupOwner::default());
        assert_eq!(parse_cgroup_path("/gw-test-123"), CgroupOwner::default());
        assert_eq!(parse_cgroup_path("/podcast"), CgroupOwner::default());
    }

    #[test]
    fn root_user_resolves() {
        let r = IdentityResolver::new(None);
        assert_eq!(r.user_name(0).as_deref(), Some("root"));
    }
}
