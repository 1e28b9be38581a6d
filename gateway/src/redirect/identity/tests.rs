use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::{PermissionsExt as _, chown},
};

use super::*;
use crate::redirect::origdst::OrigDstAddr;

const POD: &str = "6f1c2a3b-1d2e-4f50-8a9b-0c1d2e3f4a5b";
const POD_: &str = "6f1c2a3b_1d2e_4f50_8a9b_0c1d2e3f4a5b";
const OTHER_POD: &str = "00000000-1111-2222-3333-444444444444";
const NOBODY: u32 = 65534;

fn cid() -> String {
    "0123456789abcdef".repeat(4)
}

fn owner(
    unit: Option<&str>,
    slice: Option<&str>,
    pod: Option<&str>,
    cid: Option<&str>,
) -> CgroupOwner {
    CgroupOwner {
        unit: unit.map(str::to_string),
        slice: slice.map(str::to_string),
        pod_uid: pod.map(str::to_string),
        container_id: cid.map(str::to_string),
    }
}

fn unit_only(unit: &str) -> CgroupOwner {
    owner(Some(unit), None, None, None)
}

// --- What a workload could create in a tree delegated to it: none of it names anyone. ---

#[test]
fn a_unit_inside_a_unit_is_the_outer_unit() {
    let o = parse_cgroup_path(
        "/system.slice/runner.service/system.slice/team-a.service",
        0,
    );
    assert_eq!(o, unit_only("runner.service"));
    let o = parse_cgroup_path("/system.slice/runner.service/team-a.service", 0);
    assert_eq!(o, unit_only("runner.service"));
    let o = parse_cgroup_path("/system.slice/runner.service/x/y.scope", 0);
    assert_eq!(o, unit_only("runner.service"));
}

#[test]
fn a_kubelet_tree_inside_a_unit_names_no_pod() {
    let c = cid();
    let o = parse_cgroup_path(
        &format!("/system.slice/runner.service/kubepods/besteffort/pod{POD}/{c}"),
        0,
    );
    assert_eq!(o, unit_only("runner.service"));
    let o = parse_cgroup_path(
        &format!(
            "/system.slice/runner.service/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/cri-containerd-{c}.scope"
        ),
        0,
    );
    assert_eq!(o, unit_only("runner.service"));
}

#[test]
fn a_users_own_tree_is_the_user_manager() {
    let c = cid();
    let manager = || {
        owner(
            Some("user@1000.service"),
            Some("user-1000.slice"),
            None,
            None,
        )
    };
    let user = "/user.slice/user-1000.slice/user@1000.service";
    for below in [
        format!("/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{c}.scope"),
        format!("/kubepods/pod{POD}/{c}"),
        "/app.slice/foo.service".into(),
        "/system.slice/team-a.service".into(),
        // rootless podman
        format!("/user.slice/libpod-{c}.scope"),
        format!("/user.slice/libpod-{c}.scope/container"),
        "/user.slice/user-0.slice/session-1.scope".into(),
    ] {
        assert_eq!(
            parse_cgroup_path(&format!("{user}{below}"), 1000),
            manager(),
            "{below}"
        );
    }
}

#[test]
fn a_user_slice_belongs_only_to_its_uid() {
    let o = parse_cgroup_path("/user.slice/user-0.slice/session-1.scope", 1000);
    assert_eq!(o, unit_only("session-1.scope"));
    let o = parse_cgroup_path("/user.slice/user-1000.slice/session-1.scope", 0);
    assert_eq!(o, unit_only("session-1.scope"));
    // Not as systemd spells it.
    let o = parse_cgroup_path("/user.slice/user-01000.slice/session-1.scope", 1000);
    assert_eq!(o, unit_only("session-1.scope"));
    let o = parse_cgroup_path("/user.slice/user-+1000.slice", 1000);
    assert_eq!(o, CgroupOwner::default());
    // Not directly under /user.slice.
    for p in [
        "/user-1000.slice/session-1.scope",
        "/system.slice/user-1000.slice/session-1.scope",
        "/user.slice/x.slice/user-1000.slice/session-1.scope",
        "/a/user.slice/user-1000.slice/session-1.scope",
    ] {
        assert_eq!(parse_cgroup_path(p, 1000).slice, None, "{p}");
    }
}

