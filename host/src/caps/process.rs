//! `nomad:driver/process`: host processes for guests.
//!
//! Only programs the operator granted (`--allow-exec`) can be run. A spawned
//! process gets exactly the environment the guest passed (nothing leaks from
//! the host), its own process group (so a stop signal reaches the whole
//! tree, and Ctrl-C at the agent's terminal does not), and its stdout and
//! stderr wired to the task's Nomad FIFOs when the guest asks for them.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::process::{
    Command, Host, Output, ProcessError, RunOutput, SpawnSpec,
};
use crate::runtime::bindings::nomad::driver::types::ExitStatus;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcExit {
    /// The exit code; for a process killed by a signal, 128 + the signal,
    /// as Nomad's own executor reports it.
    pub code: i32,
    /// The signal that killed it, or 0.
    pub signal: i32,
}

impl From<std::process::ExitStatus> for ProcExit {
    fn from(s: std::process::ExitStatus) -> Self {
        match (s.code(), s.signal()) {
            (Some(code), _) => ProcExit { code, signal: 0 },
            (None, Some(sig)) => ProcExit { code: 128 + sig, signal: sig },
            (None, None) => ProcExit { code: -1, signal: 0 },
        }
    }
}

impl From<ProcExit> for ExitStatus {
    fn from(e: ProcExit) -> Self {
        ExitStatus {
            code: e.code,
            signal: e.signal,
            oom_killed: false,
        }
    }
}

/// One process the host started for a guest.
#[derive(Debug)]
pub struct Proc {
    pub id: String,
    pub pid: u32,
    pub task_id: Option<String>,
    exit: watch::Receiver<Option<ProcExit>>,
}

impl Proc {
    /// The exit, if it has happened.
    pub fn status(&self) -> Option<ProcExit> {
        *self.exit.borrow()
    }

    /// Waits for the process to exit.
    pub async fn wait(&self) -> ProcExit {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(ProcExit { code: -1, signal: 0 }),
            // The waiter task is gone without a result: the runtime is
            // shutting down. Report an unknown exit rather than hang.
            Err(_) => ProcExit { code: -1, signal: 0 },
        }
    }

    /// Sends `signal` to the process's group (the whole task tree). A
    /// process that has already exited is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        if self.status().is_some() {
            return Ok(());
        }
        let pgid = Pid::from_raw(self.pid as i32);
        match killpg(pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(format!("sending {signal} to process {}: {e}", self.pid)),
        }
    }
}

/// Every process the host started, by id.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    seq: AtomicU64,
}

impl ProcessTable {
    pub fn get(&self, id: &str) -> Option<Arc<Proc>> {
        self.procs.lock().ok()?.get(id).cloned()
    }

    /// The processes started for a task.
    pub fn of_task(&self, task_id: &str) -> Vec<Arc<Proc>> {
        self.procs
            .lock()
            .map(|m| {
                m.values()
                    .filter(|p| p.task_id.as_deref() == Some(task_id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets the processes of a task (after it is destroyed).
    pub fn remove_task(&self, task_id: &str) {
        if let Ok(mut m) = self.procs.lock() {
            m.retain(|_, p| p.task_id.as_deref() != Some(task_id));
        }
    }

    fn insert(&self, pid: u32, task_id: Option<String>, exit: watch::Receiver<Option<ProcExit>>) -> Arc<Proc> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{pid}-{n}");
        let proc = Arc::new(Proc { id: id.clone(), pid, task_id, exit });
        if let Ok(mut m) = self.procs.lock() {
            m.insert(id, proc.clone());
        }
        proc
    }

    /// Starts a process and a waiter that records its exit. Must be called
    /// from within a tokio runtime (guest calls run on its blocking pool).
    pub fn spawn(&self, mut cmd: StdCommand, task_id: Option<String>) -> Result<Arc<Proc>, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no async runtime to supervise the process".to_string())?;
        let _guard = handle.enter();
        let mut child = tokio::process::Command::from(std::mem::replace(&mut cmd, StdCommand::new("/")))
            .spawn()
            .map_err(|e| e.to_string())?;
        let pid = child.id().ok_or("the process exited before it could be tracked")?;
        let (tx, rx) = watch::channel(None);
        handle.spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => ProcExit::from(status),
                Err(e) => {
                    tracing::error!(pid, error = %e, "waiting for process failed");
                    ProcExit { code: -1, signal: 0 }
                }
            };
            let _ = tx.send(Some(exit));
        });
        Ok(self.insert(pid, task_id, rx))
    }
}

/// Parses a Unix signal name as Nomad sends them (`SIGTERM`); the `SIG`
/// prefix is optional and case does not matter.
pub fn parse_signal(name: &str) -> Result<Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&full).map_err(|_| {
        format!("unknown signal {name:?}: expected a Unix signal name such as SIGTERM, SIGINT or SIGHUP")
    })
}

