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
//! # The key from the plugin's environment instead of a file (as triton-go
//! # reads TRITON_KEY_MATERIAL): the variable holds the key file's absolute
//! # path or the PEM text itself. Only the host reads it; the guest never can.
//! secret "triton-env" { env = "TRITON_KEY_MATERIAL" }
//!
//! # Environment variables the guest may read (Nomad starts the plugin with
//! # the agent's environment): an exact name, or a prefix ending in `*`. A
//! # prefix does not cover names that look secret (..._KEY_MATERIAL,
//! # ..._PASSWORD, ..._TOKEN, ..._SECRET, ...): grant those by exact name.
//! env "TRITON_*" {}
//! env "SDC_URL" {}
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
    env: Vec<EnvGrant>,
}

/// One granted environment variable, or a prefix of names (`TRITON_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvGrant {
    /// The name, or the prefix without its `*`.
    pub name: String,
    pub prefix: bool,
}

impl EnvGrant {
    fn written(&self) -> String {
        if self.prefix {
            format!("{}*", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Parts of variable names that mark a secret: a prefix grant does not
/// cover such a name (an exact grant still does).
const SECRET_LOOKING: [&str; 8] = [
    "KEY_MATERIAL",
    "PRIVATE_KEY",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "CREDENTIAL",
];

/// Whether an environment variable's name looks like it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_LOOKING.iter().any(|s| upper.contains(s))
}

/// Checks a variable name as a grant or a request may give it: not empty,
/// without `=` or NUL (which no environment entry's name can contain).
fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!(
            "{name:?} is not an environment variable name (empty, or with '=' or NUL)"
        ));
    }
    Ok(())
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
    /// Where the private key (PEM PKCS#1/PKCS#8/SEC 1 or OpenSSH) is.
    pub key: KeySource,
    /// A PEM certificate chain, for TLS client authentication.
    pub cert: Option<PathBuf>,
}

/// Where a secret's private key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A key file (absolute path).
    File(PathBuf),
    /// A variable of the plugin's environment holding the key file's
    /// absolute path or the PEM text itself (triton-go's
    /// `TRITON_KEY_MATERIAL` convention).
    Env(String),
}

/// A secret's key, located: a file to read, or PEM text taken from the
/// environment. Its `Debug` never shows the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyMaterial {
    File(PathBuf),
    Pem(String),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::File(p) => f.debug_tuple("File").field(p).finish(),
            KeyMaterial::Pem(_) => f.write_str("Pem(<redacted>)"),
        }
    }
}

impl SecretGrant {
    /// Locates the key, reading the plugin's environment for an `env`
    /// source. Errors name the secret and the variable, never the value.
    pub fn key_material(&self) -> Result<KeyMaterial, String> {
        self.key_material_from(|var| std::env::var_os(var))
    }

