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
//!
//! # Outgoing HTTP(S) to exactly this origin (scheme, host, port); an
//! # optional CA file for a private server certificate (sdc-docker's).
//! http "https://us-central-1.api.mnx.io" {}
//! http "https://us-central-1.docker.mnx.io:2376" {
//!   ca_file = "/etc/nomad/triton/docker-ca.pem"
//! }
//!
//! # A key the guest may have the host sign with, by name; the guest never
//! # sees the key. With `cert`, also usable as a TLS client certificate.
//! secret "triton" { file = "/etc/nomad/triton/id_rsa" }
//! secret "docker" {
//!   file = "/etc/nomad/triton/docker-key.pem"
//!   cert = "/etc/nomad/triton/docker-cert.pem"
//! }
//!
//! # Files under this directory, read-only unless `write = true`. (In a
//! # call about a task, the task's allocation directory is always usable.)
//! dir "/var/lib/machines" {}
//! dir "/var/lib/nomad-nspawn" { write = true }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The resolved grants of one guest.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    exec: Vec<ExecGrant>,
    /// The sha256 the guest must have, if pinned.
    sha256: Option<String>,
    http: Vec<HttpGrant>,
    secrets: std::collections::BTreeMap<String, SecretGrant>,
    dirs: Vec<DirGrant>,
}

/// One granted directory tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// As the operator wrote it (absolute); guests name files by it.
    pub path: PathBuf,
    pub write: bool,
}

/// One granted HTTP origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `scheme://host:port`, port always written out.
    pub origin: String,
    /// Extra trusted CA certificates (PEM) for this origin.
    pub ca_file: Option<PathBuf>,
}

/// One host-held secret: a private key, optionally with its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    pub name: String,
    /// The private key file (PEM PKCS#1/PKCS#8/SEC 1 or OpenSSH).
    pub file: PathBuf,
    /// A PEM certificate chain, for TLS client authentication.
    pub cert: Option<PathBuf>,
}

/// The origin of an http(s) URL as the grants compare it:
/// `scheme://host:port` with the port written out. None for other schemes
/// or URLs without a host.
pub fn origin_of(url: &url::Url) -> Option<String> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{scheme}://{}:{port}", host.to_ascii_lowercase()))
}

