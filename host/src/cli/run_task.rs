//! `run`: one task, locally, through the same [`Driver`] calls Nomad's
//! gRPC requests make (SetConfig, StartTask, WaitTask, StopTask on Ctrl-C,
//! DestroyTask), in a temporary allocation directory laid out like Nomad's.
//!
//! Nomad's logmon creates the task's stdout and stderr FIFOs and reads
//! them; here a thread per FIFO does that and copies to this terminal.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use nomad_plugin_proto::drivers as pb;

use super::Options;
use super::commands::{
    CommandError, Loaded, config_error, decode, load, millis, progress, read_configs,
};
use super::jobfile::{self, FoundConfig};
use crate::driver::Driver;
use crate::hcldec::Vars;
use crate::runtime::bindings::nomad::driver::types::{FsIsolation, NomadConfig};
use crate::tasks::TaskResult;

type Result<T> = std::result::Result<T, CommandError>;

/// Nomad's default `client_min_port`/`client_max_port`.
pub(super) const NOMAD_PORTS: NomadConfig = NomadConfig {
    client_min_port: 14000,
    client_max_port: 14512,
};

/// How long output still arriving after the task ended is waited for.
const DRAIN: Duration = Duration::from_secs(2);

pub(super) async fn run(guest: &Path, file: &Path, o: &Options) -> Result<u8> {
    let alloc = AllocDir::new();
    let outcome = run_in(guest, file, o, &alloc).await;
    alloc.remove();
    outcome
}

async fn run_in(guest: &Path, file: &Path, o: &Options, alloc: &AllocDir) -> Result<u8> {
    let state_dir = o
        .state_dir
        .clone()
        .unwrap_or_else(|| alloc.root.join("state"));
    let Loaded { driver, took } = {
        let (g, o2, s) = (guest.to_path_buf(), o.clone(), state_dir);
        tokio::task::spawn_blocking(move || load(&g, &o2, s))
            .await
            .map_err(|e| CommandError(format!("loading was lost: {e}")))??
    };
    let m = driver.manifest();
    progress(format_args!(
        "loaded driver {:?} v{} from {} in {}",
        m.info.name,
        m.info.version,
        guest.display(),
        millis(took)
    ));

    // The task config, decoded as Nomad decodes it before StartTask.
    let configs = read_configs(file, &m.info.name)?;
    let found = pick(configs, o.task.as_deref(), file)?;
    let names = Names::from(found.task.as_ref());
    let settings = Settings::resolve(o, &found);
    let env = task_env(
        &alloc.root,
        &names,
        &settings,
        &found,
        m.capabilities.fs_isolation,
    );
    let task_msgpack = decode(&m.task_config_schema, &found.body, &task_vars(&env, &names))
        .map_err(|e| CommandError(config_error(file, &found, &e)))?;

    let plugin_msgpack = plugin_config(o, m.config_schema.as_ref())?;

    // Handle Ctrl-C from here on (until now it just ends the process, with
    // nothing to clean up): one pressed before the task has started stops it
    // as soon as it has.
    let signals = Signals::new()?;
    alloc.lay_out(&names.task)?;
    let fifos = alloc.fifos(&names.task)?;

    // The agent's plugin config (an absent one still gets its defaults).
    driver
        .set_config(plugin_msgpack, Some(NOMAD_PORTS))
        .await
        .map_err(|e| CommandError(format!("the driver refused the plugin config: {e}")))?;
    let readers = [
        copy_fifo(fifos.0.clone(), Stream::Stdout),
        copy_fifo(fifos.1.clone(), Stream::Stderr),
    ];

    let pb_config = task_config(alloc, &names, &settings, env, &fifos, task_msgpack);
    let id = pb_config.id.clone();
    let mut events = driver.host().events.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            progress(format_args!("task event: {}", e.message));
        }
    });

    let spec = crate::nomad::convert::task_config(&pb_config);
    let started = driver.start_task(spec, pb_config).await;
    let result = match started {
        Ok(_) => {
            progress(format_args!(
                "started task {:?} (alloc {}); Ctrl-C stops it",
                names.task, names.alloc_id
            ));
            let r = wait_or_stop(&driver, &id, &settings, signals).await;
            if let Err(e) = driver.destroy_task(&id, true).await {
                progress(format_args!("destroying the task failed: {e}"));
            }
            r
        }
        Err(e) => Err(CommandError(format!("the task could not be started: {e}"))),
    };
    // Output written before the exit is still in the FIFOs: drain it.
    for (fifo, done) in [&fifos.0, &fifos.1].into_iter().zip(readers) {
        unblock_reader(fifo);
        let _ = done.recv_timeout(DRAIN);
    }
    let result = result?;
    progress(describe(&result));
    Ok(exit_status(&result))
}

