//! The command line. Tables are the source of truth for both parsing and
//! the help text: [`FLAGS`] (plugin mode, what Nomad passes), [`COMMAND_FLAGS`]
//! (flags only the local commands take) and [`COMMANDS`] (the local commands
//! for driver authors and operators, each naming the flags it accepts).

pub mod commands;
pub mod jobfile;
mod run_task;
pub mod schema_doc;

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
        name: "--allow-http",
        value: Some("ORIGIN"),
        help: "Grant the guest HTTP(S) requests to this origin, scheme://host[:port] \
               (exactly; redirects elsewhere are refused). Repeat for each origin.",
        repeatable: true,
    },
    Flag {
        name: "--secret",
        value: Some("NAME=KEYFILE"),
        help: "Let the guest have the host sign HTTP requests with the private key in \
               KEYFILE (absolute path), by NAME; the guest never sees the key. \
               NAME=env:VAR takes the key from the plugin's environment variable VAR \
               instead (the key file's path or the PEM text, as TRITON_KEY_MATERIAL), \
               which the guest then cannot read. Repeat for each key. TLS client \
               certificates: a secret block in the grants file.",
        repeatable: true,
    },
    Flag {
        name: "--allow-env",
        value: Some("NAME"),
        help: "Grant the guest reading this variable of the plugin's environment (Nomad \
               starts plugins with the agent's), or every variable starting with PREFIX \
               when given as PREFIX* (e.g. TRITON_*; a prefix does not cover names that \
               look secret, such as ..._KEY_MATERIAL or ..._TOKEN). Repeat for each.",
        repeatable: true,
    },
    Flag {
        name: "--log-level",
        value: Some("LEVEL"),
        help: "trace, debug, info, warn or error, or a tracing filter. Default: $NOMAD_WASM_LOG, else info (warn for the local commands).",
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

/// Flags only the local commands take (see [`Command::flags`]).
pub const COMMAND_FLAGS: &[Flag] = &[
    Flag {
        name: "--plugin-config",
        value: Some("FILE"),
        help: "The agent's plugin config for the driver: the body of the `config { }` block \
               of `plugin \"...\"` in the agent config, that block itself, or an agent config \
               file with one plugin block. Default: none (the driver's defaults apply).",
        repeatable: false,
    },
    Flag {
        name: "--task",
        value: Some("NAME"),
        help: "In a job file with several tasks for this driver, the one to use.",
        repeatable: false,
    },
    Flag {
        name: "--memory-mb",
        value: Some("MB"),
        help: "The task's memory, as `resources { memory = MB }`. Default: the job \
               file's, else 300.",
        repeatable: false,
    },
    Flag {
        name: "--cpu",
        value: Some("MHZ"),
        help: "The task's CPU shares, as `resources { cpu = MHZ }`. Default: the job \
               file's, else 100.",
        repeatable: false,
    },
    Flag {
        name: "--kill-timeout",
        value: Some("SECONDS"),
        help: "After Ctrl-C, how long the task has to stop before it is killed, as the \
               job's `kill_timeout`. A second Ctrl-C kills at once. Default: the job \
               file's, else 5.",
        repeatable: false,
    },
    Flag {
        name: "-o",
        value: Some("FILE"),
        help: "Write the precompiled guest to FILE (load it with --guest FILE). Without -o \
               the precompile cache is filled instead.",
        repeatable: false,
    },
];

/// One local command: run by a person, not by Nomad.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    /// Positional arguments, all required, as shown in the usage line.
    pub args: &'static [&'static str],
    /// The flags it accepts, by name, from [`FLAGS`] and [`COMMAND_FLAGS`].
    pub flags: &'static [&'static str],
    /// One line for the command list.
    pub help: &'static str,
    /// Paragraphs (separated by blank lines) for `<command> --help`.
    pub long: &'static str,
}

