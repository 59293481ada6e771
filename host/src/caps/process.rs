//! `nomad:driver/process`: host processes for guests.
//!
//! Only programs the operator granted (`--allow-exec`) can be run. A spawned
//! process gets exactly the environment the guest passed (nothing leaks from
//! the host), its own process group (so a stop signal reaches the whole
//! tree, and Ctrl-C at the agent's terminal does not), and its stdout and
//! stderr wired to the task's Nomad FIFOs when the guest asks for them.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::cgroups::{self, Cgroups, Limits};
use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::process::{
    Command, Host, Output, ProcessError, RunOutput, SpawnSpec,
};
use crate::runtime::bindings::nomad::driver::types::ExitStatus;
use crate::supervisor;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcExit {
    /// The exit code; for a process killed by a signal, 128 + the signal,
    /// as Nomad's own executor reports it.
    pub code: i32,
    /// The signal that killed it, or 0.
    pub signal: i32,
    pub oom_killed: bool,
    /// The supervisor vanished without recording an exit: the status is
    /// unknown.
    pub lost: bool,
}

impl ProcExit {
    const LOST: ProcExit = ProcExit {
        code: -1,
        signal: 0,
        oom_killed: false,
        lost: true,
    };
}

impl From<std::process::ExitStatus> for ProcExit {
    fn from(s: std::process::ExitStatus) -> Self {
        let (code, signal) = match (s.code(), s.signal()) {
            (Some(code), _) => (code, 0),
            (None, Some(sig)) => (128 + sig, sig),
            (None, None) => (-1, 0),
        };
        ProcExit {
            code,
            signal,
            oom_killed: false,
            lost: false,
        }
    }
}

impl From<supervisor::Exited> for ProcExit {
    fn from(e: supervisor::Exited) -> Self {
        ProcExit {
            code: e.code,
            signal: e.signal,
            oom_killed: e.oom_killed,
            lost: false,
        }
    }
}

impl From<ProcExit> for ExitStatus {
    fn from(e: ProcExit) -> Self {
        ExitStatus {
            code: e.code,
            signal: e.signal,
            oom_killed: e.oom_killed,
        }
    }
}

/// One supervised process.
#[derive(Debug)]
pub struct Proc {
    /// Stable id: the name of its state directory.
    pub id: String,
    /// The task process (also its process group id).
    pub pid: u32,
    pub task_id: Option<String>,
    pub dir: PathBuf,
    /// The cgroup holding its limits, if any.
    pub cgroup: Option<PathBuf>,
    /// Its supervisor, which shares the cgroup and must outlive the kill.
    pub supervisor_pid: u32,
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
            Ok(v) => v.unwrap_or(ProcExit::LOST),
            // The waiter is gone without a result: the runtime is shutting
            // down. Report an unknown exit rather than hang.
            Err(_) => ProcExit::LOST,
        }
    }

    /// Sends `signal` to the process's group (the whole task tree). A
    /// process that has already exited is not an error. While the exit is
    /// unrecorded the supervisor has not reaped the leader, so its pid (and
    /// group id) cannot have been reused.
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

    /// Like [`Proc::signal`], by number (realtime signals included, see
    /// [`parse_signal`]).
    pub fn signal_number(&self, signal: i32) -> Result<(), String> {
        if self.status().is_some() {
            return Ok(());
        }
        // SAFETY: killpg(2) takes two integers and touches no memory of
        // ours; the number came from parse_signal (a valid signal).
        #[allow(unsafe_code)]
        let r = unsafe { libc::killpg(self.pid as libc::pid_t, signal) };
        match std::io::Error::last_os_error() {
            _ if r == 0 => Ok(()),
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(format!(
                "sending signal {signal} to process {}: {e}",
                self.pid
            )),
        }
    }

    /// SIGKILLs every process left in the task's cgroup but its supervisor:
    /// what escaped the process group (a container that made its own
    /// session) is still in the cgroup. No-op without a cgroup.
    pub fn kill_cgroup(&self) {
        if let Some(cg) = &self.cgroup {
            cgroups::kill_all_but(cg, self.supervisor_pid);
        }
    }
}

