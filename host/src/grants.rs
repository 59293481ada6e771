//! What the operator allows a guest to touch. Deny by default: a guest gets
//! nothing that is not listed here, and every refusal names the grant that
//! would allow it.

use std::path::{Path, PathBuf};

/// The resolved grants of one guest.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Programs the guest may run, as given and as resolved on disk.
    exec: Vec<ExecGrant>,
}

#[derive(Debug, Clone)]
struct ExecGrant {
    given: String,
    /// The canonical path, so `/bin/bash` and `/usr/bin/bash` are one grant
    /// on merged-/usr systems. `None` if the file does not exist (yet).
    resolved: Option<PathBuf>,
}

/// A refused operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is not granted to this guest: add `{hint}` to the plugin's args")]
pub struct NotGranted {
    /// What was attempted, e.g. "running /usr/bin/zsh".
    pub what: String,
    /// The flag that would grant it.
    pub hint: String,
}

impl Grants {
    /// Grants from `--allow-exec` values.
    pub fn new(exec: impl IntoIterator<Item = String>) -> Self {
        let exec = exec
            .into_iter()
            .map(|given| ExecGrant {
                resolved: std::fs::canonicalize(&given).ok(),
                given,
            })
            .collect();
        Grants { exec }
    }

    /// The programs granted, as the operator wrote them.
    pub fn exec_list(&self) -> impl Iterator<Item = &str> {
        self.exec.iter().map(|g| g.given.as_str())
    }

    /// Checks that `program` (an absolute path) may be run. Returns the path
    /// to execute.
    pub fn check_exec(&self, program: &str) -> Result<PathBuf, NotGranted> {
        let refuse = || NotGranted {
            what: format!("running {program}"),
            hint: format!("--allow-exec {program}"),
        };
        let path = Path::new(program);
        if !path.is_absolute() {
            return Err(refuse());
        }
        let canonical = std::fs::canonicalize(path).ok();
        let allowed = self.exec.iter().any(|g| {
            g.given == program || matches!((&g.resolved, &canonical), (Some(a), Some(b)) if a == b)
        });
        if allowed {
            Ok(path.to_path_buf())
        } else {
            Err(refuse())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deny_by_default_names_the_missing_grant() {
        let g = Grants::default();
        let err = g.check_exec("/bin/sh").unwrap_err();
        assert_eq!(
            err.to_string(),
            "running /bin/sh is not granted to this guest: add `--allow-exec /bin/sh` to the plugin's args"
        );
    }

    #[test]
    fn granted_path_and_its_canonical_twin_pass() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("tool");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("alias");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let g = Grants::new([real.to_string_lossy().into_owned()]);
        assert!(g.check_exec(real.to_str().unwrap()).is_ok());
        assert!(g.check_exec(link.to_str().unwrap()).is_ok());
        assert!(g.check_exec("/bin/true").is_err());
    }

    #[test]
    fn relative_programs_are_refused() {
        let g = Grants::new(["bash".to_string()]);
        assert!(g.check_exec("bash").is_err());
    }
}