/// Flags every command that loads a guest accepts.
const LOADING: [&str; 8] = [
    "--allow-exec",
    "--allow-http",
    "--secret",
    "--allow-env",
    "--cache-dir",
    "--call-timeout",
    "--max-memory",
    "--log-level",
];

/// Every local command.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "schema",
        args: &["<guest.wasm>"],
        flags: &LOADING,
        help: "Print the driver's plugin and task config schemas as commented HCL to copy.",
        long: "Loads the guest (with the same grants rules as the plugin) and prints \
               its agent plugin config and its task config as HCL documentation: every \
               attribute and block with its type, whether it is required, its default and \
               its nesting. Required attributes and attributes with a default are written \
               out; optional ones without a default are commented out.",
    },
    Command {
        name: "validate",
        args: &["<guest.wasm>", "<file>"],
        flags: &LOADING,
        help: "Decode a job file's task configs (or a bare config body) as Nomad would.",
        long: "<file> is a job file, whose tasks with `driver` set to this guest's driver \
               name are each checked, or the body of one task's `config { }` block. Each \
               config is decoded against the driver's task config schema the way Nomad \
               decodes it before starting a task, with `${...}` templates interpolated \
               with the variables such a task would have (NOMAD_*, with example paths; \
               the host environment; the task's `env` block; the node's basic `node.*` \
               and `attr.*` values as this machine would have them). Errors name the file, \
               line and field; the exit status is 1 if any config is invalid.\n\n\
               The guest's own checks of a task config (those it makes when a task \
               starts) are not run: use `run` for those.\n\n\
               <file> may also be an agent config with a `plugin` block: its `config` \
               block is decoded against the plugin config schema and then given to the \
               guest's set-config, as Nomad's SetConfig does.",
    },
    Command {
        name: "run",
        args: &["<guest.wasm>", "<file>"],
        flags: &[
            "--allow-exec",
            "--allow-http",
            "--secret",
            "--allow-env",
            "--cache-dir",
            "--call-timeout",
            "--max-memory",
            "--log-level",
            "--state-dir",
            "--plugin-config",
            "--task",
            "--memory-mb",
            "--cpu",
            "--kill-timeout",
        ],
        help: "Run one task locally without Nomad; its output goes to this terminal.",
        long: "<file> is a job file or a task config body, as for `validate`. The task \
               goes through the same driver code as under Nomad: the plugin config is set, \
               the task started in a temporary allocation directory laid out like Nomad's \
               (alloc/, <task>/local, <task>/secrets, stdout and stderr FIFOs copied to \
               this terminal) with NOMAD_* variables set (templates in the config see \
               them, and the node's basic attributes, as in `validate`), and waited for. Ctrl-C stops it \
               (the driver's stop, then a kill after --kill-timeout); the allocation \
               directory is removed afterwards.\n\n\
               The exit status is the task's exit code, 128 + the signal if a signal ended \
               it, or 1 if it could not be started. The host's grants apply: grant the \
               programs the driver runs with --allow-exec or the guest's grants file.",
    },
    Command {
        name: "precompile",
        args: &["<guest.wasm>"],
        flags: &["-o", "--cache-dir", "--log-level"],
        help: "Compile the guest ahead of time, to a file (-o) or into the cache.",
        long: "Compiles the guest for this host build and machine, so loading it takes \
               about a millisecond instead of a compile. With -o FILE the artifact is \
               written to FILE, which the plugin (and these commands) load like the \
               .wasm; it only loads on a host of the same build. Without -o it is put in \
               the precompile cache (--cache-dir), where the plugin finds it by the \
               guest's sha256.",
    },
];

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub guest: Option<PathBuf>,
    pub allow_exec: Vec<String>,
    /// `--allow-http` origins, as given.
    pub allow_http: Vec<String>,
    /// `--secret` values, `NAME=KEYFILE` or `NAME=env:VAR`.
    pub secrets: Vec<String>,
    /// `--allow-env` names and `PREFIX*` patterns, as given.
    pub allow_env: Vec<String>,
    pub log_level: Option<String>,
    pub cache_dir: Option<Option<PathBuf>>,
    pub state_dir: Option<PathBuf>,
    pub call_timeout: Duration,
    pub max_memory_mib: usize,
    pub fingerprint_interval: Duration,
    pub help: bool,
    pub version: bool,
    pub plugin_config: Option<PathBuf>,
    pub task: Option<String>,
    /// `--memory-mb`, `--cpu`, `--kill-timeout`: None when not given, so
    /// the job file's values apply.
    pub memory_mb: Option<i64>,
    pub cpu: Option<i64>,
    pub kill_timeout: Option<Duration>,
    pub output: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            guest: None,
            allow_exec: Vec::new(),
            allow_http: Vec::new(),
            secrets: Vec::new(),
            allow_env: Vec::new(),
            log_level: None,
            cache_dir: None,
            state_dir: None,
            call_timeout: Duration::from_millis(5000),
            max_memory_mib: 64,
            fingerprint_interval: Duration::from_secs(30),
            help: false,
            version: false,
            plugin_config: None,
            task: None,
            memory_mb: None,
            cpu: None,
            kill_timeout: None,
            output: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// No command: serve Nomad (or explain, without Nomad's cookie).
    Plugin(Options),
    /// A local command with its positional arguments.
    Command {
        command: &'static Command,
        args: Vec<String>,
        options: Options,
    },
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Command {}