#[test]
fn a_pod_anywhere_but_the_root_is_no_pod() {
    let c = cid();
    for p in [
        format!("/system.slice/kubepods/besteffort/pod{POD}/{c}"),
        format!("/foo/kubepods/pod{POD}/{c}"),
        format!("/pod{POD}/{c}"),
        format!("/besteffort/pod{POD}/{c}"),
        format!("/kubepods/besteffort/x/pod{POD}/{c}"),
        format!("/kubepods/guaranteed/pod{POD}/{c}"),
        format!("/kubepods-pod{POD_}.slice/cri-containerd-{c}.scope"),
        format!("/system.slice/kubepods.slice/kubepods-pod{POD_}.slice"),
        format!("/kubepods.slice/x.slice/kubepods-pod{POD_}.slice"),
        // The QoS in the pod's name must be its parent's.
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{POD_}.slice"),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-pod{POD_}.slice"),
        format!("/kubepods.slice/kubepods-besteffort-pod{POD_}.slice"),
        // Each driver spells the UID its own way.
        format!("/kubepods/pod{POD_}/{c}"),
        format!("/kubepods.slice/kubepods-pod{POD}.slice"),
        format!("/kubepods.slice/kubepods-pod{}.slice", POD_.to_uppercase()),
        format!("/kubepods/pod{}", POD.to_uppercase()),
        format!("/kubepods/pod{POD}.slice"),
        format!("/kubepods/pod{POD}x"),
    ] {
        let o = parse_cgroup_path(&p, 0);
        assert_eq!(o.pod_uid, None, "{p}");
        // A container id still comes from a scope directly below slices (a systemd unit).
        if !p.ends_with(".scope") {
            assert_eq!(o.container_id, None, "{p}");
        }
    }
}

#[test]
fn only_the_first_pod_and_container_count() {
    let c = cid();
    let c2 = "f".repeat(64);
    let o = parse_cgroup_path(
        &format!("/kubepods/besteffort/pod{POD}/{c}/kubepods/besteffort/pod{OTHER_POD}/{c2}"),
        0,
    );
    assert_eq!(o, owner(None, None, Some(POD), Some(&c)));
    let o = parse_cgroup_path(&format!("/kubepods/pod{POD}/pod{OTHER_POD}/{c2}"), 0);
    assert_eq!(o, owner(None, None, Some(POD), None));
    let o = parse_cgroup_path(&format!("/kubepods/pod{POD}/x/{c2}"), 0);
    assert_eq!(o, owner(None, None, Some(POD), None));
    let nested = format!(
        "/kubepods.slice/kubepods-pod{POD_}.slice/crio-{c}.scope/kubepods.slice/kubepods-pod{}.slice/crio-{c2}.scope",
        OTHER_POD.replace('-', "_")
    );
    let unit = format!("crio-{c}.scope");
    assert_eq!(
        parse_cgroup_path(&nested, 0),
        owner(Some(&unit), None, Some(POD), Some(&c))
    );
}

#[test]
fn names_that_only_look_like_ids() {
    for p in [
        "/podcast",
        "/kubepods/podcast",
        "/kubepods/besteffort/podcast",
        "/kubepods.slice/kubepods-podcast.slice",
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podcast.slice",
        "/",
        "",
        "/gw-test-123",
        "/kubepods",
        "/kubepods.slice",
    ] {
        assert_eq!(parse_cgroup_path(p, 0), CgroupOwner::default(), "{p}");
    }
    // A container id is 64 lower-case hex digits.
    let short = "a".repeat(63);
    let upper = "A".repeat(64);
    for id in [&short, &upper] {
        let o = parse_cgroup_path(&format!("/kubepods/pod{POD}/{id}"), 0);
        assert_eq!(o, owner(None, None, Some(POD), None));
        let o = parse_cgroup_path(&format!("/system.slice/docker-{id}.scope"), 0);
        assert_eq!(o.container_id, None);
    }
    let o = parse_cgroup_path(&format!("/system.slice/-{}.scope", cid()), 0);
    assert_eq!(o.container_id, None);
    let o = parse_cgroup_path(&format!("/system.slice/docker-{}.service", cid()), 0);
    assert_eq!(o.container_id, None);
}

#[test]
fn a_unit_is_directly_below_the_slices() {
    for p in [
        "/system.slice/foo/bar.service",
        "/foo/bar.service",
        "/system.slice/.service",
        "/.slice/foo.service",
    ] {
        assert_eq!(parse_cgroup_path(p, 0).unit, None, "{p}");
    }
}

// --- The shapes systemd and the kubelet make. ---

