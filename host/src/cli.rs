//! Command-line flags. One table ([`FLAGS`]) is the source of truth for
//! both parsing and the help text.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One flag: its name, the value it takes (if any) and what it is for.
#[derive(Debug)]
pub struct Flag {
    pub name: &'static str,
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub repeatable: bool,
}

/// Every flag the host accepts.
pub const FLAGS: &[Flag] = &[
    Flag {
        name: "--guest",
        value: Some("PATH"),
        help: "The driver guest (.wasm component or precompiled .cwasm). A relative path is \
               tried against the current directory, then the binary's own directory (Nomad's \
               plugin_dir). Default: <binary name>.wasm beside the binary.",
        repeatable: false,
    },
    Flag {
        name: "--allow-exec",
        value: Some("PATH"),
        help: "Grant the guest running this program (absolute path; symlinks resolved). \
               Repeat for each program. Nothing is granted by default.",
        repeatable: true,
    },
    Flag {
        name: "--log-level",
        value: Some("LEVEL"),
        help: "trace, debug, info, warn or error, or a tracing filter. Default: $NOMAD_WASM_LOG, else info.",
        repeatable: false,
    },
    Flag {
        name: "--cache-dir",
        value: Some("DIR"),
        help: "Where precompiled guests are cached (\"\" disables the cache). Default: \
               /var/cache/nomad-driver-wasm as root, else $XDG_CACHE_HOME or ~/.cache.",
        repeatable: false,
    },
    Flag {
        name: "--state-dir",
        value: Some("DIR"),
        help: "Where task supervisors keep their records (pids, exit statuses) so tasks \
               survive host restarts. Default: /run/nomad-driver-wasm as root, else \
               $XDG_RUNTIME_DIR/nomad-driver-wasm or /tmp/nomad-driver-wasm-<uid>.",
        repeatable: false,
    },
    Flag {
        name: "--call-timeout",
        value: Some("MILLIS"),
        help: "Guest compute time allowed per call. Default: 5000.",
        repeatable: false,
    },
    Flag {
        name: "--max-memory",
        value: Some("MIB"),
        help: "Linear memory allowed per guest call, in MiB. Default: 64.",
        repeatable: false,
    },
    Flag {
        name: "--fingerprint-interval",
        value: Some("SECONDS"),
        help: "How often the driver's health is re-checked and sent to Nomad. Default: 30.",
        repeatable: false,
    },
    Flag {
        name: "--help",
        value: None,
        help: "Print this help.",
        repeatable: false,
    },
    Flag {
        name: "--version",
        value: None,
        help: "Print the host's version.",
        repeatable: false,
    },
];

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub guest: Option<PathBuf>,
    pub allow_exec: Vec<String>,
    pub log_level: Option<String>,
    pub cache_dir: Option<Option<PathBuf>>,
    pub state_dir: Option<PathBuf>,
    pub call_timeout: Duration,
    pub max_memory_mib: usize,
    pub fingerprint_interval: Duration,
    pub help: bool,
    pub version: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            guest: None,
            allow_exec: Vec::new(),
            log_level: None,
            cache_dir: None,
            state_dir: None,
            call_timeout: Duration::from_millis(5000),
            max_memory_mib: 64,
            fingerprint_interval: Duration::from_secs(30),
            help: false,
            version: false,
        }
    }
}

/// A command line that cannot be understood; the text says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}\nRun with --help for the flags.")]
pub struct UsageError(String);

fn number<T: std::str::FromStr>(flag: &str, v: &str, what: &str) -> Result<T, UsageError> {
    v.parse()
        .map_err(|_| UsageError(format!("{flag} expects {what}, got {v:?}")))
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, UsageError> {
    let mut o = Options::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let flag = FLAGS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| UsageError(format!("unknown argument {arg:?}")))?;
        if !flag.repeatable && seen.contains(&flag.name) {
            return Err(UsageError(format!("{} given twice", flag.name)));
        }
        seen.push(flag.name);
        let value = match flag.value {
            None => None,
            Some(kind) => Some(match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| UsageError(format!("{} needs a value: {kind}", flag.name)))?,
            }),
        };
        let v = value.unwrap_or_default();
        match flag.name {
            "--guest" => o.guest = Some(PathBuf::from(v)),
            "--allow-exec" => o.allow_exec.push(v),
            "--log-level" => o.log_level = Some(v),
            "--cache-dir" => o.cache_dir = Some((!v.is_empty()).then(|| PathBuf::from(v))),
            "--state-dir" => o.state_dir = Some(PathBuf::from(v)),
            "--call-timeout" => {
                o.call_timeout = Duration::from_millis(number(flag.name, &v, "milliseconds")?)
            }
            "--max-memory" => o.max_memory_mib = number(flag.name, &v, "a number of MiB")?,
            "--fingerprint-interval" => {
                let secs: u64 = number(flag.name, &v, "a number of seconds")?;
                o.fingerprint_interval = Duration::from_secs(secs.max(1));
            }
            "--help" => o.help = true,
            "--version" => o.version = true,
            _ => unreachable!("every flag in FLAGS is handled"),
        }
    }
    Ok(o)
}