/// A command line that cannot be understood; the text says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}\nRun with --help for {what}.")]
pub struct UsageError {
    message: String,
    what: String,
}

impl UsageError {
    fn new(message: String, command: Option<&Command>) -> Self {
        let what = match command {
            Some(c) => format!("the usage of {}", c.name),
            None => "the flags and commands".to_owned(),
        };
        UsageError { message, what }
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str, what: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} expects {what}, got {v:?}"))
}

fn find_flag(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().chain(COMMAND_FLAGS).find(|f| f.name == name)
}

/// Parses plugin-mode arguments (what Nomad passes): flags only.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, UsageError> {
    let mut positional = Vec::new();
    let o = parse_flags(args, None, &mut positional)?;
    if let Some(first) = positional.first() {
        return Err(UsageError::new(format!("unknown argument {first:?}"), None));
    }
    Ok(o)
}

/// Parses the arguments after the program name: a command and its
/// arguments, or plugin-mode flags.
pub fn parse_invocation(args: impl IntoIterator<Item = String>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter().peekable();
    let first = match args.peek() {
        Some(a) if !a.starts_with('-') => a.clone(),
        _ => return parse(args).map(Invocation::Plugin),
    };
    let Some(command) = COMMANDS.iter().find(|c| c.name == first) else {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        return Err(UsageError::new(
            format!(
                "unknown command {first:?}; the commands are {}",
                names.join(", ")
            ),
            None,
        ));
    };
    args.next();
    let mut positional = Vec::new();
    let options = parse_flags(args, Some(command), &mut positional)?;
    if !options.help && positional.len() != command.args.len() {
        let msg = if positional.len() < command.args.len() {
            format!(
                "{} needs {}",
                command.name,
                command.args[positional.len()..].join(" ")
            )
        } else {
            format!(
                "{} takes {} argument(s) ({}); {:?} is one too many",
                command.name,
                command.args.len(),
                command.args.join(" "),
                positional[command.args.len()]
            )
        };
        return Err(UsageError::new(msg, Some(command)));
    }
    Ok(Invocation::Command {
        command,
        args: positional,
        options,
    })
}