/// Parses an origin as written in a grant: an http(s) URL with nothing
/// after the authority.
fn parse_origin(given: &str) -> Result<String, String> {
    let url = url::Url::parse(given).map_err(|e| format!("http {given:?}: not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "http {given:?}: an origin carries no user or password"
        ));
    }
    if (url.path() != "/" && !url.path().is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "http {given:?}: give only scheme://host[:port], without a path or query"
        ));
    }
    origin_of(&url).ok_or_else(|| format!("http {given:?}: the scheme must be http or https"))
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
    #[serde(default)]
    http: std::collections::BTreeMap<String, HttpBlock>,
    #[serde(default)]
    secret: std::collections::BTreeMap<String, SecretBlock>,
    #[serde(default)]
    dir: std::collections::BTreeMap<String, DirBlock>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DirBlock {
    #[serde(default)]
    write: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpBlock {
    ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBlock {
    file: String,
    cert: Option<String>,
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
            http: Vec::new(),
            secrets: Default::default(),
            dirs: Vec::new(),
        }
    }

    /// Grants the files under `dir` (an absolute path), writable if `write`.
    pub fn with_dir(mut self, dir: &Path, write: bool) -> Result<Self, String> {
        if !dir.is_absolute() {
            return Err(format!(
                "dir {}: directories must be absolute paths",
                dir.display()
            ));
        }
        // Lexically normal: no `.`/`..` parts, no trailing slash.
        let path: PathBuf = dir.components().collect();
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("dir {}: must not contain `..`", dir.display()));
        }
        self.dirs.push(DirGrant { path, write });
        Ok(self)
    }

    /// The granted directories.
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// Grants HTTP(S) to one origin (`--allow-http`-style).
    pub fn with_http_origin(
        mut self,
        origin: &str,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, String> {
        let origin = parse_origin(origin)?;
        if let Some(ca) = &ca_file
            && !ca.is_absolute()
        {
            return Err(format!("http {origin:?}: ca_file must be an absolute path"));
        }
        self.http.push(HttpGrant { origin, ca_file });
        Ok(self)
    }

    /// Grants signing with (and, with `cert`, TLS client authentication by)
    /// the key in `file`, under `name`.
    pub fn with_secret(
        mut self,
        name: &str,
        file: PathBuf,
        cert: Option<PathBuf>,
    ) -> Result<Self, String> {
        if name.is_empty() {
            return Err("secret: the name must not be empty".into());
        }
        if !file.is_absolute() || cert.as_ref().is_some_and(|c| !c.is_absolute()) {
            return Err(format!(
                "secret {name:?}: file and cert must be absolute paths"
            ));
        }
        if self.secrets.contains_key(name) {
            return Err(format!("secret {name:?} is granted twice"));
        }
        self.secrets.insert(
            name.to_string(),
            SecretGrant {
                name: name.to_string(),
                file,
                cert,
            },
        );
        Ok(self)
    }

    /// The granted origins.
    pub fn http_origins(&self) -> impl Iterator<Item = &str> {
        self.http.iter().map(|g| g.origin.as_str())
    }

    /// Checks that `url` is an http(s) URL to a granted origin.
    pub fn check_http(&self, url: &url::Url) -> Result<&HttpGrant, NotGranted> {
        let Some(origin) = origin_of(url) else {
            return Err(NotGranted {
                what: format!("requesting {url}"),
                hint: "only http and https URLs with a host can be granted".into(),
            });
        };
        self.http
            .iter()
            .find(|g| g.origin == origin)
            .ok_or_else(|| NotGranted {
                what: format!("HTTP to {origin}"),
                hint: format!("add `http \"{origin}\" {{}}` to the grants file"),
            })
    }

    /// The secret granted under `name`.
    pub fn secret(&self, name: &str) -> Result<&SecretGrant, NotGranted> {
        self.secrets.get(name).ok_or_else(|| NotGranted {
            what: format!("the secret {name:?}"),
            hint: format!(
                "add `secret \"{name}\" {{ file = \"/path/to/key\" }}` to the grants file"
            ),
        })
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
        let in_file = |e: String| format!("grants file {}: {e}", path.display());
        for (origin, block) in file.http {
            self = self
                .with_http_origin(&origin, block.ca_file.map(PathBuf::from))
                .map_err(in_file)?;
        }
        for (dir, block) in file.dir {
            self = self
                .with_dir(Path::new(&dir), block.write)
                .map_err(in_file)?;
        }
        for (name, block) in file.secret {
            self = self
                .with_secret(
                    &name,
                    PathBuf::from(block.file),
                    block.cert.map(PathBuf::from),
                )
                .map_err(in_file)?;
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
    fn http_is_denied_by_default_and_names_the_grant() {
        let g = Grants::default();
        let url = url::Url::parse("https://api.example.com/my/machines").unwrap();
        let err = g.check_http(&url).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTP to https://api.example.com:443 is not granted to this guest: add \
             `http \"https://api.example.com:443\" {}` to the grants file"
        );
        let err = g.secret("triton").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the secret \"triton\" is not granted to this guest: add \
             `secret \"triton\" { file = \"/path/to/key\" }` to the grants file"
        );
    }

    #[test]
    fn http_origins_match_exactly() {
        let g = file(
            r#"
http "https://API.example.com" {}
http "http://127.0.0.1:8080" { ca_file = "/etc/ca.pem" }
secret "triton" { file = "/etc/triton/id_rsa" }
secret "docker" {
  file = "/etc/triton/key.pem"
  cert = "/etc/triton/cert.pem"
}
"#,
        )
        .unwrap();
        let ok = |u: &str| g.check_http(&url::Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://api.example.com/my/machines?x=1"));
        assert!(ok("https://api.example.com:443/"));
        assert!(ok("http://127.0.0.1:8080/containers/json"));
        // Other scheme, port, host or a look-alike host: refused.
        assert!(!ok("http://api.example.com/"));
        assert!(!ok("https://api.example.com:8443/"));
        assert!(!ok("https://api.example.com.evil.test/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://localhost:8080/"));
        let granted = g
            .check_http(&url::Url::parse("http://127.0.0.1:8080/").unwrap())
            .unwrap();
        assert_eq!(granted.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            g.secret("triton").unwrap().file,
            PathBuf::from("/etc/triton/id_rsa")
        );
        assert_eq!(
            g.secret("docker").unwrap().cert,
            Some(PathBuf::from("/etc/triton/cert.pem"))
        );
        assert!(g.secret("other").is_err());
    }

    #[test]
    fn bad_http_and_secret_grants_name_the_problem() {
        assert!(
            file("http \"ftp://x\" {}")
                .unwrap_err()
                .contains("http or https")
        );
        assert!(
            file("http \"https://x/path\" {}")
                .unwrap_err()
                .contains("without a path")
        );
        assert!(
            file("http \"https://u:p@x\" {}")
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            file("http \"not a url\" {}")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(
            file("http \"https://x\" { ca_file = \"rel.pem\" }")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            file("secret \"k\" { file = \"id_rsa\" }")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(file("secret \"k\" {}").unwrap_err().contains("file"));
        let err = file("secret \"k\" {\n file = \"/k\"\n bogus = 1\n}").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn grants_file_grants_directories() {
        let g = file(
            r#"
            dir "/var/lib/machines" {}
            dir "/var/lib/nomad-nspawn/" { write = true }
            "#,
        )
        .unwrap();
        assert_eq!(
            g.dirs(),
            [
                DirGrant {
                    path: PathBuf::from("/var/lib/machines"),
                    write: false
                },
                DirGrant {
                    path: PathBuf::from("/var/lib/nomad-nspawn"),
                    write: true
                },
            ]
        );
        let e = file(r#"dir "images" {}"#).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = file(r#"dir "/a/../etc" {}"#).unwrap_err();
        assert!(e.contains(".."), "{e}");
        let e = file(r#"dir "/a" { writable = true }"#).unwrap_err();
        assert!(e.contains("writable"), "{e}");
    }

    #[test]
    fn grants_file_sits_beside_the_guest() {
        assert_eq!(
            file_for(Path::new("/p/hello.wasm")),
            PathBuf::from("/p/hello.wasm.grants.hcl")
        );
    }
}