fn build_command(host: &crate::caps::HostContext, command: &Command) -> Result<StdCommand, ProcessError> {
    let program = host
        .grants
        .check_exec(&command.program)
        .map_err(|e| ProcessError::NotGranted(e.to_string()))?;
    let mut cmd = StdCommand::new(program);
    cmd.args(&command.args).env_clear().envs(command.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &command.cwd {
        if !Path::new(dir).is_dir() {
            return Err(ProcessError::NotFound(format!("working directory {dir} does not exist")));
        }
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null()).process_group(0);
    Ok(cmd)
}

fn open_output(which: Output, stdout_path: &str, stderr_path: &str) -> Result<Stdio, ProcessError> {
    let path = match which {
        Output::Null => return Ok(Stdio::null()),
        Output::TaskStdout => stdout_path,
        Output::TaskStderr => stderr_path,
    };
    if path.is_empty() {
        return Ok(Stdio::null());
    }
    // Opening a FIFO for writing blocks until the reader (Nomad's logmon)
    // has it open; logmon opens it before StartTask.
    OpenOptions::new()
        .write(true)
        .open(path)
        .map(Stdio::from)
        .map_err(|e| ProcessError::Failed(format!("opening task output {path}: {e}")))
}

fn spawn_error(program: &str, e: String) -> ProcessError {
    if e.contains("No such file") {
        ProcessError::NotFound(format!("{program}: {e}"))
    } else {
        ProcessError::Failed(format!("starting {program}: {e}"))
    }
}

impl Host for CallState {
    fn lookup_path(&mut self, name: String) -> Option<String> {
        if name.contains('/') {
            return Path::new(&name).is_file().then_some(name);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(&name))
            .find(|p| is_executable(p))
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn run(&mut self, command: Command, timeout_ms: u32) -> Result<RunOutput, ProcessError> {
        let mut cmd = build_command(&self.host, &command)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.blocking(|_| run_to_completion(cmd, &command.program, Duration::from_millis(timeout_ms.into())))
    }

    fn spawn(&mut self, spec: SpawnSpec) -> Result<String, ProcessError> {
        let mut cmd = build_command(&self.host, &spec.command)?;
        let (out, err, task_id) = match &self.task {
            Some(t) => (t.stdout_path.clone(), t.stderr_path.clone(), Some(t.id.clone())),
            None => (String::new(), String::new(), None),
        };
        let host = self.host.clone();
        let proc = self.blocking(|_| {
            cmd.stdout(open_output(spec.stdout, &out, &err)?);
            cmd.stderr(open_output(spec.stderr, &out, &err)?);
            host.processes
                .spawn(cmd, task_id)
                .map_err(|e| spawn_error(&spec.command.program, e))
        })?;
        tracing::debug!(guest = %self.host.guest, pid = proc.pid, program = %spec.command.program, "process spawned");
        if let Some(t) = &mut self.task {
            t.spawned.push(proc.id.clone());
        }
        Ok(proc.id.clone())
    }

    fn signal(&mut self, id: String, signal: String) -> Result<(), ProcessError> {
        let sig = parse_signal(&signal).map_err(ProcessError::Failed)?;
        let proc = self
            .host
            .processes
            .get(&id)
            .ok_or_else(|| ProcessError::NotFound(format!("no process with id {id:?}")))?;
        proc.signal(sig).map_err(ProcessError::Failed)
    }

    fn status(&mut self, id: String) -> Result<Option<ExitStatus>, ProcessError> {
        let proc = self
            .host
            .processes
            .get(&id)
            .ok_or_else(|| ProcessError::NotFound(format!("no process with id {id:?}")))?;
        Ok(proc.status().map(ExitStatus::from))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a short command, capturing output, killing it after `timeout`.
fn run_to_completion(mut cmd: StdCommand, program: &str, timeout: Duration) -> Result<RunOutput, ProcessError> {
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e.to_string()))?;
    // Read both pipes on threads so a chatty child cannot fill one and block.
    let stdout = child.stdout.take().map(read_all_thread);
    let stderr = child.stderr.take().map(read_all_thread);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(ProcessError::Failed(format!(
                    "{program} did not finish within {} ms and was killed",
                    timeout.as_millis()
                )));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(ProcessError::Failed(format!("waiting for {program}: {e}"))),
        }
    };
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(RunOutput {
        status: ProcExit::from(status).into(),
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn read_all_thread(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_with_or_without_prefix() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        let err = parse_signal("SIGBOGUS").unwrap_err();
        assert!(err.contains("\"SIGBOGUS\""), "{err}");
    }

    #[test]
    fn exit_by_signal_reports_128_plus_signal() {
        let status = std::process::ExitStatus::from_raw(9); // killed by SIGKILL
        assert_eq!(ProcExit::from(status), ProcExit { code: 137, signal: 9 });
        let status = std::process::ExitStatus::from_raw(3 << 8); // exit(3)
        assert_eq!(ProcExit::from(status), ProcExit { code: 3, signal: 0 });
    }
}
