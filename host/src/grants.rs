//! What the operator allows a guest to touch. Deny by default: a guest gets
//! nothing that is not listed here, and every refusal names the grant that
//! would allow it.
//!
//! Grants come from the plugin's args (`--allow-exec PATH`) and from an
//! optional grants file beside the guest, `<guest>.wasm.grants.hcl`:
//!
//! ```hcl
//! # Refuse to load any other build of the guest.
//! sha256 = "03843dc6c5f2..."
//!
//! exec "/usr/local/bin/pot" {
//!   # Optional: only these argument prefixes (any one of them).
//!   args_prefix = [["prepare"], ["start"], ["destroy", "-F"]]
//! }
//! exec "/usr/bin/bash" {}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The resolved grants of one guest.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    exec: Vec<ExecGrant>,
    /// The sha256 the guest must have, if pinned.
    sha256: Option<String>,
}

#[derive(Debug, Clone)]
struct ExecGrant {
    given: String,
    /// The canonical path, so `/bin/bash` and `/usr/bin/bash` are one grant
    /// on merged-/usr systems. `None` if the file does not exist (yet).
    resolved: Option<PathBuf>,
    /// Empty: any arguments. Otherwise the arguments must start with one.
    args_prefix: Vec<Vec<String>>,
}

impl ExecGrant {
    fn new(given: String, args_prefix: Vec<Vec<String>>) -> Self {
        ExecGrant {
            resolved: std::fs::canonicalize(&given).ok(),
            given,
            args_prefix,
        }
    }

    fn matches_program(&self, program: &str, canonical: Option<&Path>) -> bool {
        self.given == program || matches!((&self.resolved, canonical), (Some(a), Some(b)) if a == b)
    }

    fn allows_args(&self, args: &[String]) -> bool {
        self.args_prefix.is_empty() || self.args_prefix.iter().any(|p| args.starts_with(p))
    }
}

/// A refused operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is not granted to this guest: {hint}")]
pub struct NotGranted {
    /// What was attempted, e.g. "running /usr/bin/zsh".
    pub what: String,
    /// How to grant it.
    pub hint: String,
}

/// The grants file, as written by the operator.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    sha256: Option<String>,
    #[serde(default)]
    exec: std::collections::BTreeMap<String, ExecBlock>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExecBlock {
    #[serde(default)]
    args_prefix: Vec<Vec<String>>,
}

/// The grants file that goes with a guest: `<guest file>.grants.hcl`.
pub fn file_for(guest: &Path) -> PathBuf {
    let mut name = guest.as_os_str().to_owned();
    name.push(".grants.hcl");
    PathBuf::from(name)
}

impl Grants {
    /// Grants from `--allow-exec` values.
    pub fn new(exec: impl IntoIterator<Item = String>) -> Self {
        Grants {
            exec: exec
                .into_iter()
                .map(|g| ExecGrant::new(g, Vec::new()))
                .collect(),
            sha256: None,
        }
    }

