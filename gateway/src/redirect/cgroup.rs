//! cgroup v2 and bpffs plumbing for the redirect stage: find the cgroup v2 mount in
//! /proc/self/mountinfo (never hard-coded: /sys/fs/cgroup on modern hosts,
//! /sys/fs/cgroup/unified on hybrid ones), check a configured cgroup, mount bpffs when missing.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotDir(PathBuf),
    #[error("{path} is not on a cgroup v2 filesystem")]
    NotCgroup2 { path: PathBuf },
    #[error("cannot inspect {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not on a bpf filesystem and mounting bpffs at {mountpoint} failed: {source}"
    )]
    BpfFs {
        path: PathBuf,
        mountpoint: PathBuf,
        source: nix::Error,
    },
}

/// One line of /proc/self/mountinfo, the parts we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parse mountinfo text (see proc(5)): fields up to " - ", then fstype.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let root = unescape(pre.nth(3)?);
            let mount_point = PathBuf::from(unescape(pre.next()?));
            let fs_type = post.split(' ').next()?.to_string();
            Some(MountEntry {
                root,
                mount_point,
                fs_type,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mountinfo() -> Result<Vec<MountEntry>, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    Ok(parse_mountinfo(&text))
}

/// The cgroup v2 mount point (the whole hierarchy: root "/").
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    find_cgroup2(&mountinfo()?).ok_or(CgroupError::NoCgroup2)
}

pub fn find_cgroup2(entries: &[MountEntry]) -> Option<PathBuf> {
    let mut v2 = entries.iter().filter(|e| e.fs_type == "cgroup2");
    let all: Vec<_> = v2.by_ref().collect();
    all.iter()
        .find(|e| e.root == "/")
        .or(all.first())
        .map(|e| e.mount_point.clone())
}

/// A configured cgroup must be an existing directory on cgroup2.
pub fn check_cgroup_dir(path: &Path) -> Result<(), CgroupError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CgroupError::Missing(path.to_path_buf()));
        }
        Err(source) => {
            return Err(CgroupError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(CgroupError::NotDir(path.to_path_buf()));
    }
    let fs = statfs(path).map_err(|e| CgroupError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(CgroupError::NotCgroup2 {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The cgroup v2 id of a cgroup directory: its inode number.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The gateway's own cgroup v2 id: its sockets are exempt from the programs only from there.
pub fn own_cgroup_id(root: &Path) -> Result<u64, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| {
            CgroupError::Missing(PathBuf::from("/proc/self/cgroup: no cgroup v2 line"))
        })?;
    cgroup_id(&root.join(rel.trim_start_matches('/')))
}

/// Make sure `pin_dir` lives on a bpf filesystem, mounting bpffs at /sys/fs/bpf when it is
/// missing there (as Cilium and systemd do). Returns whether a mount was made.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<bool, CgroupError> {
    let mountpoint = Path::new("/sys/fs/bpf");
    if on_bpffs(pin_dir) {
        return Ok(false);
    }
    if !pin_dir.starts_with(mountpoint) {
        return Err(CgroupError::BpfFs {
            path: pin_dir.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            source: nix::Error::EINVAL,
        });
    }
    std::fs::create_dir_all(mountpoint).map_err(|source| CgroupError::Io {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    nix::mount::mount(
        Some("bpf"),
        mountpoint,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| CgroupError::BpfFs {
        path: pin_dir.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Whether the nearest existing ancestor of `path` is on bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(cur) = p {
        if cur.exists() {
            return statfs(cur)
                .map(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
                .unwrap_or(false);
        }
        p = cur.parent();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const MODERN: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
26 1 0:24 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:5 - bpf bpf rw,mode=700
";

    #[test]
    fn finds_cgroup2_on_hybrid_and_modern_hosts() {
        assert_eq!(
            find_cgroup2(&parse_mountinfo(HYBRID)),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(
            find_cgroup2(&parse_mountinfo(MODERN)),
            Some("/sys/fs/cgroup".into())
        );
        assert_eq!(find_cgroup2(&parse_mountinfo("garbage\n")), None);
    }

    #[test]
    fn unescapes_mount_points() {
        let e = parse_mountinfo("1 2 0:3 / /mnt/with\\040space rw - cgroup2 none rw\n");
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn rejects_missing_and_non_cgroup_dirs() {
        assert!(matches!(
            check_cgroup_dir(Path::new("/nonexistent/cg")),
            Err(CgroupError::Missing(_))
        ));
        assert!(matches!(
            check_cgroup_dir(Path::new("/tmp")),
            Err(CgroupError::NotCgroup2 { .. })
        ));
        assert!(matches!(
            check_cgroup_dir(Path::new("/etc/hostname")),
            Err(CgroupError::NotDir(_))
        ));
    }
}
