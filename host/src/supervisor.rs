//! The per-process supervisor: the host binary re-executed in a tiny mode
//! that never loads wasmtime or tokio.
//!
//! Why: Nomad kills and relaunches driver plugins (agent restarts,
//! upgrades), and tasks must survive that with their exit status intact. A
//! direct child of a killed host is re-parented to init and its exit status
//! is gone. So every task process gets a supervisor that
//! - starts a new session (signals for the agent or host never reach it),
//! - starts the task in its own process group, with the task's stdout and
//!   stderr FIFO write ends (it holds them too),
//! - records the task's pid and start time in `started.json`,
//! - reaps the task and writes `exited.json` atomically, then exits.
//!
//! Everything lives in one directory per process under the host's state
//! dir, so a new host process can adopt it: it checks the supervisor's pid
//! *and* start time (pids are reused), watches it with a pidfd, and reads
//! `exited.json` when it is gone. A task that ended while no host was
//! running is reported with its real exit status; nothing is restarted.
//!
//! The host and a starting supervisor talk over a socket on the
//! supervisor's stdin: one line, `ok <task pid>` or `error <text>`. The
//! supervisor writes `started.json` before it says `ok`, so once StartTask
//! returns, the records a later host needs to recover the task exist.
//!
//! Warm supervisors: exec'ing the host binary costs about a millisecond,
//! too much for StartTask's budget. So the host keeps a few supervisors
//! started ahead (`__supervise --pooled`): each has made its session and
//! waits on its control socket for one assignment: a JSON line with the
//! record directory and the spec, with the task's stdout and stderr
//! descriptors attached (SCM_RIGHTS). Only the task's own spawn is then left
//! on the request path. (A supervisor exec'd for one task instead reads its
//! spec from `spec.json` in the directory named on its command line.)
//! A pooled supervisor whose host goes away sees end-of-file and exits.
//!
//! The zygote: refilling the pool by exec'ing the host binary costs about a
//! millisecond of CPU, which on a small node lands on the next StartTask. So
//! the host execs one more process ahead, `__supervise --zygote`, which warms
//! up once and then, for each request byte on its control socket, forks a
//! pooled supervisor (no exec: its pages are shared with the zygote) and
//! sends the host that supervisor's control socket and pid (SCM_RIGHTS). The
//! zygote ignores SIGCHLD, so the kernel reaps the supervisors it forked;
//! the host watches each through a pidfd. The zygote is single-threaded,
//! which is what makes `fork` without `exec` sound.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The hidden first argument that selects supervisor mode.
pub const SUBCOMMAND: &str = "__supervise";

/// In place of the directory: wait for an assignment on the control socket.
pub const POOLED: &str = "--pooled";

/// In place of the directory: fork pooled supervisors on request.
pub const ZYGOTE: &str = "--zygote";

pub const SPEC_FILE: &str = "spec.json";
pub const STARTED_FILE: &str = "started.json";
pub const EXITED_FILE: &str = "exited.json";
pub const LOG_FILE: &str = "supervisor.log";

/// What to run; written by the host before it starts the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Run as this user (name or numeric uid) with its primary group.
    pub user: Option<String>,
    /// A cgroup directory to join before starting the task.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// Written by the supervisor once the task process exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    /// `/proc/<pid>/stat` start time, in clock ticks since boot.
    pub start_time: u64,
    pub supervisor_pid: u32,
    pub supervisor_start_time: u64,
    /// The cgroup the task runs in (its limits), if any. Records written
    /// before this field existed have it in `spec.json` only.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// What a pooled supervisor is handed: where its records go and what to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    pub dir: std::path::PathBuf,
    pub spec: Spec,
}

/// Written by the supervisor when the task process has been reaped.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exited {
    pub code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    pub at_unix_ns: u64,
}

/// A process's start time from `/proc/<pid>/stat` (field 22), which
/// together with the pid identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Writes `value` as JSON to `dir/name` atomically (temp file + rename).
///
/// No fsync: the records must survive the *host* dying, which the page cache
/// guarantees; a machine crash ends the tasks too. (An fsync per record cost
/// ~3 ms per StartTask on disk; see BENCHMARKS.md.)
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> std::io::Result<T> {
    let bytes = std::fs::read(dir.join(name))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reports to the host on the control socket (our stdin). Failing to
/// report is not fatal: the host then sees the socket close.
fn report(line: &str) {
    let stdin = std::io::stdin();
    let _ = rustix::io::write(stdin.as_fd(), format!("{line}\n").as_bytes());
}

fn log(dir: &Path, msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
    {
        let _ = writeln!(f, "{msg}");
    }
}

pub fn resolve_user(user: &str) -> Result<(u32, u32), String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(format!("user {user:?} does not exist on this host")),
        Err(e) => Err(format!("looking up user {user:?}: {e}")),
    }
}

