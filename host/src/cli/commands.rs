//! The local commands (see [`super::COMMANDS`]): `schema`, `validate`,
//! `run` and `precompile`. They load the guest exactly as the plugin does
//! (same engine, grants and cache) and, for `run`, drive the task through
//! the same [`Driver`] the gRPC services use.
//!
//! Output: what the command produces (the schema, "valid") on stdout;
//! progress lines (`==> ...`) and errors on stderr, so `run` leaves stdout
//! to the task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::caps::HostContext;
use crate::driver::Driver;
use crate::grants::Grants;
use crate::hcldec::{self, DecodeError, Vars};
use crate::runtime::bindings::nomad::driver::types::Spec;
use crate::runtime::{self, CallLimits, Guest};

use super::jobfile::{self, FoundConfig};
use super::{Command, Options, schema_doc};

/// Why a command failed; printed as `Error: <text>`, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl From<String> for CommandError {
    fn from(s: String) -> Self {
        CommandError(s)
    }
}

type Result<T> = std::result::Result<T, CommandError>;

/// Runs `command` with its positional `args`; returns the exit status.
pub fn dispatch(binary: &str, command: &Command, args: &[String], o: &Options) -> Result<u8> {
    let arg = |i: usize| {
        args.get(i).map(String::as_str).ok_or_else(|| {
            CommandError(format!("{} needs {}", command.name, command.args.join(" ")))
        })
    };
    match command.name {
        "schema" => schema(binary, Path::new(arg(0)?), o),
        "validate" => validate(Path::new(arg(0)?), Path::new(arg(1)?), o),
        "run" => run(Path::new(arg(0)?), Path::new(arg(1)?), o),
        "precompile" => precompile(Path::new(arg(0)?), o),
        other => Err(CommandError(format!(
            "{other} is in the command table but not handled"
        ))),
    }
}

/// A progress line for a person, on stderr.
pub(super) fn progress(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}

pub(super) fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The host context every guest gets: the `--allow-exec`, `--allow-http`,
/// `--secret` and `--allow-env` grants plus the guest's grants file if there is one, as
/// in plugin mode.
pub fn host_context(
    guest_path: &Path,
    o: &Options,
    state_dir: PathBuf,
) -> std::result::Result<Arc<HostContext>, String> {
    let label = guest_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut grants = Grants::new(o.allow_exec.to_vec());
    for origin in &o.allow_http {
        grants = grants
            .with_http_origin(origin, None)
            .map_err(|e| format!("--allow-http: {e}"))?;
    }
    for secret in &o.secrets {
        let Some((name, file)) = secret.split_once('=') else {
            return Err(format!(
                "--secret {secret:?}: expected NAME=KEYFILE or NAME=env:VAR"
            ));
        };
        grants = match file.strip_prefix("env:") {
            Some(var) => grants.with_secret_env(name, var, None),
            None => grants.with_secret(name, PathBuf::from(file), None),
        }
        .map_err(|e| format!("--secret: {e}"))?;
    }
    for name in &o.allow_env {
        grants = grants
            .with_env(name)
            .map_err(|e| format!("--allow-env: {e}"))?;
    }
    let grants_file = crate::grants::file_for(guest_path);
    if grants_file.exists() {
        grants = grants.with_file(&grants_file)?;
        tracing::info!(file = %grants_file.display(), "grants file loaded");
    }
    Ok(HostContext::new(label, grants, state_dir))
}

fn limits(o: &Options) -> CallLimits {
    CallLimits {
        deadline: o.call_timeout,
        max_memory: o.max_memory_mib << 20,
    }
}

fn cache_dir(o: &Options) -> Option<PathBuf> {
    o.cache_dir.clone().unwrap_or_else(super::default_cache_dir)
}

/// A guest loaded for a command, with its manifest.
pub(super) struct Loaded {
    pub driver: Arc<Driver>,
    pub took: Duration,
}

pub(super) fn load(path: &Path, o: &Options, state_dir: PathBuf) -> Result<Loaded> {
    if !path.exists() {
        return Err(CommandError(format!("guest {} not found", path.display())));
    }
    check_header(path)?;
    let host = host_context(path, o, state_dir)?;
    let engine = runtime::engine().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let guest = Guest::load(&engine, path, cache_dir(o).as_deref(), host, limits(o))
        .map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let driver = Driver::new(Arc::new(guest)).map_err(|e| e.to_string())?;
    Ok(Loaded {
        driver: Arc::new(driver),
        took,
    })
}

