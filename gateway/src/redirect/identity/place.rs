//! Which names in a cgroup path say who owns it: only positions the system owns, counted from
//! the identity root. systemd's slices and the one unit directly below them; the kubelet's
//! tree at the root. Nothing below a unit counts: systemd may have delegated the unit's
//! directory to its user (`Delegate=yes`, `user@UID.service`), who then names the sub-cgroups.
//!
//! Each name also says how many directories, from the identity root down, must be owned by
//! root for it to count (`needs`): a name is given by whoever may write its parent, and a
//! slice or pod directory must itself be root's, so nothing below it was named by someone else.

/// What a cgroup path tells about its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupOwner {
    pub unit: Option<String>,
    pub slice: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

/// A name found at a system-owned position, and how many leading directories (the identity
/// root is the first) must be owned by root for it to count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    name: String,
    needs: usize,
}

/// The names a cgroup path's system-owned positions give, before ownership and the caller's
/// uid are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Placed {
    unit: Option<Named>,
    /// `user-UID.slice` directly under `user.slice`, with its UID.
    user_slice: Option<(Named, u32)>,
    pod_uid: Option<Named>,
    container_id: Option<Named>,
}

impl Placed {
    /// Read the positions of `comps`, the path's components below the identity root.
    pub(super) fn new(comps: &[&str]) -> Self {
        let mut placed = Self::default();
        // systemd: leading slices, then the unit.
        let slices = comps.iter().take_while(|c| is_slice(c)).count();
        if slices >= 2
            && comps[0] == "user.slice"
            && let Some(uid) = comps[1]
                .strip_prefix("user-")
                .and_then(|r| r.strip_suffix(".slice"))
                .and_then(|u| u.parse::<u32>().ok())
            // The exact spelling systemd gives (no sign, no leading zeros).
            && comps[1] == format!("user-{uid}.slice")
        {
            placed.user_slice = Some((named(comps[1], 3), uid));
        }
        if let Some(unit) = comps.get(slices).filter(|c| is_unit(c)) {
            let needs = slices + 1;
            placed.unit = Some(named(unit, needs));
            // docker, podman, and the kubelet's systemd driver: `<runtime>-<64 hex>.scope`.
            placed.container_id = unit
                .strip_suffix(".scope")
                .and_then(|s| s.rsplit_once('-'))
                .filter(|(runtime, id)| !runtime.is_empty() && is_container_id(id))
                .map(|(_, id)| named(id, needs));
        }
        if let Some((pod, at, container)) = kubelet(comps) {
            placed.pod_uid = Some(named(&pod, at + 2));
            if let Some(c) = container {
                placed.container_id = Some(named(c, at + 2));
            }
        }
        placed
    }

    /// How many leading directories must be looked at: the most any name needs.
    pub(super) fn needs(&self) -> usize {
        [
            self.unit.as_ref(),
            self.user_slice.as_ref().map(|(n, _)| n),
            self.pod_uid.as_ref(),
            self.container_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|n| n.needs)
        .max()
        .unwrap_or(0)
    }

    /// The names that count when the first `owned` directories are root's and the caller's
    /// uid (from the kernel) is `uid`.
    pub(super) fn owner(&self, owned: usize, uid: u32) -> CgroupOwner {
        let take = |n: &Option<Named>| {
            n.as_ref()
                .filter(|n| n.needs <= owned)
                .map(|n| n.name.clone())
        };
        CgroupOwner {
            unit: take(&self.unit),
            slice: self
                .user_slice
                .as_ref()
                .filter(|(n, slice_uid)| n.needs <= owned && *slice_uid == uid)
                .map(|(n, _)| n.name.clone()),
            pod_uid: take(&self.pod_uid),
            container_id: take(&self.container_id),
        }
    }
}

fn named(name: &str, needs: usize) -> Named {
    Named {
        name: name.to_string(),
        needs,
    }
}

/// The kubelet's tree at the identity root: the pod UID (dashed), the index of the pod's
/// component, and the container id when the path goes that deep.
///
/// - systemd driver: `kubepods.slice/[kubepods-<qos>.slice/]kubepods[-<qos>]-pod<uid with _>.slice/<runtime>-<64 hex>.scope`
///   (the container id comes from the scope, as for any unit: see [`Placed::new`]);
/// - cgroupfs driver: `kubepods/[<qos>/]pod<uid>/<64 hex>`.
fn kubelet<'a>(comps: &[&'a str]) -> Option<(String, usize, Option<&'a str>)> {
    match *comps.first()? {
        "kubepods.slice" => {
            let qos = comps
                .get(1)
                .and_then(|c| c.strip_prefix("kubepods-")?.strip_suffix(".slice"))
                .filter(|q| is_qos(q));
            let (prefix, at) = match qos {
                Some(q) => (format!("kubepods-{q}-pod"), 2),
                None => ("kubepods-pod".to_string(), 1),
            };
            let uid = comps
                .get(at)?
                .strip_prefix(prefix.as_str())?
                .strip_suffix(".slice")
                .filter(|u| is_pod_uid(u, b'_'))?;
            Some((uid.replace('_', "-"), at, None))
        }
        "kubepods" => {
            let at = if comps.get(1).is_some_and(|q| is_qos(q)) {
                2
            } else {
                1
            };
            let uid = comps
                .get(at)?
                .strip_prefix("pod")
                .filter(|u| is_pod_uid(u, b'-'))?;
            let container = comps.get(at + 1).copied().filter(|c| is_container_id(c));
            Some((uid.to_string(), at, container))
        }
        _ => None,
    }
}

fn is_qos(s: &str) -> bool {
    s == "burstable" || s == "besteffort"
}

fn is_slice(s: &str) -> bool {
    s.len() > ".slice".len() && s.ends_with(".slice")
}

fn is_unit(s: &str) -> bool {
    (s.len() > ".service".len() && s.ends_with(".service"))
        || (s.len() > ".scope".len() && s.ends_with(".scope"))
}

/// A Kubernetes pod UID as the kubelet spells it in a cgroup name: lower-case hex in the
/// 8-4-4-4-12 groups, separated by `sep` (`_` in systemd slice names, `-` with cgroupfs).
fn is_pod_uid(s: &str, sep: u8) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == sep,
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