/// Supervisor mode: `<binary> __supervise <dir>`, or `__supervise --pooled`
/// to wait for the directory and output descriptors on the control socket.
/// Returns the process's exit code (0 once the task's exit is recorded).
pub fn run(dir: &Path) -> ExitCode {
    // Our own session: the agent's or host's process-group signals (Ctrl-C,
    // a group kill of the host) must not reach the supervisor.
    if let Err(e) = nix::unistd::setsid() {
        report(&format!("error setsid: {e}"));
        return ExitCode::from(1);
    }
    if dir == Path::new(ZYGOTE) {
        return zygote();
    }
    if dir == Path::new(POOLED) {
        warm_up(true);
    }
    serve(dir)
}

/// A supervisor's life after its session exists: pooled (wait for the
/// assignment) or given its directory on the command line.
fn serve(dir: &Path) -> ExitCode {
    // Our own start time, read before a task waits on us.
    let me = std::process::id();
    let my_start = start_time(me).unwrap_or(0);
    let (dir, spec) = if dir == Path::new(POOLED) {
        match receive_assignment() {
            Ok(a) => (a.dir, Ok(a.spec)),
            // The host went away before it needed us: nothing to do.
            Err(_) => return ExitCode::from(1),
        }
    } else {
        let spec =
            read_json::<Spec>(dir, SPEC_FILE).map_err(|e| format!("reading {SPEC_FILE}: {e}"));
        (dir.to_path_buf(), spec)
    };
    match spec.and_then(|spec| supervise(&dir, spec, (me, my_start))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            log(&dir, &msg);
            report(&format!("error {}", msg.replace('\n', " ")));
            ExitCode::from(1)
        }
    }
}

/// Runs, while idle, the code paths a start needs (decoding a spec,
/// spawning a process, encoding a record), so their pages are mapped before
/// a task waits on them. `spawn`: also spawn `/bin/true` (the zygote and
/// exec'd spares do; a forked spare shares the zygote's mapped pages and
/// only needs its own copies of the ones a start writes).
fn warm_up(spawn: bool) {
    let sample = Assignment {
        dir: "/".into(),
        spec: Spec {
            program: "/bin/true".into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            user: None,
            cgroup: None,
        },
    };
    let Ok(bytes) = serde_json::to_vec(&sample) else {
        return;
    };
    let Ok(Assignment { spec, .. }) = serde_json::from_slice::<Assignment>(&bytes) else {
        return;
    };
    let mut cmd = Command::new(&spec.program);
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if spawn && Path::new(&spec.program).exists() {
        let _ = cmd.status();
    }
    let _ = start_time(std::process::id());
    // The stack a start runs on (copy-on-write after a fork).
    let stack = std::hint::black_box([1u8; 64 * 1024]);
    std::hint::black_box(&stack);
}

/// Zygote mode (see the module docs): forks one pooled supervisor per
/// request byte on the control socket (stdin) and answers `<pid>\n` with the
/// supervisor's control socket attached. Exits when the host closes the
/// socket.
fn zygote() -> ExitCode {
    // The kernel reaps what we fork: no zombies, no SIGCHLD handling.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // and touches no memory of ours.
    #[allow(unsafe_code)]
    let ignored = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    if ignored.is_err() {
        return ExitCode::from(1);
    }
    warm_up(true);
    let control = std::io::stdin();
    let mut request = [0u8; 1];
    loop {
        match rustix::io::read(control.as_fd(), &mut request) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return ExitCode::from(1),
        }
        let (host_end, shim_end) = match std::os::unix::net::UnixStream::pair() {
            Ok(p) => p,
            Err(_) => return ExitCode::from(1),
        };
        // SAFETY: this process is single-threaded (the zygote starts no
        // threads, and std's runtime starts none), so the child is a
        // complete copy that may run any code.
        #[allow(unsafe_code)]
        let forked = unsafe { nix::unistd::fork() };
        match forked {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(host_end);
                // SAFETY: as above, restoring the default disposition.
                #[allow(unsafe_code)]
                let _ = unsafe {
                    nix::sys::signal::signal(
                        nix::sys::signal::Signal::SIGCHLD,
                        nix::sys::signal::SigHandler::SigDfl,
                    )
                };
                // Our control socket becomes stdin, as for an exec'd spare.
                if rustix::stdio::dup2_stdin(&shim_end).is_err() {
                    std::process::exit(1);
                }
                drop(shim_end);
                let code = match nix::unistd::setsid() {
                    Ok(_) => {
                        // Pages shared with the zygote are copied on the
                        // first write: run the start path once now, while
                        // idle, so a task does not wait for those copies
                        // (in-process, a start via a spare went from 448 to
                        // 308 us at p10 with this).
                        warm_up(false);
                        serve(Path::new(POOLED))
                    }
                    Err(_) => ExitCode::from(1),
                };
                // Leave without returning into the zygote's loop.
                std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(shim_end);
                let line = format!("{}\n", child.as_raw());
                if send_with_fds(control.as_fd(), line.as_bytes(), &[host_end.as_fd()]).is_err() {
                    return ExitCode::from(1);
                }
            }
            Err(_) => {
                // Out of processes: say so (pid 0, no socket).
                drop((host_end, shim_end));
                if rustix::io::write(control.as_fd(), b"0\n").is_err() {
                    return ExitCode::from(1);
                }
            }
        }
    }
}