#[test]
fn systemd_units() {
    let o = parse_cgroup_path("/system.slice/gitlab-runner.service", 0);
    assert_eq!(o, unit_only("gitlab-runner.service"));
    let o = parse_cgroup_path("/system.slice/gitlab-runner.service/job-1/build", 0);
    assert_eq!(o, unit_only("gitlab-runner.service"));
    let o = parse_cgroup_path("/system.slice/system-getty.slice/getty@tty1.service", 0);
    assert_eq!(o, unit_only("getty@tty1.service"));
    let o = parse_cgroup_path("/init.scope", 0);
    assert_eq!(o, unit_only("init.scope"));
    let o = parse_cgroup_path("/system.slice", 0);
    assert_eq!(o, CgroupOwner::default());
}

#[test]
fn user_sessions_and_managers() {
    let o = parse_cgroup_path("/user.slice/user-1000.slice/session-3.scope", 1000);
    assert_eq!(
        o,
        owner(Some("session-3.scope"), Some("user-1000.slice"), None, None)
    );
    let o = parse_cgroup_path("/user.slice/user-0.slice/session-1.scope", 0);
    assert_eq!(
        o,
        owner(Some("session-1.scope"), Some("user-0.slice"), None, None)
    );
    let o = parse_cgroup_path("/user.slice/user-1000.slice", 1000);
    assert_eq!(o, owner(None, Some("user-1000.slice"), None, None));
    let o = parse_cgroup_path(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
        1000,
    );
    assert_eq!(
        o,
        owner(
            Some("user@1000.service"),
            Some("user-1000.slice"),
            None,
            None
        )
    );
}

#[test]
fn container_scopes() {
    let c = cid();
    let o = parse_cgroup_path(&format!("/system.slice/docker-{c}.scope"), 0);
    let unit = format!("docker-{c}.scope");
    assert_eq!(o, owner(Some(&unit), None, None, Some(&c)));
    let o = parse_cgroup_path(&format!("/machine.slice/libpod-{c}.scope/container"), 0);
    let unit = format!("libpod-{c}.scope");
    assert_eq!(o, owner(Some(&unit), None, None, Some(&c)));
}

#[test]
fn kubelet_systemd_driver() {
    let c = cid();
    for (qos_dir, pod_dir) in [
        ("", format!("kubepods-pod{POD_}.slice")),
        (
            "kubepods-burstable.slice/",
            format!("kubepods-burstable-pod{POD_}.slice"),
        ),
        (
            "kubepods-besteffort.slice/",
            format!("kubepods-besteffort-pod{POD_}.slice"),
        ),
    ] {
        let pod = format!("/kubepods.slice/{qos_dir}{pod_dir}");
        assert_eq!(
            parse_cgroup_path(&pod, 0),
            owner(None, None, Some(POD), None),
            "{pod}"
        );
        for runtime in ["cri-containerd", "crio", "docker"] {
            let unit = format!("{runtime}-{c}.scope");
            let want = owner(Some(&unit), None, Some(POD), Some(&c));
            assert_eq!(parse_cgroup_path(&format!("{pod}/{unit}"), 0), want);
            assert_eq!(parse_cgroup_path(&format!("{pod}/{unit}/sub"), 0), want);
        }
    }
}

#[test]
fn kubelet_cgroupfs_driver() {
    let c = cid();
    for qos in ["", "burstable/", "besteffort/"] {
        let pod = format!("/kubepods/{qos}pod{POD}");
        assert_eq!(
            parse_cgroup_path(&pod, 0),
            owner(None, None, Some(POD), None)
        );
        let want = owner(None, None, Some(POD), Some(&c));
        assert_eq!(parse_cgroup_path(&format!("{pod}/{c}"), 0), want);
        assert_eq!(parse_cgroup_path(&format!("{pod}/{c}/init"), 0), want);
    }
}

// --- Real directories: the resolver also checks who owns them. ---