    /// Adds the grants of a grants file (HCL). Errors name the file and
    /// what is wrong in it.
    pub fn with_file(mut self, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading grants file {}: {e}", path.display()))?;
        let file: GrantsFile =
            hcl::from_str(&text).map_err(|e| format!("grants file {}: {e}", path.display()))?;
        for (program, block) in file.exec {
            if !program.starts_with('/') {
                return Err(format!(
                    "grants file {}: exec {program:?}: programs must be absolute paths",
                    path.display()
                ));
            }
            self.exec.push(ExecGrant::new(program, block.args_prefix));
        }
        if let Some(pin) = file.sha256 {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "grants file {}: sha256 must be 64 hex digits",
                    path.display()
                ));
            }
            self.sha256 = Some(pin);
        }
        Ok(self)
    }

    /// The programs granted, as the operator wrote them.
    pub fn exec_list(&self) -> impl Iterator<Item = &str> {
        self.exec.iter().map(|g| g.given.as_str())
    }

    /// Checks a guest's sha256 against the pin, if there is one.
    pub fn check_sha256(&self, actual: &str) -> Result<(), String> {
        match &self.sha256 {
            Some(pin) if pin != actual => Err(format!(
                "the guest's sha256 is {actual}, but the grants file pins {pin}: refusing to load it"
            )),
            _ => Ok(()),
        }
    }

    /// Checks that `program` (an absolute path) may be run with `args`.
    /// Returns the path to execute.
    pub fn check_exec(&self, program: &str, args: &[String]) -> Result<PathBuf, NotGranted> {
        let path = Path::new(program);
        let refuse_program = || NotGranted {
            what: format!("running {program}"),
            hint: format!(
                "add `--allow-exec {program}` to the plugin's args, or an exec block to the grants file"
            ),
        };
        if !path.is_absolute() {
            return Err(refuse_program());
        }
        let canonical = std::fs::canonicalize(path).ok();
        let rules: Vec<&ExecGrant> = self
            .exec
            .iter()
            .filter(|g| g.matches_program(program, canonical.as_deref()))
            .collect();
        if rules.is_empty() {
            return Err(refuse_program());
        }
        if rules.iter().any(|g| g.allows_args(args)) {
            Ok(path.to_path_buf())
        } else {
            Err(NotGranted {
                what: format!("running {program} with arguments {args:?}"),
                hint: format!(
                    "its exec grant allows only the argument prefixes {:?}",
                    rules
                        .iter()
                        .flat_map(|g| g.args_prefix.iter())
                        .collect::<Vec<_>>()
                ),
            })
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
        let err = g.check_exec("/bin/sh", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "running /bin/sh is not granted to this guest: add `--allow-exec /bin/sh` to the \
             plugin's args, or an exec block to the grants file"
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
        assert!(g.check_exec(real.to_str().unwrap(), &[]).is_ok());
        assert!(g.check_exec(link.to_str().unwrap(), &[]).is_ok());
        assert!(g.check_exec("/bin/true", &[]).is_err());
    }

    #[test]
    fn relative_programs_are_refused() {
        let g = Grants::new(["bash".to_string()]);
        assert!(g.check_exec("bash", &[]).is_err());
    }

    fn file(text: &str) -> Result<Grants, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.wasm.grants.hcl");
        std::fs::write(&p, text).unwrap();
        Grants::default().with_file(&p)
    }

    #[test]
    fn grants_file_adds_programs_with_argument_prefixes() {
        let g = file(
            r#"
exec "/usr/local/bin/pot" {
  args_prefix = [["start"], ["destroy", "-F"]]
}
exec "/bin/true" {}
"#,
        )
        .unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            g.check_exec("/usr/local/bin/pot", &args(&["start", "web"]))
                .is_ok()
        );
        assert!(
            g.check_exec("/usr/local/bin/pot", &args(&["destroy", "-F", "-p", "x"]))
                .is_ok()
        );
        let err = g
            .check_exec("/usr/local/bin/pot", &args(&["destroy", "-p", "x"]))
            .unwrap_err();
        assert!(err.to_string().contains("argument prefixes"), "{err}");
        assert!(g.check_exec("/bin/true", &args(&["anything"])).is_ok());
    }

    #[test]
    fn grants_file_errors_name_the_problem() {
        assert!(file("exec \"bash\" {}").unwrap_err().contains("absolute"));
        assert!(file("bogus = 1").unwrap_err().contains("bogus"));
        assert!(
            file("sha256 = \"abc\"")
                .unwrap_err()
                .contains("64 hex digits")
        );
    }

    #[test]
    fn sha256_pin_refuses_other_builds() {
        let pin = "ab".repeat(32);
        let g = file(&format!("sha256 = \"{pin}\"")).unwrap();
        assert!(g.check_sha256(&pin).is_ok());
        let err = g.check_sha256(&"cd".repeat(32)).unwrap_err();
        assert!(err.contains("pins"), "{err}");
        assert!(Grants::default().check_sha256("anything").is_ok());
    }

    #[test]
    fn grants_file_sits_beside_the_guest() {
        assert_eq!(
            file_for(Path::new("/p/hello.wasm")),
            PathBuf::from("/p/hello.wasm.grants.hcl")
        );
    }
}