/// Sends `bytes` on a Unix socket with `fds` attached to the first byte.
fn send_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("no room for the descriptors"));
    }
    let mut sent = rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The descriptors went with the first byte; send any rest plainly.
    while sent < bytes.len() {
        let mut none = SendAncillaryBuffer::default();
        sent += rustix::net::sendmsg(
            sock,
            &[std::io::IoSlice::new(&bytes[sent..])],
            &mut none,
            SendFlags::NOSIGNAL,
        )?;
    }
    Ok(())
}

/// The most descriptors one control-socket message carries (a task's
/// stdout and stderr).
const MAX_FDS: usize = 2;

/// Reads one `\n`-terminated line (returned without it) from a Unix
/// socket, with the descriptors sent along. End of file is an
/// `UnexpectedEof` error; a line longer than `max` bytes is refused.
fn recv_line_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    max: usize,
) -> std::io::Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    let mut line = Vec::with_capacity(256);
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = match rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                fds.extend(received);
            }
        }
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.extend_from_slice(&buf[..got]);
        if line.last() == Some(&b'\n') {
            line.pop();
            return Ok((line, fds));
        }
        if line.len() > max {
            return Err(std::io::Error::other(format!(
                "a line longer than {max} bytes"
            )));
        }
    }
}

/// Host side: asks the zygote on `sock` for one pooled supervisor; returns
/// its pid and control socket.
pub fn fork_from_zygote(
    sock: &std::os::unix::net::UnixStream,
) -> std::io::Result<(u32, std::os::unix::net::UnixStream)> {
    rustix::net::send(sock, b"f", rustix::net::SendFlags::NOSIGNAL)?;
    let (line, mut fds) = recv_line_with_fds(sock.as_fd(), 16).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::other("the zygote closed its socket")
        } else {
            e
        }
    })?;
    let pid: u32 = std::str::from_utf8(&line)
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| std::io::Error::other("the zygote could not fork"))?;
    let fd = fds
        .pop()
        .ok_or_else(|| std::io::Error::other("the zygote sent no socket"))?;
    Ok((pid, std::os::unix::net::UnixStream::from(fd)))
}

/// Pooled mode: reads the assignment (a JSON line) from the control socket
/// (stdin) with the task's stdout and stderr descriptors attached, and
/// makes them ours.
fn receive_assignment() -> Result<Assignment, String> {
    let (line, fds) =
        recv_line_with_fds(std::io::stdin().as_fd(), MAX_ASSIGNMENT).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the host closed the control socket".to_owned()
            } else {
                format!("reading the assignment: {e}")
            }
        })?;
    let [stdout, stderr]: [std::os::fd::OwnedFd; 2] = fds.try_into().map_err(|v: Vec<_>| {
        format!(
            "expected 2 descriptors with the assignment, got {}",
            v.len()
        )
    })?;
    rustix::stdio::dup2_stdout(&stdout).map_err(|e| format!("taking the task's stdout: {e}"))?;
    rustix::stdio::dup2_stderr(&stderr).map_err(|e| format!("taking the task's stderr: {e}"))?;
    serde_json::from_slice(&line).map_err(|e| format!("reading the assignment: {e}"))
}

/// The longest assignment line (a task's argv and environment included).
const MAX_ASSIGNMENT: usize = 16 << 20;

/// The assignment line for [`send_assignment`]: JSON (which escapes every
/// newline inside it) and a newline. Fails for a directory that is not
/// UTF-8 or an assignment longer than a supervisor accepts.
pub fn assignment_line(assignment: &Assignment) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(assignment).map_err(std::io::Error::other)?;
    if line.len() >= MAX_ASSIGNMENT {
        return Err(std::io::Error::other(format!(
            "the task's command line and environment are {} bytes; at most {MAX_ASSIGNMENT} fit",
            line.len()
        )));
    }
    line.push(b'\n');
    Ok(line)
}