/// Every supervised process, by id, and the directory their records live in.
#[derive(Debug)]
pub struct ProcessTable {
    state_dir: PathBuf,
    cgroups: Cgroups,
    /// The binary run as supervisor: this host itself.
    supervisor_exe: PathBuf,
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Supervisors started ahead of need.
    warm: Arc<WarmPool>,
    /// Starts waiting for their supervisor's report right now.
    starting: std::sync::atomic::AtomicUsize,
}

/// How long after taking a spare supervisor the pool starts its
/// replacement.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// How many idle supervisors the host keeps ready (each ~185 kB private):
/// enough for a burst of starts while the pool refills.
pub const WARM_SUPERVISORS: usize = 4;

/// Supervisors started ahead of need, each waiting for one assignment on
/// its control socket (see [`supervisor`]), so StartTask does not pay for
/// an exec of the host binary. They are forked by the zygote (a supervisor
/// process exec'd once); if it cannot be had, each is exec'd.
#[derive(Debug)]
struct WarmPool {
    exe: PathBuf,
    size: usize,
    idle: Mutex<Vec<Warm>>,
    filling: std::sync::atomic::AtomicBool,
    zygote: Mutex<Option<Zygote>>,
}

#[derive(Debug)]
struct Zygote {
    /// Held so that it is reaped once dropped; it exits when `sock` closes.
    _child: tokio::process::Child,
    sock: UnixStream,
}

/// How long the zygote may take to answer a fork request.
const ZYGOTE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Warm {
    sup: SupervisorProc,
    sock: UnixStream,
}

/// A supervisor process, as the host can wait for it.
#[derive(Debug)]
enum SupervisorProc {
    /// Exec'd by this host: our child.
    Child(tokio::process::Child),
    /// Not our child (forked by the zygote, which the kernel reaps for; or
    /// adopted from an earlier host): watched through a pidfd opened while
    /// it was known alive, so its pid cannot have been reused.
    Forked { pid: u32, pidfd: OwnedFd },
}

impl SupervisorProc {
    fn pid(&self) -> Option<u32> {
        match self {
            SupervisorProc::Child(c) => c.id(),
            SupervisorProc::Forked { pid, .. } => Some(*pid),
        }
    }

    fn kill(&mut self) {
        match self {
            SupervisorProc::Child(c) => {
                let _ = c.start_kill();
            }
            SupervisorProc::Forked { pidfd, .. } => {
                let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::KILL);
            }
        }
    }

    /// Waits until the supervisor has exited.
    async fn exited(self) {
        match self {
            SupervisorProc::Child(mut c) => {
                let _ = c.wait().await;
            }
            SupervisorProc::Forked { pidfd, .. } => {
                if let Ok(fd) = pidfd_async(pidfd) {
                    // A pidfd turns readable when the process exits.
                    let _ = fd.readable().await;
                }
            }
        }
    }
}

impl WarmPool {
    fn new(exe: PathBuf, size: usize) -> Arc<Self> {
        Arc::new(WarmPool {
            exe,
            size,
            idle: Mutex::new(Vec::new()),
            filling: std::sync::atomic::AtomicBool::new(false),
            zygote: Mutex::new(None),
        })
    }

