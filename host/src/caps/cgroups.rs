//! Memory and CPU limits for task processes through cgroups.
//!
//! cgroup v2 is used when its memory controller is available; otherwise the
//! v1 memory controller (memory only). Each supervised process gets its own
//! cgroup under a `nomad-driver-wasm` directory; its supervisor moves itself
//! in before starting the task, so every descendant is inside, and reads
//! the OOM-kill counter when the task ends. Where neither is available,
//! tasks run without limits and the fingerprint says so.

use std::path::{Path, PathBuf};

/// Limits for one process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory limit in bytes (0: none).
    pub memory_max: u64,
    /// Nomad CPU shares (MHz); mapped to a cgroup v2 `cpu.weight` (0: none).
    pub cpu_shares: u64,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_max == 0 && self.cpu_shares == 0
    }
}

/// Which cgroup machinery this host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V2 { base: PathBuf, cpu: bool },
    V1Memory { base: PathBuf },
    Unavailable { reason: String },
}

const DIR_NAME: &str = "nomad-driver-wasm";

/// A mount from `/proc/self/mountinfo`: (mount point, fs type, super options).
fn mounts(mountinfo: &str) -> Vec<(String, String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split_whitespace().nth(4)?.to_owned();
            let mut post = post.split_whitespace();
            let fstype = post.next()?.to_owned();
            let _source = post.next();
            let opts = post.next().unwrap_or("").to_owned();
            Some((point, fstype, opts))
        })
        .collect()
}

/// This process's path in a hierarchy, from `/proc/self/cgroup` (`0::/x`
/// for v2, `N:memory:/x` for v1 memory).
fn own_path(proc_cgroup: &str, v2: bool) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if v2 {
            id == "0" && ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == "memory")
        };
        hit.then(|| path.to_owned())
    })
}

impl Cgroups {
    /// Finds usable cgroups and prepares the base directory.
    pub fn detect() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::detect_from(&mountinfo, &proc_cgroup, |base| {
            std::fs::create_dir_all(base).map_err(|e| e.to_string())
        })
    }

    fn detect_from(
        mountinfo: &str,
        proc_cgroup: &str,
        prepare: impl Fn(&Path) -> Result<(), String>,
    ) -> Cgroups {
        let mounts = mounts(mountinfo);
        let mut why = Vec::new();
        if let Some((point, _, _)) = mounts.iter().find(|(_, t, _)| t == "cgroup2") {
            let controllers = std::fs::read_to_string(Path::new(point).join("cgroup.controllers"))
                .unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") {
                // A sibling of the root's children: v2 forbids processes in a
                // cgroup whose children have controllers, so not under ours.
                let base = Path::new(point).join(DIR_NAME);
                match prepare(&base).and_then(|()| enable_controllers(point, &base, has("cpu"))) {
                    Ok(()) => {
                        return Cgroups::V2 {
                            base,
                            cpu: has("cpu"),
                        };
                    }
                    Err(e) => why.push(format!("cgroup v2 at {point}: {e}")),
                }
            } else {
                why.push(format!("cgroup v2 at {point} has no memory controller"));
            }
        } else {
            why.push("no cgroup v2 mount".into());
        }
        let v1 = mounts
            .iter()
            .find(|(_, t, o)| t == "cgroup" && o.split(',').any(|x| x == "memory"));
        if let (Some((point, _, _)), Some(own)) = (v1, own_path(proc_cgroup, false)) {
            let base = Path::new(point)
                .join(own.trim_start_matches('/'))
                .join(DIR_NAME);
            match prepare(&base) {
                Ok(()) => return Cgroups::V1Memory { base },
                Err(e) => why.push(format!("cgroup v1 memory at {}: {e}", base.display())),
            }
        } else {
            why.push("no cgroup v1 memory controller".into());
        }
        Cgroups::Unavailable {
            reason: why.join("; "),
        }
    }

    /// One word for the fingerprint: `v2`, `v1-memory` or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1Memory { .. } => "v1-memory",
            Cgroups::Unavailable { .. } => "none",
        }
    }

    /// Creates the cgroup `name` with `limits`; `None` when limits cannot be
    /// applied on this host.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Option<PathBuf>, String> {
        let (base, v2, cpu) = match self {
            Cgroups::V2 { base, cpu } => (base, true, *cpu),
            Cgroups::V1Memory { base } => (base, false, false),
            Cgroups::Unavailable { .. } => return Ok(None),
        };
        let dir = base.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
        let write = |file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("setting {file}={value} on {}: {e}", dir.display()))
        };
        let applied = (|| {
            if limits.memory_max > 0 {
                if v2 {
                    write("memory.max", limits.memory_max.to_string())?;
                    // No swap beyond the limit, like Nomad's own drivers.
                    let _ = write("memory.swap.max", "0".into());
                } else {
                    write("memory.limit_in_bytes", limits.memory_max.to_string())?;
                }
            }
            if cpu && limits.cpu_shares > 0 {
                write("cpu.weight", cpu_weight(limits.cpu_shares).to_string())?;
            }
            Ok(())
        })();
        match applied {
            Ok(()) => Ok(Some(dir)),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// Enables memory (and cpu) for the children of `base`, and for `base`
/// itself in the root.
fn enable_controllers(root: &str, base: &Path, cpu: bool) -> Result<(), String> {
    let want = if cpu { "+memory +cpu" } else { "+memory" };
    for dir in [Path::new(root), base] {
        std::fs::write(dir.join("cgroup.subtree_control"), want)
            .map_err(|e| format!("enabling {want} in {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Nomad CPU shares (MHz, like cgroup v1 shares) to a v2 weight (1-10000).
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + (shares - 2) * 9999 / 262_142
}

/// The number of OOM kills recorded in a cgroup (v2 `memory.events`, v1
/// `memory.oom_control`).
pub fn oom_kills(dir: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// SIGKILLs every process in the cgroup except `keep` (the supervisor,
/// which must live to record the exit), a few rounds in case some forked
/// meanwhile. Works the same on v1 and v2.
pub fn kill_all_but(dir: &Path, keep: u32) {
    for _ in 0..5 {
        let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            return;
        };
        let victims: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|pid| *pid as u32 != keep && *pid > 0)
            .collect();
        if victims.is_empty() {
            return;
        }
        for pid in victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Removes a cgroup once its processes are gone (retrying briefly while
/// the kernel finishes tearing them down).
pub fn remove(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "cgroup could not be removed");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_mountinfo_and_own_paths() {
        let m = mounts(HYBRID);
        assert!(m.contains(&(
            "/sys/fs/cgroup/memory".into(),
            "cgroup".into(),
            "rw,memory".into()
        )));
        assert!(
            m.iter()
                .any(|(p, t, _)| p == "/sys/fs/cgroup/unified" && t == "cgroup2")
        );
        let pc = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(own_path(pc, false).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(pc, true).as_deref(), Some("/"));
    }

    #[test]
    fn v1_memory_is_used_when_v2_has_no_memory_controller() {
        let got = Cgroups::detect_from(HYBRID, "4:memory:/sandbox\n0::/\n", |_| Ok(()));
        assert_eq!(
            got,
            Cgroups::V1Memory {
                base: PathBuf::from("/sys/fs/cgroup/memory/sandbox/nomad-driver-wasm")
            }
        );
        let none = Cgroups::detect_from("", "", |_| Ok(()));
        assert!(
            matches!(&none, Cgroups::Unavailable { reason } if reason.contains("no cgroup v2 mount"))
        );
        assert_eq!(none.kind(), "none");
    }

    #[test]
    fn shares_map_to_weights_in_range() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(0), 1);
    }
}