/// A cgroup tree in a temporary directory, which is both the "mount" and (by default) the
/// identity root.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            fs::metadata(dir.path()).expect("stat").uid(),
            0,
            "these tests run as root (they chown directories)"
        );
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    /// Make `rel` (root's, 0755, each directory on the way) and return its cgroup id.
    fn mk(&self, rel: &str) -> u64 {
        let mut p = self.dir.path().to_path_buf();
        for c in components(rel) {
            p.push(c);
            if !p.exists() {
                fs::create_dir(&p).expect("mkdir");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
        fs::metadata(&p).expect("stat").ino()
    }

    fn chown(&self, rel: &str, uid: u32) {
        chown(self.path(rel), Some(uid), Some(uid)).expect("chown");
    }

    fn resolver(&self) -> IdentityResolver {
        IdentityResolver::new(Some(self.dir.path().into()), self.dir.path().into())
    }

    fn resolve(&self, rel: &str, uid: u32) -> CgroupOwner {
        let id = self.resolver().resolve(&rec(uid, self.mk(rel)));
        assert_eq!(id.cgroup.as_deref(), Some(rel));
        owner_of(&id)
    }
}

fn owner_of(id: &Identity) -> CgroupOwner {
    CgroupOwner {
        unit: id.unit.clone(),
        slice: id.slice.clone(),
        pod_uid: id.pod_uid.clone(),
        container_id: id.container_id.clone(),
    }
}

/// A connection from no living process (the cgroup is found by walking the tree).
fn rec(uid: u32, cgroup_id: u64) -> ConnRecord {
    ConnRecord {
        orig_dst: OrigDstAddr(SocketAddr::from(([192, 0, 2, 1], 443))),
        v6_socket: false,
        pid: u32::MAX,
        tgid: u32::MAX,
        uid,
        gid: uid,
        cgroup_id,
        comm: "test".into(),
        addr_flags: gateway_common::ADDR_PROVIDER,
        dns: false,
    }
}

#[test]
fn root_owned_trees_name_their_owners() {
    let t = Tree::new();
    let c = cid();
    assert_eq!(
        t.resolve("/system.slice/ci.service", 0),
        unit_only("ci.service")
    );
    let o = t.resolve("/user.slice/user-1000.slice/session-2.scope", 1000);
    assert_eq!(
        o,
        owner(Some("session-2.scope"), Some("user-1000.slice"), None, None)
    );
    let p = format!("/kubepods/burstable/pod{POD}/{c}");
    assert_eq!(t.resolve(&p, 0), owner(None, None, Some(POD), Some(&c)));
}

#[test]
fn a_delegated_unit_keeps_its_name_but_names_nothing_below() {
    let t = Tree::new();
    t.mk("/system.slice/runner.service");
    t.chown("/system.slice/runner.service", NOBODY);
    let o = t.resolve(
        "/system.slice/runner.service/system.slice/team-a.service",
        NOBODY,
    );
    assert_eq!(o, unit_only("runner.service"));
    let o = t.resolve(
        &format!("/system.slice/runner.service/kubepods/pod{POD}/{}", cid()),
        NOBODY,
    );
    assert_eq!(o, unit_only("runner.service"));

    t.mk("/user.slice/user-1000.slice/user@1000.service");
    t.chown("/user.slice/user-1000.slice/user@1000.service", 1000);
    let o = t.resolve(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
        1000,
    );
    assert_eq!(
        o,
        owner(
            Some("user@1000.service"),
            Some("user-1000.slice"),
            None,
            None
        )
    );
}

#[test]
fn a_slice_not_owned_by_root_names_nothing_from_there() {
    let t = Tree::new();
    t.mk("/system.slice");
    t.chown("/system.slice", NOBODY);
    assert_eq!(
        t.resolve("/system.slice/team-a.service", NOBODY),
        CgroupOwner::default()
    );

    t.mk("/user.slice/user-1000.slice");
    t.chown("/user.slice/user-1000.slice", 1000);
    let o = t.resolve("/user.slice/user-1000.slice/session-1.scope", 1000);
    assert_eq!(o, CgroupOwner::default());

    // Owned by root but writable by others: anyone could have named what is below.
    t.mk("/machine.slice");
    fs::set_permissions(t.path("/machine.slice"), fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        t.resolve("/machine.slice/vm.scope", 0),
        CgroupOwner::default()
    );
    t.mk("/other.slice");
    fs::set_permissions(t.path("/other.slice"), fs::Permissions::from_mode(0o775)).unwrap();
    assert_eq!(
        t.resolve("/other.slice/vm.scope", 0),
        CgroupOwner::default()
    );
}

#[test]
fn kubelet_directories_must_be_roots() {
    let c = cid();
    // The pod's directory.
    let t = Tree::new();
    t.mk(&format!("/kubepods/besteffort/pod{POD}"));
    t.chown(&format!("/kubepods/besteffort/pod{POD}"), NOBODY);
    let p = format!("/kubepods/besteffort/pod{POD}/{c}");
    assert_eq!(t.resolve(&p, 0), CgroupOwner::default());
    // The QoS level.
    let t = Tree::new();
    t.mk("/kubepods.slice/kubepods-burstable.slice");
    t.chown("/kubepods.slice/kubepods-burstable.slice", NOBODY);
    let p = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/cri-containerd-{c}.scope"
    );
    assert_eq!(t.resolve(&p, 0), CgroupOwner::default());
    // The container's own directory may be the container's (user-namespaced pods): the pod's
    // directory named it.
    let t = Tree::new();
    let p = format!("/kubepods/pod{POD}/{c}");
    t.mk(&p);
    t.chown(&p, NOBODY);
    assert_eq!(t.resolve(&p, 0), owner(None, None, Some(POD), Some(&c)));
    let o = t.resolve(&format!("{p}/kubepods/pod{OTHER_POD}"), 0);
    assert_eq!(o, owner(None, None, Some(POD), Some(&c)));
}