/// The help text, generated from [`FLAGS`].
pub fn help(binary: &str) -> String {
    let mut out = format!(
        "{binary} {}: a Nomad task driver plugin whose driver is a WebAssembly component.\n\n\
         Nomad runs it from plugin_dir with the args of its `plugin \"{binary}\"` block.\n\n\
         Flags:\n",
        env!("CARGO_PKG_VERSION")
    );
    for f in FLAGS {
        let head = match f.value {
            Some(v) => format!("{} {v}", f.name),
            None => f.name.to_owned(),
        };
        out.push_str(&format!("  {head}\n"));
        for line in wrap(f.help, 72) {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().map(|l| (l.len(), l));
        match line {
            Some((0, l)) => l.push_str(word),
            Some((len, l)) if len + 1 + word.len() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// Where the guest is: `--guest` (relative to the current directory, then
/// to the binary's directory), else `<binary>.wasm` beside the binary.
pub fn resolve_guest(opt: Option<&Path>, exe: &Path) -> Result<PathBuf, String> {
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    match opt {
        Some(p) if p.is_absolute() => Ok(p.to_path_buf()),
        Some(p) => {
            if p.exists() {
                return Ok(p.to_path_buf());
            }
            let beside = exe_dir.join(p);
            if beside.exists() {
                Ok(beside)
            } else {
                Err(format!(
                    "guest {} not found (looked in the current directory and in {})",
                    p.display(),
                    exe_dir.display()
                ))
            }
        }
        None => {
            let name = exe
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fallback = exe_dir.join(format!("{name}.wasm"));
            if fallback.exists() {
                Ok(fallback)
            } else {
                Err(format!(
                    "no guest given: pass --guest <file.wasm> in the plugin block's args, \
                     or put {} beside the binary",
                    fallback.display()
                ))
            }
        }
    }
}

/// The default supervisor state directory for this user.
pub fn default_state_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/nomad-driver-wasm");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("nomad-driver-wasm"),
        None => std::env::temp_dir().join(format!("nomad-driver-wasm-{uid}")),
    }
}

/// The default cache directory for this user.
pub fn default_cache_dir() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/nomad-driver-wasm"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("nomad-driver-wasm"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_plugin_block_args() {
        let o = parse(args(&[
            "--guest",
            "hello.wasm",
            "--allow-exec",
            "/usr/bin/bash",
            "--allow-exec=/usr/bin/fish",
            "--call-timeout",
            "250",
        ]))
        .unwrap();
        assert_eq!(o.guest, Some(PathBuf::from("hello.wasm")));
        assert_eq!(o.allow_exec, vec!["/usr/bin/bash", "/usr/bin/fish"]);
        assert_eq!(o.call_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert!(
            parse(args(&["--bogus"]))
                .unwrap_err()
                .to_string()
                .contains("unknown argument \"--bogus\"")
        );
        assert!(
            parse(args(&["--guest"]))
                .unwrap_err()
                .to_string()
                .contains("--guest needs a value: PATH")
        );
        assert!(
            parse(args(&["--guest", "a", "--guest", "b"]))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            parse(args(&["--call-timeout", "soon"]))
                .unwrap_err()
                .to_string()
                .contains("milliseconds")
        );
    }

    #[test]
    fn help_lists_every_flag() {
        let h = help("nomad-driver-wasm");
        for f in FLAGS {
            assert!(h.contains(f.name), "{} missing from help", f.name);
        }
    }

    #[test]
    fn guest_falls_back_to_binary_name_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hello");
        let err = resolve_guest(None, &exe).unwrap_err();
        assert!(err.contains("hello.wasm"), "{err}");
        std::fs::write(dir.path().join("hello.wasm"), b"").unwrap();
        assert_eq!(
            resolve_guest(None, &exe).unwrap(),
            dir.path().join("hello.wasm")
        );
        assert_eq!(
            resolve_guest(Some(Path::new("hello.wasm")), &exe).unwrap(),
            dir.path().join("hello.wasm")
        );
    }
}