    fn start_one(&self) -> std::io::Result<Warm> {
        if let Some(w) = self.fork_one() {
            return Ok(w);
        }
        let (host_end, shim_end) = UnixStream::pair()?;
        let child = tokio::process::Command::new(&self.exe)
            .arg(supervisor::SUBCOMMAND)
            .arg(supervisor::POOLED)
            .stdin(Stdio::from(OwnedFd::from(shim_end)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()?;
        Ok(Warm {
            sup: SupervisorProc::Child(child),
            sock: host_end,
        })
    }

    /// A spare forked by the zygote (started first if need be), or none if
    /// the zygote cannot be had; a zygote that failed is dropped, and the
    /// next refill starts a new one.
    fn fork_one(&self) -> Option<Warm> {
        let mut zygote = self.zygote.lock().ok()?;
        if zygote.is_none() {
            match self.start_zygote() {
                Ok(z) => *zygote = Some(z),
                Err(e) => {
                    tracing::warn!(exe = %self.exe.display(), error = %e, "cannot start the supervisor zygote; exec'ing spares instead");
                    return None;
                }
            }
        }
        let z = zygote.as_ref()?;
        let forked = supervisor::fork_from_zygote(&z.sock).and_then(|(pid, sock)| {
            let raw = rustix::process::Pid::from_raw(pid as i32)
                .ok_or_else(|| std::io::Error::other("the zygote sent pid 0"))?;
            let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::NONBLOCK)?;
            Ok(Warm {
                sup: SupervisorProc::Forked { pid, pidfd },
                sock,
            })
        });
        match forked {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "the supervisor zygote failed; starting a new one next time");
                *zygote = None;
                None
            }
        }
    }

    fn start_zygote(&self) -> std::io::Result<Zygote> {
        let (host_end, shim_end) = UnixStream::pair()?;
        let child = tokio::process::Command::new(&self.exe)
            .arg(supervisor::SUBCOMMAND)
            .arg(supervisor::ZYGOTE)
            .stdin(Stdio::from(OwnedFd::from(shim_end)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()?;
        host_end.set_read_timeout(Some(ZYGOTE_TIMEOUT))?;
        Ok(Zygote {
            _child: child,
            sock: host_end,
        })
    }

    /// The pids of the idle spares.
    fn idle_pids(&self) -> Vec<u32> {
        self.idle
            .lock()
            .map(|v| v.iter().filter_map(|w| w.sup.pid()).collect())
            .unwrap_or_default()
    }

    /// The zygote's pid, if one runs.
    fn zygote_pid(&self) -> Option<u32> {
        self.zygote.lock().ok()?.as_ref()?._child.id()
    }

    /// Hands the assignment to an idle supervisor, if one takes it.
    fn assign(&self, line: &[u8], stdout: &OwnedFd, stderr: &OwnedFd) -> Option<Warm> {
        use std::os::fd::AsFd;
        loop {
            let mut w = self.idle.lock().ok()?.pop()?;
            match supervisor::send_assignment(&w.sock, line, stdout.as_fd(), stderr.as_fd()) {
                Ok(()) => return Some(w),
                Err(e) => {
                    // It died while idle (killed by someone); try the next.
                    tracing::debug!(error = %e, "idle supervisor gone");
                    w.sup.kill();
                }
            }
        }
    }

    /// Tops the pool up in the background, off the request path.
    fn refill(self: &Arc<Self>, handle: &tokio::runtime::Handle) {
        use std::sync::atomic::Ordering;
        if self.size == 0 || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        handle.spawn(async move {
            // Let the start that took a spare finish first: exec'ing the
            // next one right away competes with the task's own spawn for
            // the CPU, on the request path.
            tokio::time::sleep(REFILL_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || pool.fill()).await;
        });
    }

    /// Starts spares until the pool is full (on a blocking thread).
    fn fill(&self) {
        use std::sync::atomic::Ordering;
        while self
            .idle
            .lock()
            .map(|v| v.len() < self.size)
            .unwrap_or(false)
        {
            match self.start_one() {
                Ok(w) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(w);
                    }
                }
                Err(e) => {
                    tracing::warn!(exe = %self.exe.display(), error = %e, "cannot start a spare supervisor");
                    break;
                }
            }
        }
        self.filling.store(false, Ordering::Release);
    }
}