#[test]
fn an_identity_root_not_owned_by_root_names_nothing() {
    let t = Tree::new();
    t.chown("/", NOBODY);
    assert_eq!(
        t.resolve("/system.slice/ci.service", 0),
        CgroupOwner::default()
    );
    let p = format!("/kubepods/pod{POD}/{}", cid());
    assert_eq!(t.resolve(&p, 0), CgroupOwner::default());
}

#[test]
fn positions_count_from_the_identity_root() {
    let t = Tree::new();
    let c = cid();
    t.mk("/kubelet.slice");
    let r = IdentityResolver::new(Some(t.path("/")), t.path("/kubelet.slice"));
    // Below the identity root: positions count from there; the cgroup is still the mount's path.
    let inside = format!("/kubelet.slice/kubepods/pod{POD}/{c}");
    let id = r.resolve(&rec(0, t.mk(&inside)));
    assert_eq!(id.cgroup.as_deref(), Some(inside.as_str()));
    assert_eq!(owner_of(&id), owner(None, None, Some(POD), Some(&c)));
    // Outside it: nothing, even in the shapes that would count at the mount.
    for outside in [
        format!("/kubepods/pod{POD}/{c}"),
        "/system.slice/ci.service".into(),
        "/kubelet.slicex/system.slice/ci.service".into(),
        "/".into(),
    ] {
        let id = r.resolve(&rec(0, t.mk(&outside)));
        assert_eq!(id.cgroup.as_deref(), Some(outside.as_str()));
        assert_eq!(owner_of(&id), CgroupOwner::default(), "{outside}");
    }
    // An identity root that is not below the mount: nothing anywhere.
    let other = Tree::new();
    let r = IdentityResolver::new(Some(t.path("/")), other.path("/"));
    let id = r.resolve(&rec(0, t.mk("/system.slice/ci.service")));
    assert_eq!(id.cgroup.as_deref(), Some("/system.slice/ci.service"));
    assert_eq!(owner_of(&id), CgroupOwner::default());
}

#[test]
fn an_unknown_cgroup_has_no_path() {
    let t = Tree::new();
    let id = t.resolver().resolve(&rec(0, u64::MAX));
    assert_eq!(id.cgroup, None);
    assert_eq!(owner_of(&id), CgroupOwner::default());
}

#[tokio::test]
async fn resolve_async_agrees_and_then_answers_from_the_cache() {
    let t = Tree::new();
    let r = Arc::new(t.resolver());
    let rec = rec(0, t.mk("/system.slice/ci.service/job"));
    let first = r.resolve_async(&rec).await;
    assert_eq!(first, r.resolve(&rec));
    assert_eq!(first.unit.as_deref(), Some("ci.service"));
    assert_eq!(first.user.as_deref(), Some("root"));
    assert!(r.cached_user(0).is_some() && r.cached_cgroup(rec.cgroup_id).is_some());
    // Gone from the tree, still known by its id (cgroup ids are never reused).
    fs::remove_dir_all(t.path("/system.slice")).unwrap();
    assert_eq!(r.resolve_async(&rec).await, first);
}

#[tokio::test]
async fn resolve_async_without_cgroups() {
    let r = Arc::new(IdentityResolver::new(None, PathBuf::from("/")));
    let id = r.resolve_async(&rec(0, 1)).await;
    assert_eq!(id.cgroup, None);
    assert_eq!(id.user.as_deref(), Some("root"));
}

#[test]
fn root_user_resolves() {
    let r = IdentityResolver::new(None, PathBuf::from("/"));
    assert_eq!(r.user_name(0).as_deref(), Some("root"));
}