/// SIGINT (Ctrl-C) and SIGTERM, caught instead of ending the process.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())
                .map_err(|e| CommandError(format!("cannot handle Ctrl-C: {e}")))?,
            term: signal(SignalKind::terminate())
                .map_err(|e| CommandError(format!("cannot handle SIGTERM: {e}")))?,
        })
    }
}

/// Waits for the task; Ctrl-C (or SIGTERM) stops it with the kill timeout,
/// a second one kills it at once.
async fn wait_or_stop(
    driver: &Arc<Driver>,
    id: &str,
    settings: &Settings,
    signals: Signals,
) -> Result<TaskResult> {
    let Signals { mut int, mut term } = signals;
    let kill_timeout = settings.kill_timeout;
    let wait = driver.wait_task(id);
    tokio::pin!(wait);
    tokio::select! {
        r = &mut wait => return r.map_err(|e| CommandError(e.to_string())),
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    progress(format_args!(
        "stopping the task (kill timeout {:?}; Ctrl-C again kills it now)",
        kill_timeout
    ));
    let stop = {
        let (d, id) = (driver.clone(), id.to_owned());
        let signal = settings.kill_signal.clone();
        tokio::spawn(async move { d.stop_task(&id, kill_timeout, signal).await })
    };
    let stopped = tokio::select! {
        r = stop => r.map_err(|e| CommandError(format!("stopping was lost: {e}")))?,
        _ = int.recv() => {
            progress("killing the task");
            driver.stop_task(id, Duration::ZERO, settings.kill_signal.clone()).await
        }
    };
    if let Err(e) = stopped {
        progress(format_args!("stopping the task failed: {e}"));
    }
    wait.await.map_err(|e| CommandError(e.to_string()))
}

fn describe(r: &TaskResult) -> String {
    let mut s = if r.signal != 0 {
        format!("task was killed by signal {}", r.signal)
    } else {
        format!("task exited with code {}", r.exit_code)
    };
    if r.oom_killed {
        s.push_str(" (out of memory)");
    }
    if let Some(err) = &r.err {
        s.push_str(&format!("; driver error: {err}"));
    }
    s
}

/// The status this process exits with: the task's code, 128 + the signal
/// that ended it, or 1 for a driver error on an otherwise clean exit.
pub(super) fn exit_status(r: &TaskResult) -> u8 {
    if r.signal > 0 {
        (128 + r.signal).clamp(1, 255) as u8
    } else if r.exit_code != 0 {
        (r.exit_code & 0xff).max(1) as u8
    } else if r.err.is_some() {
        1
    } else {
        0
    }
}

fn pick(configs: Vec<FoundConfig>, task: Option<&str>, file: &Path) -> Result<FoundConfig> {
    let names = |cs: &[FoundConfig]| {
        cs.iter()
            .filter_map(|c| c.task.as_ref().map(|t| format!("{:?}", t.task)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match task {
        Some(want) => {
            let listed = names(&configs);
            configs
                .into_iter()
                .find(|c| c.task.as_ref().is_some_and(|t| t.task == want))
                .ok_or_else(|| {
                    CommandError(format!(
                        "{}: no task {want:?} for this driver (there are: {listed})",
                        file.display()
                    ))
                })
        }
        None if configs.len() > 1 => Err(CommandError(format!(
            "{} has {} tasks for this driver ({}): choose one with --task NAME",
            file.display(),
            configs.len(),
            names(&configs)
        ))),
        None => configs
            .into_iter()
            .next()
            .ok_or_else(|| CommandError(format!("{}: no config found", file.display()))),
    }
}

fn plugin_config(
    o: &Options,
    schema: Option<&crate::runtime::bindings::nomad::driver::types::Spec>,
) -> Result<Vec<u8>> {
    let Some(file) = &o.plugin_config else {
        return match schema {
            Some(s) => decode(s, "", &Vars::new()).map_err(|e| {
                CommandError(format!(
                    "the driver's plugin config defaults do not decode: {e}"
                ))
            }),
            None => Ok(Vec::new()),
        };
    };
    let Some(schema) = schema else {
        return Err(CommandError(format!(
            "--plugin-config {}: this driver takes no plugin config",
            file.display()
        )));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| CommandError(format!("cannot read {}: {e}", file.display())))?;
    let found = jobfile::find_plugin_config(&text)
        .map_err(|e| CommandError(format!("{}: {e}", file.display())))?;
    decode(schema, &found.body, &Vars::new())
        .map_err(|e| CommandError(config_error(file, &found, &e)))
}

/// The task's resources and stop settings: the flags, else the job file,
/// else Nomad's defaults.
pub(super) struct Settings {
    pub cpu: i64,
    pub memory_mb: i64,
    pub memory_max_mb: i64,
    pub kill_timeout: Duration,
    /// Empty: the driver's default signal.
    pub kill_signal: String,
    pub user: String,
}

impl Settings {
    pub(super) fn resolve(o: &Options, found: &FoundConfig) -> Self {
        let job = &found.settings;
        Settings {
            cpu: o.cpu.or(job.cpu).unwrap_or(100),
            memory_mb: o.memory_mb.or(job.memory_mb).unwrap_or(300),
            memory_max_mb: job.memory_max_mb.unwrap_or(0),
            kill_timeout: o
                .kill_timeout
                .or(job.kill_timeout)
                .unwrap_or(Duration::from_secs(5)),
            kill_signal: job.kill_signal.clone().unwrap_or_default(),
            user: job.user.clone().unwrap_or_default(),
        }
    }
}

/// The job, group, task and alloc names the task runs under.
pub(super) struct Names {
    pub job: String,
    pub group: String,
    pub task: String,
    pub alloc_id: String,
    pub node_id: String,
}

impl Names {
    pub(super) fn from(path: Option<&jobfile::TaskPath>) -> Self {
        let (job, group, task) = match path {
            Some(p) => (p.job.clone(), p.group.clone(), p.task.clone()),
            None => ("local".into(), "local".into(), "task".into()),
        };
        Names {
            job,
            group,
            task,
            alloc_id: uuid(),
            node_id: uuid(),
        }
    }
}

/// A random UUID (v4), the form of Nomad's alloc ids.
fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

/// The task's environment as Nomad's client builds it (the basic NOMAD_*
/// variables, the host's environment unless the driver isolates with an
/// image, the task's `env` block), for an allocation directory at `root`.
pub(super) fn task_env(
    root: &Path,
    names: &Names,
    settings: &Settings,
    found: &FoundConfig,
    isolation: FsIsolation,
) -> HashMap<String, String> {
    let task_dir = root.join(&names.task);
    // Without isolation the task sees host paths and the host environment;
    // inside an image it sees /alloc, /local, /secrets and no host env.
    let (alloc_path, local, secrets, host_env) = match isolation {
        FsIsolation::Image => ("/alloc".into(), "/local".into(), "/secrets".into(), false),
        FsIsolation::Chroot => ("/alloc".into(), "/local".into(), "/secrets".into(), true),
        FsIsolation::None | FsIsolation::Unveil => (
            root.join("alloc").display().to_string(),
            task_dir.join("local").display().to_string(),
            task_dir.join("secrets").display().to_string(),
            true,
        ),
    };
    let mut env: HashMap<String, String> = if host_env {
        std::env::vars().collect()
    } else {
        Default::default()
    };
    let short = names
        .alloc_id
        .get(..8)
        .unwrap_or(&names.alloc_id)
        .to_owned();
    let nomad = [
        ("NOMAD_ALLOC_DIR", alloc_path),
        ("NOMAD_TASK_DIR", local),
        ("NOMAD_SECRETS_DIR", secrets),
        ("NOMAD_ALLOC_ID", names.alloc_id.clone()),
        ("NOMAD_SHORT_ALLOC_ID", short),
        (
            "NOMAD_ALLOC_NAME",
            format!("{}.{}[0]", names.job, names.group),
        ),
        ("NOMAD_ALLOC_INDEX", "0".into()),
        ("NOMAD_TASK_NAME", names.task.clone()),
        ("NOMAD_GROUP_NAME", names.group.clone()),
        ("NOMAD_JOB_ID", names.job.clone()),
        ("NOMAD_JOB_NAME", names.job.clone()),
        ("NOMAD_NAMESPACE", "default".into()),
        ("NOMAD_REGION", "global".into()),
        ("NOMAD_DC", "dc1".into()),
        ("NOMAD_CPU_LIMIT", settings.cpu.to_string()),
        ("NOMAD_MEMORY_LIMIT", settings.memory_mb.to_string()),
    ];
    env.extend(nomad.into_iter().map(|(k, v)| (k.to_owned(), v)));
    if settings.memory_max_mb > 0 {
        env.insert(
            "NOMAD_MEMORY_MAX_LIMIT".into(),
            settings.memory_max_mb.to_string(),
        );
    }
    env.extend(found.env.iter().cloned());
    env
}

/// The variables a task config's templates see on a Nomad client: the
/// task's environment, and the node's basic attributes as this machine
/// would give them (`node.unique.name`, `node.datacenter`, `node.region`,
/// `node.class`, `attr.kernel.name`, `attr.kernel.version`, `attr.cpu.arch`,
/// `attr.unique.hostname`). Other `attr.*` and `meta.*` names are unknown
/// here, as on a node that does not have them.
pub(super) fn task_vars(env: &HashMap<String, String>, names: &Names) -> Vars {
    let hostname = hostname();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    let node = [
        ("node.unique.name", hostname.clone()),
        ("node.unique.id", names.node_id.clone()),
        ("node.datacenter", "dc1".to_owned()),
        ("node.region", "global".to_owned()),
        ("node.class", String::new()),
        ("attr.kernel.name", std::env::consts::OS.to_owned()),
        ("attr.kernel.version", kernel),
        ("attr.cpu.arch", arch.to_owned()),
        ("attr.unique.hostname", hostname),
    ];
    let vars = env
        .iter()
        .fold(Vars::new(), |vars, (k, v)| vars.env(k.clone(), v.clone()));
    node.into_iter().fold(vars, |vars, (k, v)| vars.node(k, v))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// What Nomad's client would send in StartTask for this task.
fn task_config(
    alloc: &AllocDir,
    names: &Names,
    settings: &Settings,
    env: HashMap<String, String>,
    fifos: &(PathBuf, PathBuf),
    msgpack: Vec<u8>,
) -> pb::TaskConfig {
    let root = alloc.root.display().to_string();
    let suffix: [u8; 4] = rand::random();
    pb::TaskConfig {
        id: format!("{}/{}/{}", names.alloc_id, names.task, hex::encode(suffix)),
        name: names.task.clone(),
        msgpack_driver_config: msgpack,
        env,
        resources: Some(pb::Resources {
            allocated_resources: Some(pb::AllocatedTaskResources {
                cpu: Some(pb::AllocatedCpuResources {
                    cpu_shares: settings.cpu,
                }),
                memory: Some(pb::AllocatedMemoryResources {
                    memory_mb: settings.memory_mb,
                    memory_max_mb: settings.memory_max_mb,
                }),
                networks: Vec::new(),
            }),
            linux_resources: Some(pb::LinuxResources {
                cpu_shares: settings.cpu,
                memory_limit_bytes: settings.memory_mb.max(settings.memory_max_mb) << 20,
                ..Default::default()
            }),
            ports: Vec::new(),
        }),
        user: settings.user.clone(),
        alloc_dir: root,
        stdout_path: fifos.0.display().to_string(),
        stderr_path: fifos.1.display().to_string(),
        task_group_name: names.group.clone(),
        job_name: names.job.clone(),
        job_id: names.job.clone(),
        alloc_id: names.alloc_id.clone(),
        namespace: "default".into(),
        node_name: hostname(),
        node_id: names.node_id.clone(),
        ..Default::default()
    }
}

/// A temporary allocation directory, removed when the run ends.
struct AllocDir {
    root: PathBuf,
}

impl AllocDir {
    /// A new, not yet created, directory under the temporary directory.
    fn new() -> Self {
        let suffix: [u8; 6] = rand::random();
        let root =
            std::env::temp_dir().join(format!("nomad-driver-wasm-run-{}", hex::encode(suffix)));
        AllocDir { root }
    }

    /// Creates it with `alloc/{logs,tmp,data}` and
    /// `<task>/{local,secrets,tmp,private}`.
    fn lay_out(&self, task: &str) -> Result<()> {
        std::fs::create_dir(&self.root).map_err(|e| {
            CommandError(format!(
                "cannot create the allocation directory {}: {e}",
                self.root.display()
            ))
        })?;
        let dirs = ["alloc/logs", "alloc/tmp", "alloc/data"]
            .iter()
            .map(|d| self.root.join(d))
            .chain(
                ["local", "secrets", "tmp", "private"]
                    .iter()
                    .map(|d| self.root.join(task).join(d)),
            );
        for d in dirs {
            std::fs::create_dir_all(&d)
                .map_err(|e| CommandError(format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// Creates the task's stdout and stderr FIFOs where Nomad puts them.
    fn fifos(&self, task: &str) -> Result<(PathBuf, PathBuf)> {
        let logs = self.root.join("alloc/logs");
        let make = |which: &str| {
            let p = logs.join(format!(".{task}.{which}.fifo"));
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map(|_| p.clone())
                .map_err(|e| CommandError(format!("cannot create the FIFO {}: {e}", p.display())))
        };
        Ok((make("stdout")?, make("stderr")?))
    }

    fn remove(&self) {
        if !self.root.exists() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            progress(format_args!(
                "could not remove the allocation directory {}: {e}",
                self.root.display()
            ));
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Reads a task FIFO until every writer is gone, copying to the terminal.
/// The returned channel says when it is done.
fn copy_fifo(path: PathBuf, to: Stream) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("task-output".into())
        .spawn(move || {
            // Blocks until the task (or `unblock_reader`) opens the write end.
            if let Ok(mut fifo) = File::open(&path) {
                let mut buf = [0u8; 8192];
                loop {
                    match fifo.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = buf.get(..n).unwrap_or_default();
                            let _ = match to {
                                Stream::Stdout => {
                                    let mut out = std::io::stdout().lock();
                                    out.write_all(chunk).and_then(|_| out.flush())
                                }
                                Stream::Stderr => std::io::stderr().lock().write_all(chunk),
                            };
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        progress(format_args!("cannot copy the task's output: {e}"));
    }
    rx
}

/// A reader still waiting in `open` (the task never opened its FIFO) is
/// released by opening and closing the write side once.
fn unblock_reader(fifo: &Path) {
    let _ = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_the_shell_convention() {
        let r = |exit_code, signal, err: Option<&str>| TaskResult {
            exit_code,
            signal,
            oom_killed: false,
            err: err.map(str::to_owned),
        };
        assert_eq!(exit_status(&r(0, 0, None)), 0);
        assert_eq!(exit_status(&r(3, 0, None)), 3);
        assert_eq!(exit_status(&r(-1, 15, None)), 143);
        assert_eq!(exit_status(&r(0, 0, Some("lost"))), 1);
        assert_eq!(exit_status(&r(256, 0, None)), 1);
    }

    #[test]
    fn alloc_ids_look_like_nomads() {
        let id = uuid();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