/// How long a starting supervisor may take to report.
const SUPERVISOR_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl ProcessTable {
    pub fn new(state_dir: PathBuf) -> Self {
        ProcessTable {
            state_dir,
            cgroups: Cgroups::detect(),
            // /proc/self/exe still works if the binary was replaced on disk.
            supervisor_exe: PathBuf::from("/proc/self/exe"),
            procs: Mutex::new(HashMap::new()),
            warm: WarmPool::new(PathBuf::from("/proc/self/exe"), WARM_SUPERVISORS),
            starting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Starts the spare supervisors now (in the background), so the first
    /// StartTask does not wait for one. Must be called within tokio.
    pub fn prewarm(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.warm.refill(&handle);
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Which cgroups limits go through on this host.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// Runs supervisors from `exe` instead of this process's own binary
    /// (for tests, whose binary is not the host).
    pub fn with_supervisor_exe(mut self, exe: PathBuf) -> Self {
        self.warm = WarmPool::new(exe.clone(), self.warm.size);
        self.supervisor_exe = exe;
        self
    }

    /// How many spare supervisors wait idle right now.
    pub fn warm_idle(&self) -> usize {
        self.warm.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// The pids of the spare supervisors waiting idle right now.
    pub fn warm_idle_pids(&self) -> Vec<u32> {
        self.warm.idle_pids()
    }

    /// The pid of the zygote that forks spare supervisors, if one runs.
    pub fn zygote_pid(&self) -> Option<u32> {
        self.warm.zygote_pid()
    }

    /// Keeps `n` spare supervisors instead of the default (0: none; every
    /// start then execs its supervisor).
    pub fn with_warm_supervisors(mut self, n: usize) -> Self {
        self.warm = WarmPool::new(self.supervisor_exe.clone(), n);
        self
    }

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

    /// Forgets the processes of a task and deletes their records.
    pub fn remove_task(&self, task_id: &str) {
        let removed: Vec<Arc<Proc>> = match self.procs.lock() {
            Ok(mut m) => {
                let ids: Vec<String> = m
                    .iter()
                    .filter(|(_, p)| p.task_id.as_deref() == Some(task_id))
                    .map(|(k, _)| k.clone())
                    .collect();
                ids.iter().filter_map(|id| m.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for p in removed {
            if let Some(cg) = &p.cgroup {
                cgroups::remove(cg);
            }
            if let Err(e) = std::fs::remove_dir_all(&p.dir) {
                tracing::warn!(dir = %p.dir.display(), error = %e, "cannot remove process records");
            }
        }
    }

    fn insert(&self, proc: Proc) -> Arc<Proc> {
        let proc = Arc::new(proc);
        if let Ok(mut m) = self.procs.lock() {
            m.insert(proc.id.clone(), proc.clone());
        }
        proc
    }

    fn new_dir(&self, task_id: Option<&str>) -> Result<(String, PathBuf), String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state_dir)
            .map_err(|e| format!("creating state dir {}: {e}", self.state_dir.display()))?;
        let stem: String = task_id
            .unwrap_or("proc")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(96)
            .collect();
        for _ in 0..16 {
            let id = format!("{stem}-{:08x}", rand::random::<u32>());
            let dir = self.state_dir.join(&id);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
        }
        Err("could not find a free process record name".into())
    }

    /// Starts `spec` under a supervisor (see [`supervisor`]) and a waiter
    /// that records its exit. Blocks until the supervisor reports that the
    /// process runs. Must be called from within a tokio runtime.
    pub fn spawn(
        &self,
        mut spec: supervisor::Spec,
        limits: Limits,
        stdout: OwnedFd,
        stderr: OwnedFd,
        task_id: Option<String>,
    ) -> Result<Arc<Proc>, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no async runtime to supervise the process".to_string())?;
        let _guard = handle.enter();
        let (id, dir) = self.new_dir(task_id.as_deref())?;
        let mut cgroup: Option<PathBuf> = None;
        let cleanup = |msg: String, cgroup: &Option<PathBuf>| {
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(cg) = cgroup {
                cgroups::remove(cg);
            }
            msg
        };
        if !limits.is_empty() {
            cgroup = self
                .cgroups
                .create(&id, &limits)
                .map_err(|e| cleanup(e, &None))?;
            spec.cgroup = cgroup.as_ref().map(|p| p.to_string_lossy().into_owned());
        }
        let cleanup = |msg: String| cleanup(msg, &cgroup);
        let assignment = supervisor::Assignment {
            dir: dir.clone(),
            spec,
        };
        let line = supervisor::assignment_line(&assignment)
            .map_err(|e| cleanup(format!("handing the task to its supervisor: {e}")))?;
        let spec = assignment.spec;
        let warm = self.warm.assign(&line, &stdout, &stderr);
        self.warm.refill(&handle);
        let (mut sup, host_end) = match warm {
            Some(w) => (w.sup, w.sock),
            None => {
                // No spare: exec a supervisor for this task, which reads
                // its spec from the record directory.
                supervisor::write_json(&dir, supervisor::SPEC_FILE, &spec)
                    .map_err(|e| cleanup(format!("writing the process spec: {e}")))?;
                let (host_end, shim_end) = UnixStream::pair()
                    .map_err(|e| cleanup(format!("creating the control socket: {e}")))?;
                let mut cmd = tokio::process::Command::new(&self.supervisor_exe);
                cmd.arg(supervisor::SUBCOMMAND)
                    .arg(&dir)
                    .stdin(Stdio::from(OwnedFd::from(shim_end)))
                    .stdout(Stdio::from(stdout))
                    .stderr(Stdio::from(stderr))
                    .kill_on_drop(false);
                let child = cmd
                    .spawn()
                    .map_err(|e| cleanup(format!("starting the supervisor: {e}")))?;
                // `cmd` drops here, closing our copy of the supervisor's end.
                (SupervisorProc::Child(child), host_end)
            }
        };
        let _ = host_end.set_read_timeout(Some(SUPERVISOR_REPORT_TIMEOUT));
        {
            // Spin only when no other start waits too: concurrent starts
            // spinning on a small node would keep their supervisors off
            // the CPUs they wait for.
            use std::sync::atomic::Ordering;
            let alone = self.starting.fetch_add(1, Ordering::AcqRel) == 0;
            if alone {
                spin_until_readable(&host_end, REPORT_SPIN);
            }
            self.starting.fetch_sub(1, Ordering::AcqRel);
        }
        let pid = match supervisor::read_report(&host_end) {
            Ok(pid) => pid,
            Err(e) => {
                sup.kill();
                return Err(cleanup(e));
            }
        };
        let supervisor_pid = sup.pid().unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        let exit_dir = dir.clone();
        handle.spawn(async move {
            // The supervisor exits right after recording the task's exit.
            sup.exited().await;
            let _ = tx.send(Some(read_exit(&exit_dir)));
        });
        Ok(self.insert(Proc {
            id,
            pid,
            task_id,
            dir,
            cgroup,
            supervisor_pid,
            exit: rx,
        }))
    }

    /// Re-adopts a process started by an earlier host process, from its
    /// records. Never restarts anything.
    pub fn adopt(&self, id: &str, task_id: Option<String>) -> Result<Arc<Proc>, String> {
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(format!("{id:?} is not a process record name"));
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no async runtime to supervise the process".to_string())?;
        let _guard = handle.enter();
        let dir = self.state_dir.join(id);
        let started: supervisor::Started = supervisor::read_json(&dir, supervisor::STARTED_FILE)
            .map_err(|e| format!("no usable record of process {id} in {}: {e}", dir.display()))?;
        let (tx, rx) = watch::channel(None);
        match watch_supervisor(&started) {
            Some(pidfd) => {
                let exit_dir = dir.clone();
                let sup = SupervisorProc::Forked {
                    pid: started.supervisor_pid,
                    pidfd,
                };
                handle.spawn(async move {
                    sup.exited().await;
                    let _ = tx.send(Some(read_exit(&exit_dir)));
                });
            }
            // The supervisor is gone: the task ended while no host ran.
            None => {
                let _ = tx.send(Some(read_exit(&dir)));
            }
        }
        Ok(self.insert(Proc {
            id: id.to_owned(),
            pid: started.pid,
            task_id,
            cgroup: started
                .cgroup
                .clone()
                .or_else(|| {
                    supervisor::read_json::<supervisor::Spec>(&dir, supervisor::SPEC_FILE)
                        .ok()
                        .and_then(|s| s.cgroup)
                })
                .map(PathBuf::from),
            supervisor_pid: started.supervisor_pid,
            dir,
            exit: rx,
        }))
    }
}

/// How long StartTask's thread stays on its CPU waiting for the
/// supervisor's report before it sleeps.
const REPORT_SPIN: Duration = Duration::from_millis(1);

/// Waits up to `spin` for `sock` to be readable without giving up the CPU.
/// The report comes right after the task's exec, when the new task process
/// wants a CPU too: a thread that slept must then wait to be scheduled
/// again (measured: ~350 us median of StartTask's ~1 ms on 2 cores).
fn spin_until_readable(sock: &UnixStream, spin: Duration) {
    use rustix::net::RecvFlags;
    let until = Instant::now() + spin;
    let mut byte = [0u8; 1];
    while Instant::now() < until {
        match rustix::net::recv(sock, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => std::hint::spin_loop(),
            // Data, end of file, or an error read_report will see.
            _ => return,
        }
    }
}

/// A pidfd for the recorded supervisor if it is still that same process.
fn watch_supervisor(started: &supervisor::Started) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(started.supervisor_pid as i32)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()?;
    // Checked after opening: the pidfd pins the process, so a match now
    // means the fd refers to our supervisor, not a reused pid.
    (supervisor::start_time(started.supervisor_pid) == Some(started.supervisor_start_time))
        .then_some(fd)
}

#[allow(unsafe_code)]
fn pidfd_async(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
    // for exactly as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

fn read_exit(dir: &Path) -> ProcExit {
    match supervisor::read_json::<supervisor::Exited>(dir, supervisor::EXITED_FILE) {
        Ok(e) => e.into(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "supervisor ended without recording an exit");
            ProcExit::LOST
        }
    }
}

/// Parses a Unix signal name as Nomad sends them (`SIGTERM`); the `SIG`
/// prefix is optional and case does not matter.
pub fn parse_signal(name: &str) -> Result<i32, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(sig) = Signal::from_str(&full) {
        return Ok(sig as i32);
    }
    // Realtime signals, as systemd names them: SIGRTMIN+3 powers a
    // container's systemd off.
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        rest.strip_prefix(sign)?.parse::<i32>().ok()
    };
    let rt = if let Some(rest) = full.strip_prefix("SIGRTMIN") {
        offset(rest, '+').map(|n| min + n)
    } else if let Some(rest) = full.strip_prefix("SIGRTMAX") {
        offset(rest, '-').map(|n| max - n)
    } else {
        None
    };
    match rt {
        Some(sig) if (min..=max).contains(&sig) => Ok(sig),
        _ => Err(format!(
            "unknown signal {name:?}: expected a Unix signal name such as SIGTERM, SIGINT or \
             SIGHUP, or a realtime one such as SIGRTMIN+3"
        )),
    }
}

/// A std command for a guest's `command`, checked against the grants: the
/// environment is exactly the one given, stdin is null, and it runs as the
/// requested user.
pub fn build_command(
    host: &crate::caps::HostContext,
    command: &Command,
) -> Result<StdCommand, ProcessError> {
    let program = host
        .grants
        .check_exec(&command.program, &command.args)
        .map_err(|e| ProcessError::NotGranted(e.to_string()))?;
    let mut cmd = StdCommand::new(program);
    cmd.args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &command.cwd {
        if !Path::new(dir).is_dir() {
            return Err(ProcessError::NotFound(format!(
                "working directory {dir} does not exist"
            )));
        }
        cmd.current_dir(dir);
    }
    if let Some(user) = command.user.as_deref().filter(|u| !u.is_empty()) {
        let (uid, gid) = supervisor::resolve_user(user).map_err(ProcessError::NotFound)?;
        cmd.uid(uid).gid(gid);
    }
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

fn open_output(
    which: Output,
    stdout_path: &str,
    stderr_path: &str,
) -> Result<OwnedFd, ProcessError> {
    let path = match which {
        Output::Null => "",
        Output::TaskStdout => stdout_path,
        Output::TaskStderr => stderr_path,
    };
    if path.is_empty() {
        return OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| ProcessError::Failed(format!("opening /dev/null: {e}")));
    }
    // Opening a FIFO for writing blocks until the reader (Nomad's logmon)
    // has it open; logmon opens it before StartTask.
    OpenOptions::new()
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| ProcessError::Failed(format!("opening task output {path}: {e}")))
}