    /// [`Self::key_material`] with the environment given by `lookup`.
    pub fn key_material_from(
        &self,
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<KeyMaterial, String> {
        let var = match &self.key {
            KeySource::File(p) => return Ok(KeyMaterial::File(p.clone())),
            KeySource::Env(var) => var,
        };
        let name = &self.name;
        let value = lookup(var).unwrap_or_default();
        let bytes = value.as_encoded_bytes();
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(format!(
                "secret {name:?}: the environment variable {var} is not set in the plugin's \
                 environment (Nomad starts plugins with the agent's environment): set it to the \
                 key file's absolute path or the PEM text"
            ));
        }
        if trimmed.starts_with(b"-----BEGIN") {
            return match std::str::from_utf8(trimmed) {
                Ok(pem) => Ok(KeyMaterial::Pem(pem.to_owned())),
                Err(_) => Err(format!(
                    "secret {name:?}: the PEM text in {var} is not UTF-8"
                )),
            };
        }
        let path = PathBuf::from(value);
        if !path.is_absolute() {
            // Not echoed: it might be a key pasted without its PEM header.
            return Err(format!(
                "secret {name:?}: {var} must hold the key file's absolute path or the PEM \
                 text (starting with -----BEGIN); it holds neither"
            ));
        }
        Ok(KeyMaterial::File(path))
    }
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
    #[serde(default)]
    env: std::collections::BTreeMap<String, EnvBlock>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EnvBlock {}

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
    file: Option<String>,
    env: Option<String>,
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
            env: Vec::new(),
        }
    }

    /// Grants reading the environment variable `pattern`, or every variable
    /// whose name starts with its prefix when it ends in `*` (`TRITON_*`).
    pub fn with_env(mut self, pattern: &str) -> Result<Self, String> {
        let (name, prefix) = match pattern.strip_suffix('*') {
            Some(p) => (p, true),
            None => (pattern, false),
        };
        if prefix && name.is_empty() {
            return Err(format!(
                "env {pattern:?}: grant names or a prefix such as \"TRITON_*\", not the whole \
                 environment"
            ));
        }
        if name.contains('*') {
            return Err(format!(
                "env {pattern:?}: `*` may only end a prefix, as in \"TRITON_*\""
            ));
        }
        check_env_name(name).map_err(|e| format!("env {pattern:?}: {e}"))?;
        self.env.push(EnvGrant {
            name: name.to_owned(),
            prefix,
        });
        Ok(self)
    }

    /// The granted environment variables and prefixes.
    pub fn env_grants(&self) -> &[EnvGrant] {
        &self.env
    }

    /// Checks that the guest may read the environment variable `name`.
    pub fn check_env(&self, name: &str) -> Result<(), NotGranted> {
        let what = format!("reading the environment variable {name}");
        if let Err(e) = check_env_name(name) {
            return Err(NotGranted { what, hint: e });
        }
        if let Some(s) = self
            .secrets
            .values()
            .find(|s| matches!(&s.key, KeySource::Env(v) if v == name))
        {
            return Err(NotGranted {
                what,
                hint: format!(
                    "it holds the key of the secret {:?}, which only the host reads: name the \
                     secret in a signed request instead",
                    s.name
                ),
            });
        }
        if self.env.iter().any(|g| !g.prefix && g.name == name) {
            return Ok(());
        }
        let by_prefix: Vec<String> = self
            .env
            .iter()
            .filter(|g| g.prefix && name.starts_with(&g.name))
            .map(EnvGrant::written)
            .collect();
        if by_prefix.is_empty() {
            return Err(NotGranted {
                what,
                hint: format!(
                    "add `env \"{name}\" {{}}` to the grants file or `--allow-env {name}` to the \
                     plugin's args"
                ),
            });
        }
        if looks_secret(name) {
            return Err(NotGranted {
                what,
                hint: format!(
                    "its name looks secret, so the prefix grant {} does not cover it: add \
                     `env \"{name}\" {{}}` to the grants file if the guest must read it",
                    by_prefix.join(", ")
                ),
            });
        }
        Ok(())
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
        self,
        name: &str,
        file: PathBuf,
        cert: Option<PathBuf>,
    ) -> Result<Self, String> {
        if !file.is_absolute() {
            return Err(format!(
                "secret {name:?}: file and cert must be absolute paths"
            ));
        }
        self.add_secret(name, KeySource::File(file), cert)
    }

    /// Like [`Self::with_secret`], with the key taken from the plugin's
    /// environment variable `var` (the key file's path or the PEM text),
    /// read by the host when it needs the key.
    pub fn with_secret_env(
        self,
        name: &str,
        var: &str,
        cert: Option<PathBuf>,
    ) -> Result<Self, String> {
        if var.contains('*') {
            return Err(format!(
                "secret {name:?}: env names one variable, without `*`"
            ));
        }
        check_env_name(var).map_err(|e| format!("secret {name:?}: env {e}"))?;
        self.add_secret(name, KeySource::Env(var.to_owned()), cert)
    }

    fn add_secret(
        mut self,
        name: &str,
        key: KeySource,
        cert: Option<PathBuf>,
    ) -> Result<Self, String> {
        if name.is_empty() {
            return Err("secret: the name must not be empty".into());
        }
        if cert.as_ref().is_some_and(|c| !c.is_absolute()) {
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
                key,
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
            let cert = block.cert.map(PathBuf::from);
            self = match (block.file, block.env) {
                (Some(file), None) => self.with_secret(&name, PathBuf::from(file), cert),
                (None, Some(var)) => self.with_secret_env(&name, &var, cert),
                _ => Err(format!(
                    "secret {name:?}: give exactly one of file (the key file's absolute path) \
                     or env (a variable holding the key's path or PEM text)"
                )),
            }
            .map_err(in_file)?;
        }
        for pattern in file.env.into_keys() {
            self = self.with_env(&pattern).map_err(in_file)?;
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
            g.secret("triton").unwrap().key,
            KeySource::File(PathBuf::from("/etc/triton/id_rsa"))
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
    fn env_is_denied_by_default_and_names_the_grant() {
        let err = Grants::default().check_env("TRITON_URL").unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading the environment variable TRITON_URL is not granted to this guest: add \
             `env \"TRITON_URL\" {}` to the grants file or `--allow-env TRITON_URL` to the \
             plugin's args"
        );
    }

    #[test]
    fn env_grants_by_name_and_by_prefix() {
        let g = file(
            r#"
env "TRITON_*" {}
env "SDC_URL" {}
"#,
        )
        .unwrap();
        assert!(g.check_env("TRITON_URL").is_ok());
        assert!(g.check_env("TRITON_ACCOUNT").is_ok());
        assert!(g.check_env("SDC_URL").is_ok());
        // An exact grant is not a prefix; other names stay refused.
        assert!(g.check_env("SDC_URL_EXTRA").is_err());
        assert!(g.check_env("SDC_ACCOUNT").is_err());
        assert!(g.check_env("TRITON").is_err());
        assert!(g.check_env("HOME").is_err());
        assert!(g.check_env("triton_url").is_err());
    }

    #[test]
    fn a_prefix_does_not_cover_secret_looking_names() {
        let g = Grants::default().with_env("TRITON_*").unwrap();
        let err = g.check_env("TRITON_KEY_MATERIAL").unwrap_err().to_string();
        assert!(err.contains("looks secret"), "{err}");
        assert!(err.contains("TRITON_*"), "{err}");
        assert!(err.contains("env \"TRITON_KEY_MATERIAL\" {}"), "{err}");
        assert!(g.check_env("TRITON_API_TOKEN").is_err());
        assert!(g.check_env("TRITON_KEY_ID").is_ok());
        // Granted by its exact name, it is readable.
        let g = g.with_env("TRITON_API_TOKEN").unwrap();
        assert!(g.check_env("TRITON_API_TOKEN").is_ok());
    }

    #[test]
    fn the_variable_a_secret_comes_from_is_never_readable() {
        let g = file(
            r#"
secret "triton" { env = "TRITON_KEY_MATERIAL" }
env "TRITON_KEY_MATERIAL" {}
env "TRITON_*" {}
"#,
        )
        .unwrap();
        let err = g.check_env("TRITON_KEY_MATERIAL").unwrap_err().to_string();
        assert!(
            err.contains("holds the key of the secret \"triton\", which only the host reads"),
            "{err}"
        );
        assert!(g.check_env("TRITON_URL").is_ok());
    }

    #[test]
    fn bad_env_grants_name_the_problem() {
        let e = Grants::default().with_env("*").unwrap_err();
        assert!(e.contains("not the whole environment"), "{e}");
        let e = Grants::default().with_env("A*B").unwrap_err();
        assert!(e.contains("may only end a prefix"), "{e}");
        let e = file("env \"A=B\" {}").unwrap_err();
        assert!(e.contains("'='"), "{e}");
        let e = file("env \"X\" { write = true }").unwrap_err();
        assert!(e.contains("write"), "{e}");
        // A request for a name no environment can hold is refused, not looked up.
        let g = Grants::default().with_env("TRITON_*").unwrap();
        assert!(g.check_env("TRITON_=x").is_err());
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(Into::into)
    }

    #[test]
    fn secret_from_env_takes_a_path_or_the_pem_text() {
        let g = file(r#"secret "triton" { env = "TRITON_KEY_MATERIAL" }"#).unwrap();
        let s = g.secret("triton").unwrap();
        assert_eq!(s.key, KeySource::Env("TRITON_KEY_MATERIAL".into()));
        let path = s
            .key_material_from(env_of(&[("TRITON_KEY_MATERIAL", "/home/op/.ssh/id_rsa")]))
            .unwrap();
        assert_eq!(
            path,
            KeyMaterial::File(PathBuf::from("/home/op/.ssh/id_rsa"))
        );
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----";
        let got = s
            .key_material_from(env_of(&[("TRITON_KEY_MATERIAL", &format!("\n{pem}\n"))]))
            .unwrap();
        assert_eq!(got, KeyMaterial::Pem(pem.into()));
        // The text never shows in debug output.
        assert_eq!(format!("{got:?}"), "Pem(<redacted>)");
    }

    #[test]
    fn secret_from_env_errors_name_the_variable_not_the_value() {
        let g = Grants::default()
            .with_secret_env("triton", "TRITON_KEY_MATERIAL", None)
            .unwrap();
        let s = g.secret("triton").unwrap();
        let e = s.key_material_from(env_of(&[])).unwrap_err();
        assert!(
            e.contains(
                "secret \"triton\": the environment variable TRITON_KEY_MATERIAL is not set"
            ),
            "{e}"
        );
        let e = s
            .key_material_from(env_of(&[("TRITON_KEY_MATERIAL", "  ")]))
            .unwrap_err();
        assert!(e.contains("is not set"), "{e}");
        let e = s
            .key_material_from(env_of(&[("TRITON_KEY_MATERIAL", "MIIEvQIBADANBgkq")]))
            .unwrap_err();
        assert!(e.contains("absolute path or the PEM"), "{e}");
        assert!(!e.contains("MIIE"), "{e}");
    }

    #[test]
    fn secret_blocks_take_exactly_one_key_source() {
        let e = file(r#"secret "k" {}"#).unwrap_err();
        assert!(e.contains("exactly one of file"), "{e}");
        let e = file("secret \"k\" {\n file = \"/k\"\n env = \"K\"\n}").unwrap_err();
        assert!(e.contains("exactly one of file"), "{e}");
        let e = file(r#"secret "k" { env = "K_*" }"#).unwrap_err();
        assert!(e.contains("without `*`"), "{e}");
        let g = file("secret \"docker\" {\n env = \"DOCKER_KEY\"\n cert = \"/etc/cert.pem\"\n}")
            .unwrap();
        assert_eq!(
            g.secret("docker").unwrap().cert,
            Some(PathBuf::from("/etc/cert.pem"))
        );
    }

    #[test]
    fn grants_file_sits_beside_the_guest() {
        assert_eq!(
            file_for(Path::new("/p/hello.wasm")),
            PathBuf::from("/p/hello.wasm.grants.hcl")
        );
    }
}