/// Parses flags; with a command, only the flags it accepts (and --help),
/// with arguments not starting with `-` collected as positionals.
fn parse_flags(
    args: impl IntoIterator<Item = String>,
    command: Option<&Command>,
    positional: &mut Vec<String>,
) -> Result<Options, UsageError> {
    let err = |m: String| UsageError::new(m, command);
    let mut o = Options::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') || arg == "-" {
            positional.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let allowed = |f: &Flag| match command {
            None => FLAGS.iter().any(|g| g.name == f.name),
            Some(c) => f.name == "--help" || c.flags.contains(&f.name),
        };
        let flag = match find_flag(&name) {
            Some(f) if allowed(f) => f,
            Some(f) => {
                return Err(err(match command {
                    Some(c) => format!("{} does not take {}", c.name, f.name),
                    None => format!("{} is only for the local commands", f.name),
                }));
            }
            None => return Err(err(format!("unknown argument {arg:?}"))),
        };
        if !flag.repeatable && seen.contains(&flag.name) {
            return Err(err(format!("{} given twice", flag.name)));
        }
        seen.push(flag.name);
        let value = match flag.value {
            None => None,
            Some(kind) => Some(match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| err(format!("{} needs a value: {kind}", flag.name)))?,
            }),
        };
        apply(&mut o, flag.name, value.unwrap_or_default()).map_err(err)?;
    }
    Ok(o)
}

fn apply(o: &mut Options, name: &str, v: String) -> Result<(), String> {
    match name {
        "--guest" => o.guest = Some(PathBuf::from(v)),
        "--allow-exec" => o.allow_exec.push(v),
        "--allow-http" => o.allow_http.push(v),
        "--secret" => o.secrets.push(v),
        "--allow-env" => o.allow_env.push(v),
        "--log-level" => o.log_level = Some(v),
        "--cache-dir" => o.cache_dir = Some((!v.is_empty()).then(|| PathBuf::from(v))),
        "--state-dir" => o.state_dir = Some(PathBuf::from(v)),
        "--call-timeout" => {
            o.call_timeout = Duration::from_millis(number(name, &v, "milliseconds")?)
        }
        "--max-memory" => o.max_memory_mib = number(name, &v, "a number of MiB")?,
        "--fingerprint-interval" => {
            let secs: u64 = number(name, &v, "a number of seconds")?;
            o.fingerprint_interval = Duration::from_secs(secs.max(1));
        }
        "--help" => o.help = true,
        "--version" => o.version = true,
        "--plugin-config" => o.plugin_config = Some(PathBuf::from(v)),
        "--task" => o.task = Some(v),
        "--memory-mb" => {
            let mb = number(name, &v, "a positive number of MB")?;
            o.memory_mb = Some(mb);
            if mb <= 0 {
                return Err(format!(
                    "--memory-mb expects a positive number of MB, got {v:?}"
                ));
            }
        }
        "--cpu" => {
            let mhz = number(name, &v, "a positive number of MHz")?;
            o.cpu = Some(mhz);
            if mhz <= 0 {
                return Err(format!("--cpu expects a positive number of MHz, got {v:?}"));
            }
        }
        "--kill-timeout" => {
            o.kill_timeout = Some(Duration::from_secs(number(
                name,
                &v,
                "a number of seconds",
            )?))
        }
        "-o" => o.output = Some(PathBuf::from(v)),
        other => return Err(format!("{other} is in the flag tables but not handled")),
    }
    Ok(())
}

fn flag_help(out: &mut String, f: &Flag) {
    let head = match f.value {
        Some(v) => format!("{} {v}", f.name),
        None => f.name.to_owned(),
    };
    out.push_str(&format!("  {head}\n"));
    for line in wrap(f.help, 72) {
        out.push_str(&format!("      {line}\n"));
    }
}

fn usage_line(binary: &str, c: &Command) -> String {
    format!("{binary} {} {} [FLAGS]", c.name, c.args.join(" "))
}