fn spawn_error(program: &str, e: String) -> ProcessError {
    let text = if e.contains(program) {
        e
    } else {
        format!("starting {program}: {e}")
    };
    if text.contains("No such file") {
        ProcessError::NotFound(text)
    } else {
        ProcessError::Failed(text)
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
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        self.blocking(|_| {
            run_to_completion(
                cmd,
                &command.program,
                Duration::from_millis(timeout_ms.into()),
            )
        })
    }

    fn spawn(&mut self, spec: SpawnSpec) -> Result<String, ProcessError> {
        let program = self
            .host
            .grants
            .check_exec(&spec.command.program, &spec.command.args)
            .map_err(|e| ProcessError::NotGranted(e.to_string()))?;
        if let Some(dir) = &spec.command.cwd
            && !Path::new(dir).is_dir()
        {
            return Err(ProcessError::NotFound(format!(
                "working directory {dir} does not exist"
            )));
        }
        let (out, err, task_id) = match &self.task {
            Some(t) => (
                t.stdout_path.clone(),
                t.stderr_path.clone(),
                Some(t.id.clone()),
            ),
            None => (String::new(), String::new(), None),
        };
        let sup = supervisor::Spec {
            program: program.to_string_lossy().into_owned(),
            args: spec.command.args.clone(),
            env: spec.command.env.clone(),
            cwd: spec.command.cwd.clone(),
            user: spec.command.user.clone(),
            cgroup: None,
        };
        let host = self.host.clone();
        let proc = self.blocking(|_| {
            let stdout = open_output(spec.stdout, &out, &err)?;
            let stderr = open_output(spec.stderr, &out, &err)?;
            let limits = spec
                .limits
                .map(|l| Limits {
                    memory_max: l.memory_max_bytes,
                    cpu_shares: l.cpu_shares,
                })
                .unwrap_or_default();
            host.processes
                .spawn(sup, limits, stdout, stderr, task_id)
                .map_err(|e| spawn_error(&spec.command.program, e))
        });
        let proc = match proc {
            Ok(p) => p,
            Err(e) => {
                // Operators see why in the task's events, not only in logs.
                if let Some(task) = &self.task {
                    let msg = match &e {
                        ProcessError::NotGranted(m)
                        | ProcessError::NotFound(m)
                        | ProcessError::Failed(m) => m,
                    };
                    self.host.emit(crate::caps::TaskEvent::for_task(
                        task,
                        format!("could not start the task process: {msg}"),
                    ));
                }
                return Err(e);
            }
        };
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
        proc.signal_number(sig).map_err(ProcessError::Failed)
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
pub fn run_to_completion(
    mut cmd: StdCommand,
    program: &str,
    timeout: Duration,
) -> Result<RunOutput, ProcessError> {
    let mut child = cmd
        .spawn()
        .map_err(|e| spawn_error(program, e.to_string()))?;
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
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
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
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), libc::SIGHUP);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
        assert_eq!(parse_signal("rtmin").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        for bad in ["SIGRTMIN+99", "SIGRTMIN-1", "SIGRTMAX+1", "SIGRTMIN3"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
        let err = parse_signal("SIGBOGUS").unwrap_err();
        assert!(err.contains("\"SIGBOGUS\""), "{err}");
    }

    #[test]
    fn exit_by_signal_reports_128_plus_signal() {
        let status = std::process::ExitStatus::from_raw(9); // killed by SIGKILL
        let e = ProcExit::from(status);
        assert_eq!((e.code, e.signal, e.lost), (137, 9, false));
        let status = std::process::ExitStatus::from_raw(3 << 8); // exit(3)
        assert_eq!(
            (ProcExit::from(status).code, ProcExit::from(status).signal),
            (3, 0)
        );
    }
}