/// A file that is neither a component nor a precompiled guest is refused
/// in one line (wasmtime's parse error dumps the bytes it found).
fn check_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    match read {
        Ok(()) if &head == b"\0asm" || &head == b"\x7fELF" => Ok(()),
        Ok(()) | Err(_) if path.is_dir() => Err(CommandError(format!(
            "guest {} is a directory, not a .wasm file",
            path.display()
        ))),
        Ok(()) => Err(CommandError(format!(
            "guest {} is not a WebAssembly component (nor a precompiled one): it does not \
             start with the \\0asm header",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(CommandError(format!(
            "guest {} is too short to be a WebAssembly file",
            path.display()
        ))),
        Err(e) => Err(CommandError(format!(
            "cannot read guest {}: {e}",
            path.display()
        ))),
    }
}

/// Commands that start nothing still need a state dir for the host
/// context; nothing is written to it.
fn unused_state_dir() -> PathBuf {
    super::default_state_dir()
}

fn schema(binary: &str, path: &Path, o: &Options) -> Result<u8> {
    let loaded = load(path, o, unused_state_dir())?;
    let m = loaded.driver.manifest();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    print!(
        "{}",
        schema_text(binary, &file, &m).map_err(|e| CommandError(e.to_string()))?
    );
    Ok(0)
}

/// The `schema` output for a guest's manifest.
pub fn schema_text(
    binary: &str,
    guest_file: &str,
    m: &crate::driver::GuestManifest,
) -> std::result::Result<String, schema_doc::SchemaError> {
    let mut out = format!(
        "# Driver {:?} v{} ({guest_file})\n\n",
        m.info.name, m.info.version
    );
    match &m.config_schema {
        Some(spec) => {
            out.push_str(&format!(
                "# In the Nomad agent's config:\nplugin {binary:?} {{\n  args = [\"--guest\", \
                 {guest_file:?}]\n\n  config {{\n{}  }}\n}}\n",
                schema_doc::body(spec, 2)?
            ));
        }
        None => out.push_str(&format!(
            "# In the Nomad agent's config (this driver takes no plugin config):\n\
             plugin {binary:?} {{\n  args = [\"--guest\", {guest_file:?}]\n}}\n"
        )),
    }
    out.push_str(&format!(
        "\n# In a job:\ntask \"example\" {{\n  driver = {:?}\n\n  config {{\n{}  }}\n}}\n",
        m.info.name,
        schema_doc::body(&m.task_config_schema, 2)?
    ));
    Ok(out)
}

/// Decodes a config body against a schema as Nomad does.
/// `${...}` templates are interpolated with `vars` (see
/// [`super::run_task::task_vars`]; none for an agent's plugin config).
pub(super) fn decode(
    spec: &Spec,
    body: &str,
    vars: &Vars,
) -> std::result::Result<Vec<u8>, DecodeError> {
    hcldec::decode_body_with(spec, body, vars)
}

/// One `file:line: where: field: problem` line per problem, the line being
/// that of the field (or of the block it is missing from).
pub(super) fn config_error(file: &Path, found: &FoundConfig, e: &DecodeError) -> String {
    let place = match &found.task {
        Some(t) => format!("{t}: "),
        None => String::new(),
    };
    e.diags
        .iter()
        .map(|d| {
            let line = jobfile::line_of_field(&found.body, &d.path)
                .map_or(found.first_line, |l| found.file_line(l));
            format!("{}:{line}: {place}{d}", file.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn read_configs(file: &Path, driver: &str) -> Result<Vec<FoundConfig>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CommandError(format!("cannot read {}: {e}", file.display())))?;
    jobfile::find_configs(&text, driver).map_err(|e| match e {
        jobfile::FileError::Syntax {
            line,
            column,
            message,
        } => CommandError(format!("{}:{line}:{column}: {message}", file.display())),
        jobfile::FileError::NoTask(m) => CommandError(format!("{}: {m}", file.display())),
    })
}

fn validate(guest: &Path, file: &Path, o: &Options) -> Result<u8> {
    let loaded = load(guest, o, unused_state_dir())?;
    let m = loaded.driver.manifest();
    if is_agent_config(file) {
        return validate_plugin_config(&loaded.driver, file);
    }
    let mut invalid = 0;
    let configs = read_configs(file, &m.info.name)?;
    for found in &configs {
        let what = match &found.task {
            Some(t) => t.to_string(),
            None => "config".to_owned(),
        };
        // The variables a task of this config would have, so that
        // `${NOMAD_TASK_DIR}` and the like resolve as on a client.
        let names = super::run_task::Names::from(found.task.as_ref());
        let root = Path::new("/opt/nomad/data/alloc").join(&names.alloc_id);
        let settings = super::run_task::Settings::resolve(o, found);
        let env =
            super::run_task::task_env(&root, &names, &settings, found, m.capabilities.fs_isolation);
        let vars = super::run_task::task_vars(&env, &names);
        match decode(&m.task_config_schema, &found.body, &vars) {
            Ok(_) => println!("{}: {what}: valid", file.display()),
            Err(e) => {
                invalid += 1;
                eprintln!("{}", config_error(file, found, &e));
            }
        }
    }
    if invalid > 0 {
        eprintln!(
            "{invalid} of {} config(s) in {} are invalid for driver {:?}",
            configs.len(),
            file.display(),
            m.info.name
        );
        return Ok(1);
    }
    Ok(0)
}

/// An agent config: `plugin` blocks and no `job`.
fn is_agent_config(file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    hcl::edit::parser::parse_body(&text).is_ok_and(|body| {
        body.get_blocks("plugin").next().is_some() && body.get_blocks("job").next().is_none()
    })
}

/// Decodes the plugin block's config as Nomad does, then gives it to the
/// guest's `set-config`, its own validation (Nomad's SetConfig).
fn validate_plugin_config(driver: &Arc<Driver>, file: &Path) -> Result<u8> {
    let m = driver.manifest();
    let text = std::fs::read_to_string(file)
        .map_err(|e| CommandError(format!("cannot read {}: {e}", file.display())))?;
    let found = jobfile::find_plugin_config(&text)
        .map_err(|e| CommandError(format!("{}: {e}", file.display())))?;
    let msgpack = match &m.config_schema {
        Some(spec) => match decode(spec, &found.body, &Vars::new()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}", config_error(file, &found, &e));
                return Ok(1);
            }
        },
        None if found.body.trim().is_empty() => Vec::new(),
        None => {
            eprintln!(
                "{}:{}: driver {:?} takes no plugin config",
                file.display(),
                found.first_line,
                m.info.name
            );
            return Ok(1);
        }
    };
    // The guest's set-config itself: Driver::set_config would also get
    // supervisors ready for tasks, which a check has no use for.
    let nomad = Some(super::run_task::NOMAD_PORTS);
    let called = driver.current().guest.call("set-config", None, |g, s| {
        g.call_set_config(s, &msgpack, nomad)
    });
    match called {
        Ok(Ok(_)) => {
            println!("{}: plugin config: valid", file.display());
            Ok(0)
        }
        Ok(Err(refusal)) => {
            let refusal = crate::driver::Refusal::from(refusal);
            eprintln!("{}:{}: {refusal}", file.display(), found.first_line);
            Ok(1)
        }
        Err(e) => Err(CommandError(e.to_string())),
    }
}

fn precompile(guest: &Path, o: &Options) -> Result<u8> {
    let bytes = std::fs::read(guest)
        .map_err(|e| CommandError(format!("cannot read guest {}: {e}", guest.display())))?;
    let engine = runtime::engine().map_err(|e| e.to_string())?;
    let state = unused_state_dir();
    let target = match &o.output {
        Some(out) => {
            if wasmtime::Engine::detect_precompiled(&bytes).is_some() {
                return Err(CommandError(format!(
                    "{} is already precompiled: give the .wasm it was made from",
                    guest.display()
                )));
            }
            let start = Instant::now();
            let artifact = engine.precompile_component(&bytes).map_err(|e| {
                CommandError(format!(
                    "{} is not a WebAssembly component: {e:#}",
                    guest.display()
                ))
            })?;
            let took = start.elapsed();
            std::fs::write(out, &artifact)
                .map_err(|e| CommandError(format!("cannot write {}: {e}", out.display())))?;
            progress(format_args!(
                "compiled {} in {}; wrote {} ({} bytes)",
                guest.display(),
                millis(took),
                out.display(),
                artifact.len()
            ));
            out.clone()
        }
        None => {
            let Some(dir) = cache_dir(o) else {
                return Err(CommandError(
                    "the cache is disabled (--cache-dir \"\"): give -o FILE to write the \
                     precompiled guest to a file"
                        .into(),
                ));
            };
            let before = cached_files(&dir);
            let first = load(guest, o, state.clone())?;
            let sha = first.driver.current().sha256().to_owned();
            let file = cached_files(&dir)
                .into_iter()
                .find(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{sha}-")))
                })
                .ok_or_else(|| {
                    CommandError(format!(
                        "compiled {}, but no artifact appeared in the cache {} (is it \
                         writable? run with --log-level warn for the reason)",
                        guest.display(),
                        dir.display()
                    ))
                })?;
            if before.contains(&file) {
                progress(format_args!(
                    "{} was already in the cache: {}",
                    guest.display(),
                    file.display()
                ));
            } else {
                progress(format_args!(
                    "compiled {} in {}; cached as {}",
                    guest.display(),
                    millis(first.took),
                    file.display()
                ));
            }
            guest.to_path_buf()
        }
    };
    // Load what was written, the way the plugin will, and time it.
    let loaded = load(&target, o, state)?;
    let info = loaded.driver.manifest().info;
    progress(format_args!(
        "{} loads in {} (driver {:?} v{})",
        target.display(),
        millis(loaded.took),
        info.name,
        info.version
    ));
    Ok(0)
}

fn cached_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

fn run(guest: &Path, file: &Path, o: &Options) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(super::run_task::run(guest, file, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_table_is_dispatched() {
        for c in super::super::COMMANDS {
            let args: Vec<String> = c.args.iter().map(|_| "/nonexistent/x".into()).collect();
            let e = match dispatch("nomad-driver-wasm", c, &args, &Options::default()) {
                Err(e) => e.to_string(),
                Ok(code) => panic!("{} succeeded ({code}) on a missing guest", c.name),
            };
            assert!(!e.contains("not handled"), "{}: {e}", c.name);
            assert!(e.contains("/nonexistent/x"), "{}: {e}", c.name);
        }
    }
}