/// The help text, generated from [`FLAGS`] and [`COMMANDS`].
pub fn help(binary: &str) -> String {
    let mut out = format!(
        "{binary} {}: a Nomad task driver plugin whose driver is a WebAssembly component.\n\n\
         Nomad runs it from plugin_dir with the args of its `plugin \"{binary}\"` block.\n\
         Run by hand, it offers commands for driver authors and operators.\n\n\
         Usage:\n  {binary} [FLAGS]            (started by Nomad)\n  \
         {binary} <COMMAND> [ARGS] [FLAGS]\n  {binary} <COMMAND> --help\n\n\
         Commands:\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&commands_list());
    out.push_str("\nPlugin flags (Nomad passes them from the plugin block's args):\n");
    for f in FLAGS {
        flag_help(&mut out, f);
    }
    out
}

/// The commands, one per entry with its arguments and one-line help.
pub fn commands_list() -> String {
    let mut out = String::new();
    for c in COMMANDS {
        out.push_str(&format!("  {} {}\n", c.name, c.args.join(" ")));
        for line in wrap(c.help, 72) {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out
}

/// The help text of one command, generated from its table entry.
pub fn command_help(binary: &str, c: &Command) -> String {
    let mut out = format!("Usage: {}\n\n", usage_line(binary, c));
    for para in c.long.split("\n\n") {
        for line in wrap(para, 76) {
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str("Flags:\n");
    for name in c.flags.iter().chain(["--help"].iter()) {
        if let Some(f) = find_flag(name) {
            flag_help(&mut out, f);
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
    fn parses_http_and_secret_grants() {
        let o = parse(args(&[
            "--allow-http",
            "https://us-central-1.api.mnx.io",
            "--secret=triton=/etc/nomad/triton/id_rsa",
        ]))
        .unwrap();
        assert_eq!(o.allow_http, vec!["https://us-central-1.api.mnx.io"]);
        assert_eq!(o.secrets, vec!["triton=/etc/nomad/triton/id_rsa"]);
        let dir = std::env::temp_dir();
        let o = parse(args(&["--secret", "triton"])).unwrap();
        let err =
            commands::host_context(Path::new("/nonexistent/g.wasm"), &o, dir.clone()).unwrap_err();
        assert!(err.contains("NAME=KEYFILE"), "{err}");
        let o = parse(args(&["--allow-http", "ftp://x"])).unwrap();
        let err =
            commands::host_context(Path::new("/nonexistent/g.wasm"), &o, dir.clone()).unwrap_err();
        assert!(
            err.contains("--allow-http") && err.contains("http or https"),
            "{err}"
        );
        let o = parse(args(&["--secret", "k=relative/key"])).unwrap();
        let err = commands::host_context(Path::new("/nonexistent/g.wasm"), &o, dir).unwrap_err();
        assert!(
            err.contains("--secret") && err.contains("absolute"),
            "{err}"
        );
    }

    #[test]
    fn parses_env_grants_and_secrets_from_the_environment() {
        let o = parse(args(&[
            "--allow-env",
            "TRITON_*",
            "--allow-env=SDC_URL",
            "--secret",
            "triton=env:TRITON_KEY_MATERIAL",
        ]))
        .unwrap();
        assert_eq!(o.allow_env, vec!["TRITON_*", "SDC_URL"]);
        let dir = std::env::temp_dir();
        let host =
            commands::host_context(Path::new("/nonexistent/g.wasm"), &o, dir.clone()).unwrap();
        let g = &host.grants;
        assert!(g.check_env("TRITON_ACCOUNT").is_ok());
        assert!(g.check_env("SDC_URL").is_ok());
        assert!(g.check_env("SDC_ACCOUNT").is_err());
        assert_eq!(
            g.secret("triton").unwrap().key,
            crate::grants::KeySource::Env("TRITON_KEY_MATERIAL".into())
        );
        // The key's variable stays the host's even under a prefix grant.
        assert!(g.check_env("TRITON_KEY_MATERIAL").is_err());
        // The local commands take it too.
        let Invocation::Command { options, .. } = parse_invocation(args(&[
            "run",
            "g.wasm",
            "job.nomad",
            "--allow-env",
            "TRITON_URL",
        ]))
        .unwrap() else {
            panic!("expected the run command");
        };
        assert_eq!(options.allow_env, vec!["TRITON_URL"]);
        let o = parse(args(&["--allow-env", "*"])).unwrap();
        let err = commands::host_context(Path::new("/nonexistent/g.wasm"), &o, dir).unwrap_err();
        assert!(
            err.contains("--allow-env") && err.contains("not the whole environment"),
            "{err}"
        );
        assert!(
            parse(args(&["--allow-env"]))
                .unwrap_err()
                .to_string()
                .contains("--allow-env needs a value: NAME")
        );
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
    fn help_lists_every_command_and_each_command_its_flags() {
        let h = help("nomad-driver-wasm");
        for c in COMMANDS {
            assert!(
                h.contains(&format!("  {} {}\n", c.name, c.args.join(" "))),
                "{} missing from help:\n{h}",
                c.name
            );
            let ch = command_help("nomad-driver-wasm", c);
            assert!(ch.starts_with(&format!("Usage: nomad-driver-wasm {} ", c.name)));
            for f in c.flags {
                assert!(
                    find_flag(f).is_some(),
                    "{}: {f} is in no flag table",
                    c.name
                );
                assert!(ch.contains(&format!("  {f}")), "{f} missing from:\n{ch}");
            }
        }
        // Every command flag belongs to some command.
        for f in COMMAND_FLAGS {
            assert!(
                COMMANDS.iter().any(|c| c.flags.contains(&f.name)),
                "{} is taken by no command",
                f.name
            );
        }
    }

    #[test]
    fn every_flag_in_the_tables_is_handled() {
        for f in FLAGS.iter().chain(COMMAND_FLAGS) {
            let mut o = Options::default();
            let v = if f.value.is_some() { "1" } else { "" };
            apply(&mut o, f.name, v.into()).unwrap();
        }
    }

    #[test]
    fn commands_parse_with_their_flags_in_any_order() {
        let Invocation::Command {
            command,
            args: pos,
            options,
        } = parse_invocation(args(&[
            "run",
            "--memory-mb",
            "512",
            "hello.wasm",
            "task.hcl",
            "--allow-exec=/bin/bash",
            "--kill-timeout",
            "2",
        ]))
        .unwrap()
        else {
            panic!("not a command")
        };
        assert_eq!(command.name, "run");
        assert_eq!(pos, vec!["hello.wasm", "task.hcl"]);
        assert_eq!(options.memory_mb, Some(512));
        assert_eq!(options.allow_exec, vec!["/bin/bash"]);
        assert_eq!(options.kill_timeout, Some(Duration::from_secs(2)));
        assert!(matches!(
            parse_invocation(args(&["--guest", "x.wasm"])).unwrap(),
            Invocation::Plugin(o) if o.guest == Some(PathBuf::from("x.wasm"))
        ));
        assert!(matches!(
            parse_invocation(args(&["schema", "--help"])).unwrap(),
            Invocation::Command { options, .. } if options.help
        ));
    }

    #[test]
    fn command_mistakes_say_what_is_wrong() {
        let e = |a: &[&str]| parse_invocation(args(a)).unwrap_err().to_string();
        assert!(e(&["bogus"]).contains(
            "unknown command \"bogus\"; the commands are schema, validate, run, precompile"
        ));
        assert!(e(&["validate", "g.wasm"]).contains("validate needs <file>"));
        assert!(e(&["schema", "a", "b"]).contains("\"b\" is one too many"));
        assert!(
            e(&["schema", "a", "--memory-mb", "1"]).contains("schema does not take --memory-mb")
        );
        assert!(e(&["--memory-mb", "1"]).contains("--memory-mb is only for the local commands"));
        assert!(e(&["run", "a", "b", "--cpu", "-5"]).contains("--cpu expects a positive number"));
        assert!(
            e(&["run", "a", "b", "--cpu", "lots"])
                .contains("--cpu expects a positive number of MHz, got \"lots\"")
        );
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