/// Host side: hands a pooled supervisor its assignment line (see
/// [`assignment_line`]) with the task's output descriptors.
pub fn send_assignment(
    sock: &std::os::unix::net::UnixStream,
    line: &[u8],
    stdout: std::os::fd::BorrowedFd<'_>,
    stderr: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    send_with_fds(sock.as_fd(), line, &[stdout, stderr])
}

fn supervise(dir: &Path, spec: Spec, (me, my_start): (u32, u64)) -> Result<(), String> {
    // Join the cgroup first, so the task and all it starts are inside.
    if let Some(cg) = &spec.cgroup {
        std::fs::write(
            Path::new(cg).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("joining cgroup {cg}: {e}"))?;
    }

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(user) = spec.user.as_deref().filter(|u| !u.is_empty()) {
        let (uid, gid) = resolve_user(user)?;
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", spec.program))?;

    let started = Started {
        pid: child.id(),
        start_time: start_time(child.id()).unwrap_or(0),
        supervisor_pid: me,
        supervisor_start_time: my_start,
        cgroup: spec.cgroup.clone(),
    };
    if let Err(e) = write_json(dir, STARTED_FILE, &started) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("recording the task's start: {e}"));
    }
    report(&format!("ok {}", started.pid));
    // Close the control socket: the host may be gone later, and nothing
    // else is ever said on it.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }

    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log(dir, &format!("waiting for the task: {e}"));
                return Err(format!("waiting for the task: {e}"));
            }
        }
    };
    let (code, signal) = match (status.code(), status.signal()) {
        (Some(c), _) => (c, 0),
        (None, Some(s)) => (128 + s, s),
        (None, None) => (-1, 0),
    };
    let oom_killed = spec
        .cgroup
        .as_deref()
        .is_some_and(|cg| crate::caps::cgroups::oom_kills(Path::new(cg)) > 0);
    let exited = Exited {
        code,
        signal,
        oom_killed,
        at_unix_ns: now_ns(),
    };
    write_json(dir, EXITED_FILE, &exited).map_err(|e| format!("recording the task's exit: {e}"))
}

/// Host side: reads the supervisor's one-line report; returns the task's
/// pid.
pub fn read_report(mut sock: impl Read) -> Result<u32, String> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        match sock.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if buf.len() < 4096 {
                    buf.push(byte[0]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("no word from the supervisor: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    match line.split_once(' ') {
        Some(("ok", pid)) => pid
            .parse()
            .map_err(|_| format!("unexpected supervisor report {line:?}")),
        Some(("error", msg)) => Err(msg.to_owned()),
        _ if line.is_empty() => Err("the supervisor exited without reporting".into()),
        _ => Err(format!("unexpected supervisor report {line:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(t > 0);
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn json_files_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let e = Exited {
            code: 3,
            signal: 0,
            oom_killed: false,
            at_unix_ns: 1,
        };
        write_json(dir.path(), EXITED_FILE, &e).unwrap();
        assert_eq!(read_json::<Exited>(dir.path(), EXITED_FILE).unwrap(), e);
        assert!(!dir.path().join(".exited.json.tmp").exists());
    }

    #[test]
    fn reports_parse() {
        assert_eq!(read_report(&b"ok 42\n"[..]), Ok(42));
        assert!(read_report(&b"ok\n"[..]).is_err());
        assert_eq!(
            read_report(&b"error starting /x: nope\n"[..]).unwrap_err(),
            "starting /x: nope"
        );
        assert!(
            read_report(&b""[..])
                .unwrap_err()
                .contains("without reporting")
        );
    }

    #[test]
    fn an_assignment_is_one_line_whatever_the_task_carries() {
        let a = Assignment {
            dir: "/run/nomad-wasm/t-1".into(),
            spec: Spec {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), "echo 'two\nlines'".into()],
                env: vec![("V".into(), "a\nb\r\0c".into())],
                cwd: None,
                user: None,
                cgroup: Some("/sys/fs/cgroup/x".into()),
            },
        };
        let line = assignment_line(&a).unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Assignment = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn an_oversized_assignment_is_refused_with_its_size() {
        let mut a = Assignment {
            dir: "/d".into(),
            spec: Spec {
                program: "/bin/true".into(),
                args: Vec::new(),
                env: Vec::new(),
                cwd: None,
                user: None,
                cgroup: None,
            },
        };
        a.spec.env.push(("BIG".into(), "x".repeat(MAX_ASSIGNMENT)));
        let e = assignment_line(&a).unwrap_err().to_string();
        assert!(e.contains("command line and environment"), "{e}");
    }

    #[test]
    fn unknown_users_are_named() {
        assert!(
            resolve_user("no-such-user-xyz")
                .unwrap_err()
                .contains("no-such-user-xyz")
        );
        assert_eq!(resolve_user("0").unwrap(), (0, 0));
    }
}
