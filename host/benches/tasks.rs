//! Memory per running task and scale: the task bars (BENCHMARKS.md,
//! "Tasks: memory and scale").
//!
//! Run with `cargo bench -p nomad-wasm-host --bench tasks`. Needs the hello
//! guest (`cargo build -p hello-guest --target wasm32-wasip2 --profile
//! guest`), Go with Debian's go-plugin packages for the anchor, and `rustc`
//! for the spawn-and-wait baseline; the host binary is this package's
//! binary target, built by `cargo bench` (`CARGO_BIN_EXE_nomad-driver-wasm`,
//! i.e. target/release/nomad-driver-wasm).
//!
//! Bars:
//! 1. private memory per running task, measured with 100 running tasks:
//!    (host growth + sum over supervisors of Private_Clean + Private_Dirty
//!    from /proc/<pid>/smaps_rollup) / N <= 0.5 MB (512 KiB). Anchor, in
//!    the same run: 100 minimal Go go-plugin servers (the shape of Nomad's
//!    per-task executor), mean private and RSS per process.
//! 2. 1,000 concurrent running tasks, all started, stopped and destroyed
//!    cleanly (no supervisor, task process or record left); reports the
//!    host's RSS and the total start / stop / destroy wall times.
//!
//! Private_Clean of file-backed pages is only private while one process
//! maps them; with 100 supervisors (and the host) mapping the same binary
//! they are Shared_Clean, which is why the bar is measured with all 100
//! running. A freshly linked binary's pages are *dirty page cache* until
//! writeback, and dirty page cache mapped by one process shows up as
//! Private_Dirty; the bench fsyncs every binary it measures first.
//!
//! Outside `cargo bench` (e.g. `cargo test --all-targets`) nothing runs.
//!
//! Knobs: `TASKS_MEM_N` (100), `TASKS_ANCHOR_N` (100), `TASKS_SCALE_N`
//! (1000; 0 skips the scale run), `TASKS_CONCURRENCY` (16 concurrent RPCs),
//! `TASKS_HOST` (a host binary to measure instead, e.g. a non-PIE build),
//! `HELLO_WASM` (guest path), `GO`, `RUSTC`, `TASKS_STATE_ON_DISK=1`
//! (supervisor records under a temp dir instead of /dev/shm).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nomad_plugin_proto::base::{SetConfigRequest, base_plugin_client::BasePluginClient};
use nomad_plugin_proto::drivers::{
    DestroyTaskRequest, StartTaskRequest, StopTaskRequest, TaskConfig, driver_client::DriverClient,
    start_task_response,
};
use tonic::transport::Channel;

const COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
const COOKIE_VALUE: &str = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
const SHELL: &str = "/usr/bin/bash";
const SUPERVISE: &str = "__supervise";
/// 0.5 MB, in the kB (KiB) smaps reports in.
const BAR_PER_TASK_KB: f64 = 512.0;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "tasks: runs only under `cargo bench -p nomad-wasm-host --bench tasks`; skipping"
        );
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tasks: at least one bar FAILED");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tasks: error: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------- setup

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

struct Paths {
    host: PathBuf,
    guest: PathBuf,
    anchor: PathBuf,
    spawnwait: Option<PathBuf>,
}

fn paths() -> Res<Paths> {
    let root = repo_root();
    let target = target_dir(&root);
    let host = std::env::var_os("TASKS_HOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm")));
    if !host.is_file() {
        return Err(format!(
            "host binary {} is missing (cargo build --release -p nomad-wasm-host)",
            host.display()
        )
        .into());
    }
    let guest = std::env::var_os("HELLO_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("wasm32-wasip2/guest/hello.wasm"));
    if !guest.is_file() {
        return Err(format!(
            "hello guest {} is missing; build it with:\n  \
             cargo build -p hello-guest --target wasm32-wasip2 --profile guest\n\
             (or point HELLO_WASM at a built hello.wasm)",
            guest.display()
        )
        .into());
    }
    if !Path::new(SHELL).is_file() {
        return Err(format!("{SHELL} is missing; the hello driver runs tasks with bash").into());
    }
    let out = target.join("bench-tasks");
    std::fs::create_dir_all(&out)?;
    let anchor = build_go_anchor(&root, &target, &out)?;
    let spawnwait = match build_spawnwait(&root, &out) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("tasks: skipping the Rust spawn-and-wait baseline: {e}");
            None
        }
    };
    Ok(Paths {
        host,
        guest,
        anchor,
        spawnwait,
    })
}

/// The Go go-plugin anchor: tests/bench/goplugin-anchor (shared with the
/// launch bar), else tests/bench/memory/anchor; built offline in GOPATH
/// mode against Debian's packaged go-plugin and grpc-go.
fn build_go_anchor(root: &Path, target: &Path, out_dir: &Path) -> Res<PathBuf> {
    let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
    let shared = root.join("tests/bench/goplugin-anchor");
    let src = if shared.join("main.go").is_file() {
        shared
    } else {
        root.join("tests/bench/memory/anchor")
    };
    let out = out_dir.join("goplugin-anchor");
    let gopath_dir = out_dir.join("gopath");
    std::fs::create_dir_all(&gopath_dir)?;
    let gopath = format!("{}:/usr/share/gocode", gopath_dir.display());
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", target.join("bench-anchor/gocache"))
        .output()
        .map_err(|e| -> BoxError {
            format!(
                "cannot run `{go}` ({e}); the anchor needs Go and Debian's go-plugin packages:\n  \
                 apt-get install -y --no-install-recommends golang-go golang-github-hashicorp-go-plugin-dev \
                 golang-google-grpc-dev golang-github-hashicorp-go-hclog-dev"
            )
            .into()
        })?;
    if !built.status.success() {
        return Err(format!(
            "building the Go anchor in {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&built.stderr)
        )
        .into());
    }
    eprintln!("tasks: Go anchor built from {}", src.display());
    Ok(out)
}

/// tests/bench/memory/spawnwait.rs, compiled with plain `rustc -O`.
fn build_spawnwait(root: &Path, out_dir: &Path) -> Res<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let src = root.join("tests/bench/memory/spawnwait.rs");
    let out = out_dir.join("spawnwait");
    let built = Command::new(&rustc)
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .output()?;
    if !built.status.success() {
        return Err(format!("{rustc} failed: {}", String::from_utf8_lossy(&built.stderr)).into());
    }
    Ok(out)
}

/// Raises the soft open-file and process limits to their hard limits (the
/// host and everything it starts inherit them); returns a description of
/// the limits that apply.
fn raise_limits() -> String {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut parts = Vec::new();
    for (name, res) in [("nofile", Resource::Nofile), ("nproc", Resource::Nproc)] {
        let mut l = getrlimit(res);
        if l.current != l.maximum {
            l.current = l.maximum;
            let _ = setrlimit(res, l);
        }
        let l = getrlimit(res);
        let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
        parts.push(format!("{name} {}/{}", show(l.current), show(l.maximum)));
    }
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    parts.push(format!("pid_max {}", read("/proc/sys/kernel/pid_max")));
    parts.push(format!(
        "threads-max {}",
        read("/proc/sys/kernel/threads-max")
    ));
    let pids = read("/sys/fs/cgroup/pids.max");
    let pids = if pids == "?" {
        read("/sys/fs/cgroup/pids/pids.max")
    } else {
        pids
    };
    parts.push(format!("cgroup pids.max {pids}"));
    parts.join(", ")
}

/// Flushes a binary's page cache: a freshly linked file is dirty page cache
/// until writeback, and its mapped pages would read as Private_Dirty.
fn settle(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

fn state_base() -> Res<(tempfile::TempDir, &'static str)> {
    let shm = Path::new("/dev/shm");
    let tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if tmpfs && std::env::var_os("TASKS_STATE_ON_DISK").is_none() {
        Ok((
            tempfile::Builder::new()
                .prefix("tasks-state-")
                .tempdir_in(shm)?,
            "tmpfs (/dev/shm)",
        ))
    } else {
        Ok((tempfile::tempdir()?, "a temp dir"))
    }
}

// ---------------------------------------------------------------- /proc

/// One process's memory, in kB, from /proc/<pid>/smaps_rollup.
#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
    shared_clean: u64,
    private_clean: u64,
    private_dirty: u64,
    anonymous: u64,
}

impl Mem {
    fn private(&self) -> u64 {
        self.private_clean + self.private_dirty
    }

    fn add(&mut self, o: &Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.shared_clean += o.shared_clean;
        self.private_clean += o.private_clean;
        self.private_dirty += o.private_dirty;
        self.anonymous += o.anonymous;
    }
}

fn mem(pid: u32) -> Res<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map_err(|e| format!("reading /proc/{pid}/smaps_rollup: {e}"))?;
    let mut m = Mem::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "Rss:" => m.rss = v,
            "Pss:" => m.pss = v,
            "Shared_Clean:" => m.shared_clean = v,
            "Private_Clean:" => m.private_clean = v,
            "Private_Dirty:" => m.private_dirty = v,
            "Anonymous:" => m.anonymous = v,
            _ => {}
        }
    }
    Ok(m)
}

fn sum_mem(pids: &[u32]) -> Res<Mem> {
    let mut total = Mem::default();
    for &p in pids {
        total.add(&mem(p)?);
    }
    Ok(total)
}

/// A field of /proc/<pid>/status (e.g. `Threads`), first word.
fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct ProcInfo {
    pid: u32,
    ppid: u32,
    state: char,
    start_time: u64,
    cmdline: String,
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
        cmdline,
    })
}

fn all_procs() -> Vec<ProcInfo> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(proc_info)
                .collect()
        })
        .unwrap_or_default()
}

fn children_of(procs: &[ProcInfo], parents: &HashSet<u32>) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| parents.contains(&p.ppid))
        .map(|p| p.pid)
        .collect()
}

/// The host's supervisor zygote: its child running `__supervise --zygote`.
fn zygote_of(procs: &[ProcInfo], host: u32) -> Option<u32> {
    procs
        .iter()
        .find(|p| p.ppid == host && p.state != 'Z' && p.cmdline.contains("--zygote"))
        .map(|p| p.pid)
}

/// The host's live task supervisors: its children (or its zygote's)
/// running `__supervise`, except the zygote and idle spares (those that no
/// `started.json` in the state dir names yet).
fn supervisors(procs: &[ProcInfo], host: u32, state_dir: &Path) -> Vec<u32> {
    let recorded: HashSet<u32> = std::fs::read_dir(state_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path().join("started.json")).ok())
                .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter_map(|v| v.get("supervisor_pid")?.as_u64())
                .filter_map(|p| u32::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default();
    let zygote = zygote_of(procs, host);
    procs
        .iter()
        .filter(|p| {
            (p.ppid == host || Some(p.ppid) == zygote)
                && p.state != 'Z'
                && p.cmdline.contains(SUPERVISE)
        })
        .filter(|p| {
            let spare_or_zygote = p.cmdline.contains("--pooled") || p.cmdline.contains("--zygote");
            !spare_or_zygote || recorded.contains(&p.pid)
        })
        .map(|p| p.pid)
        .collect()
}

/// Per-mapping private memory of one process from /proc/<pid>/smaps,
/// grouped by (permissions, file), largest first.
fn mapping_breakdown(pid: u32) -> Res<Vec<(String, u64, u64, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let f: Vec<&str> = line.split_whitespace().collect();
            let perms = f.get(1).copied().unwrap_or("");
            let name = f.get(5).map_or("[anon]".to_string(), |n| {
                Path::new(n)
                    .file_name()
                    .map_or(n.to_string(), |b| b.to_string_lossy().into_owned())
            });
            current = format!("{perms} {name}");
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = val.parse::<u64>() else { continue };
        let e = groups.entry(current.clone()).or_default();
        match key {
            "Private_Dirty:" => e.0 += v,
            "Private_Clean:" => e.1 += v,
            "Anonymous:" => e.2 += v,
            _ => {}
        }
    }
    let mut v: Vec<_> = groups
        .into_iter()
        .filter(|(_, (d, c, _))| d + c > 0)
        .map(|(k, (d, c, a))| (k, d, c, a))
        .collect();
    v.sort_by_key(|(_, d, c, _)| std::cmp::Reverse(d + c));
    Ok(v)
}

// ---------------------------------------------------------------- processes

fn plugin_command(exe: &Path, args: &[&str], tmp: &Path, stderr: Stdio) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(COOKIE_KEY, COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "2")
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    cmd
}

/// A running plugin: the child, its handshake line and its stdout (kept
/// open so a late write cannot fail).
struct Plugin {
    child: Child,
    line: String,
    _stdout: BufReader<ChildStdout>,
}

impl Plugin {
    fn launch(mut cmd: Command) -> Res<Plugin> {
        let mut child = cmd.spawn()?;
        let Some(stdout) = child.stdout.take() else {
            stop(&mut child);
            return Err("no stdout pipe".into());
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let n = stdout.read_line(&mut line);
        if n.is_err() || line.is_empty() {
            stop(&mut child);
            return Err(format!(
                "{:?} printed no handshake line (exit: {:?})",
                cmd.get_program(),
                child.try_wait()
            )
            .into());
        }
        Ok(Plugin {
            child,
            line,
            _stdout: stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn socket(&self, who: &str) -> Res<PathBuf> {
        let fields: Vec<&str> = self.line.trim_end().split('|').collect();
        match fields.as_slice() {
            ["1", "2", "unix", socket, "grpc", ..] => Ok(PathBuf::from(socket)),
            _ => Err(format!(
                "{who} printed an unexpected handshake line: {:?}",
                self.line
            )
            .into()),
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, then SIGKILL after 5 s; always reaps.
fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

struct Host {
    plugin: Plugin,
    state_dir: PathBuf,
    _state: tempfile::TempDir,
    _tmp: tempfile::TempDir,
}

impl Drop for Host {
    /// Supervisors outlive their host by design; a run that fails midway
    /// must not leave its 600 s tasks behind, so anything still recorded
    /// in this host's state dir is killed (checked by start time, as pids
    /// are reused).
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.state_dir) else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            let Ok(text) = std::fs::read_to_string(entry.path().join("started.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            for (pid, start) in [
                (field("pid"), field("start_time")),
                (field("supervisor_pid"), field("supervisor_start_time")),
            ] {
                let alive = u32::try_from(pid)
                    .ok()
                    .and_then(proc_info)
                    .is_some_and(|p| p.start_time == start);
                if alive && pid > 1 {
                    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }
}

fn launch_host(p: &Paths, cache: &Path) -> Res<(Host, &'static str)> {
    let tmp = tempfile::tempdir()?;
    let (state, fs) = state_base()?;
    let state_dir = state.path().join("state");
    let log = std::fs::File::create(tmp.path().join("host.log"))?;
    let guest = p.guest.to_string_lossy().into_owned();
    let cache = cache.to_string_lossy().into_owned();
    let state_s = state_dir.to_string_lossy().into_owned();
    let args = [
        "--guest",
        &guest,
        "--allow-exec",
        SHELL,
        "--state-dir",
        &state_s,
        "--cache-dir",
        &cache,
    ];
    let plugin = Plugin::launch(plugin_command(&p.host, &args, tmp.path(), Stdio::from(log)))?;
    plugin.socket("the host")?;
    Ok((
        Host {
            plugin,
            state_dir,
            _state: state,
            _tmp: tmp,
        },
        fs,
    ))
}

// ---------------------------------------------------------------- gRPC

async fn connect(socket: PathBuf) -> Res<DriverClient<Channel>> {
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixStream;
    use tonic::transport::{Endpoint, Uri};

    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    BasePluginClient::new(channel.clone())
        .set_config(SetConfigRequest {
            msgpack_config: vec![0x80],
            nomad_config: None,
            plugin_api_version: "v0.1.0".into(),
        })
        .await?;
    Ok(DriverClient::new(channel))
}

/// cty-msgpack of {exit_code = null, greeting = "hi", sleep = <sleep>}: a
/// fixmap of three entries, keys sorted as cty writes them.
fn hello_task_config(sleep: u16) -> Vec<u8> {
    fn fixstr(out: &mut Vec<u8>, text: &str) {
        out.push(0xa0 | text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    let mut b = vec![0x83];
    fixstr(&mut b, "exit_code");
    b.push(0xc0); // nil
    fixstr(&mut b, "greeting");
    fixstr(&mut b, "hi");
    fixstr(&mut b, "sleep");
    b.push(0xcd); // uint16
    b.extend_from_slice(&sleep.to_be_bytes());
    b
}

#[derive(Clone, Copy)]
enum Op {
    Start,
    Stop,
    Destroy,
}

async fn one_op(client: &mut DriverClient<Channel>, op: Op, id: &str, config: &[u8]) -> Res<()> {
    match op {
        Op::Start => {
            let task = TaskConfig {
                id: id.to_owned(),
                name: "task".into(),
                msgpack_driver_config: config.to_vec(),
                alloc_id: "bench".into(),
                ..Default::default()
            };
            let resp = client
                .start_task(StartTaskRequest { task: Some(task) })
                .await?
                .into_inner();
            if resp.result != start_task_response::Result::Success as i32 {
                return Err(format!("StartTask {id}: {}", resp.driver_error_msg).into());
            }
        }
        Op::Stop => {
            client
                .stop_task(StopTaskRequest {
                    task_id: id.to_owned(),
                    timeout: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                    signal: "SIGTERM".into(),
                })
                .await?;
        }
        Op::Destroy => {
            client
                .destroy_task(DestroyTaskRequest {
                    task_id: id.to_owned(),
                    force: false,
                })
                .await?;
        }
    }
    Ok(())
}

/// Runs `op` on every id with `concurrency` RPCs in flight over one
/// channel; returns the wall time, each call's latency and the failures.
async fn for_all(
    client: &DriverClient<Channel>,
    op: Op,
    ids: &Arc<Vec<String>>,
    config: &Arc<Vec<u8>>,
    concurrency: usize,
) -> (Duration, Vec<Duration>, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (mut client, ids, config, next) =
            (client.clone(), ids.clone(), config.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errs = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let t = Instant::now();
                let r = one_op(&mut client, op, id, &config).await;
                lat.push(t.elapsed());
                if let Err(e) = r {
                    errs.push(format!("{id}: {e}"));
                }
            }
            (lat, errs)
        }));
    }
    let mut lat = Vec::new();
    let mut errs = Vec::new();
    for w in workers {
        match w.await {
            Ok((l, e)) => {
                lat.extend(l);
                errs.extend(e);
            }
            Err(e) => errs.push(format!("worker: {e}")),
        }
    }
    (start.elapsed(), lat, errs)
}

fn pct(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[(((s.len() - 1) as f64) * p).round() as usize]
}

fn fmt_d(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else {
        format!("{ms:.1} ms")
    }
}

fn lat_summary(s: &[Duration]) -> String {
    format!(
        "p50 {} p90 {} p99 {} max {}",
        fmt_d(pct(s, 0.5)),
        fmt_d(pct(s, 0.9)),
        fmt_d(pct(s, 0.99)),
        fmt_d(pct(s, 1.0))
    )
}

fn mb(kb: f64) -> String {
    format!("{:.3} MB", kb / 1024.0)
}

fn ids(prefix: &str, n: usize) -> Arc<Vec<String>> {
    Arc::new((0..n).map(|i| format!("{prefix}/{i}")).collect())
}

/// Every (pid, start time) of a task process (bash, and its children)
/// recorded in the host's state dir or running under a supervisor.
fn task_processes(procs: &[ProcInfo], sups: &[u32]) -> Vec<(u32, u64)> {
    let sup_set: HashSet<u32> = sups.iter().copied().collect();
    let tasks: HashSet<u32> = children_of(procs, &sup_set).into_iter().collect();
    let grand: HashSet<u32> = children_of(procs, &tasks).into_iter().collect();
    procs
        .iter()
        .filter(|p| sup_set.contains(&p.pid) || tasks.contains(&p.pid) || grand.contains(&p.pid))
        .map(|p| (p.pid, p.start_time))
        .collect()
}

/// Which of `recorded` still exist (same pid and start time).
fn survivors(recorded: &[(u32, u64)]) -> Vec<u32> {
    recorded
        .iter()
        .filter(|(pid, st)| proc_info(*pid).is_some_and(|p| p.start_time == *st))
        .map(|(pid, _)| *pid)
        .collect()
}

fn record_dirs(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- bar 1

/// Memory growth from `a` to `b`, in kB: see [`MemResult::host_growth`].
fn growth(a: &Mem, b: &Mem) -> f64 {
    let private = b.private() as f64 - a.private() as f64;
    let anon = b.anonymous as f64 - a.anonymous as f64;
    private.max(anon).max(0.0)
}

struct MemResult {
    n: usize,
    host_p0: Mem,
    host_p1: Mem,
    host_p2: Mem,
    host_p3: Mem,
    sups: Mem,
    sup_count: usize,
    /// The zygote that forks supervisors: one per host, charged to the
    /// tasks (the forked supervisors share its pages).
    zygote: Mem,
    task_procs: Mem,
    task_proc_count: usize,
    breakdown: Vec<(String, u64, u64, u64)>,
    start_wall: Duration,
    clean: Vec<String>,
}

impl MemResult {
    /// Host growth with the tasks running, over the steady-state baseline
    /// (after a warm-up round of starts and destroys).
    ///
    /// The host's own private total can *fall* as tasks start: its clean
    /// pages of the binary turn Shared_Clean once supervisors map them too.
    /// That is not memory freed, so growth is the larger of the private and
    /// the anonymous growth, never below zero.
    fn host_growth(&self) -> f64 {
        growth(&self.host_p1, &self.host_p2)
    }

    fn per_task(&self) -> f64 {
        (self.host_growth() + self.sups.private() as f64 + self.zygote.private() as f64)
            / self.n as f64
    }

    /// The same, charging the warm-up's one-time growth to the tasks too.
    fn per_task_from_cold(&self) -> f64 {
        (growth(&self.host_p0, &self.host_p2)
            + self.sups.private() as f64
            + self.zygote.private() as f64)
            / self.n as f64
    }
}

async fn bench_memory(p: &Paths, cache: &Path, n: usize, concurrency: usize) -> Res<MemResult> {
    let (host, _) = launch_host(p, cache)?;
    let hpid = host.plugin.pid();
    let client = connect(host.plugin.socket("the host")?).await?;
    let config = Arc::new(hello_task_config(600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let host_p0 = mem(hpid)?;

    // Warm-up: one round of concurrent starts and destroys, so one-time
    // growth (blocking-pool threads, malloc arenas, the first instances) is
    // not charged to the measured tasks.
    let warm = ids("warmup/task", concurrency.max(1));
    let (_, _, e1) = for_all(&client, Op::Start, &warm, &config, concurrency).await;
    let (_, _, e2) = for_all(&client, Op::Stop, &warm, &config, concurrency).await;
    let (_, _, e3) = for_all(&client, Op::Destroy, &warm, &config, concurrency).await;
    if let Some(e) = e1.iter().chain(&e2).chain(&e3).next() {
        return Err(format!("warm-up failed: {e}").into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let host_p1 = mem(hpid)?;

    let task_ids = ids("bench/task", n);
    let (start_wall, _, errs) = for_all(&client, Op::Start, &task_ids, &config, concurrency).await;
    if let Some(e) = errs.first() {
        return Err(format!("{} of {n} StartTask calls failed; first: {e}", errs.len()).into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let host_p2 = mem(hpid)?;
    let procs = all_procs();
    let sup_pids = supervisors(&procs, hpid, &host.state_dir);
    let sups = sum_mem(&sup_pids)?;
    let zygote = match zygote_of(&procs, hpid) {
        Some(z) => sum_mem(&[z])?,
        None => Mem::default(),
    };
    let sup_set: HashSet<u32> = sup_pids.iter().copied().collect();
    let bash: HashSet<u32> = children_of(&procs, &sup_set).into_iter().collect();
    let mut tp = children_of(&procs, &bash);
    tp.extend(bash.iter().copied());
    let task_procs = sum_mem(&tp)?;
    let breakdown = match sup_pids.first() {
        Some(&pid) => mapping_breakdown(pid)?,
        None => Vec::new(),
    };
    let recorded = task_processes(&procs, &sup_pids);

    let (_, _, e1) = for_all(&client, Op::Stop, &task_ids, &config, concurrency).await;
    let (_, _, e2) = for_all(&client, Op::Destroy, &task_ids, &config, concurrency).await;
    let mut clean: Vec<String> = e1.into_iter().chain(e2).collect();
    let left = survivors(&recorded);
    if !left.is_empty() {
        clean.push(format!(
            "{} task or supervisor processes survived: {:?}",
            left.len(),
            &left[..left.len().min(10)]
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let host_p3 = mem(hpid)?;
    drop(client);
    drop(host);
    Ok(MemResult {
        n,
        host_p0,
        host_p1,
        host_p2,
        host_p3,
        sup_count: sup_pids.len(),
        sups,
        zygote,
        task_proc_count: tp.len(),
        task_procs,
        breakdown,
        start_wall,
        clean,
    })
}

/// `count` copies of a command, each measured once all run.
struct Fleet {
    label: String,
    n: usize,
    total: Mem,
}

impl Fleet {
    fn mean(&self, f: impl Fn(&Mem) -> u64) -> f64 {
        f(&self.total) as f64 / self.n.max(1) as f64
    }
}

fn anchor_fleet(p: &Paths, n: usize) -> Res<Fleet> {
    let tmp = tempfile::tempdir()?;
    let mut plugins = Vec::with_capacity(n);
    for _ in 0..n {
        let plugin = Plugin::launch(plugin_command(&p.anchor, &[], tmp.path(), Stdio::null()))?;
        plugin.socket("the Go anchor")?;
        plugins.push(plugin);
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids: Vec<u32> = plugins.iter().map(Plugin::pid).collect();
    let total = sum_mem(&pids)?;
    drop(plugins);
    Ok(Fleet {
        label: "Go go-plugin anchor".into(),
        n,
        total,
    })
}

fn spawnwait_fleet(bin: &Path, n: usize) -> Res<Fleet> {
    use std::os::unix::process::CommandExt;
    let mut children = Vec::with_capacity(n);
    let result = (|| -> Res<Mem> {
        for _ in 0..n {
            let child = Command::new(bin)
                .args(["/bin/sleep", "600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?;
            children.push(child);
        }
        // Each has spawned its child once /proc shows it.
        let parents: HashSet<u32> = children.iter().map(Child::id).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children_of(&all_procs(), &parents).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        sum_mem(&children.iter().map(Child::id).collect::<Vec<_>>())
    })();
    for c in &mut children {
        let _ = nix::sys::signal::killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.wait();
    }
    Ok(Fleet {
        label: "Rust spawn-and-wait (std, rustc -O)".into(),
        n,
        total: result?,
    })
}

// ---------------------------------------------------------------- bar 2

struct ScaleResult {
    n: usize,
    concurrency: usize,
    start_wall: Duration,
    start_lat: Vec<Duration>,
    stop_wall: Duration,
    stop_lat: Vec<Duration>,
    destroy_wall: Duration,
    destroy_lat: Vec<Duration>,
    host_before: Mem,
    host_running: Mem,
    host_after: Mem,
    host_threads: String,
    host_fds: usize,
    sup_count: usize,
    sups: Mem,
    task_proc_count: usize,
    problems: Vec<String>,
}

async fn bench_scale(p: &Paths, cache: &Path, n: usize, concurrency: usize) -> Res<ScaleResult> {
    let (host, _) = launch_host(p, cache)?;
    let hpid = host.plugin.pid();
    let client = connect(host.plugin.socket("the host")?).await?;
    let config = Arc::new(hello_task_config(600));
    let host_before = mem(hpid)?;
    let task_ids = ids("scale/task", n);
    let mut problems = Vec::new();

    let (start_wall, start_lat, errs) =
        for_all(&client, Op::Start, &task_ids, &config, concurrency).await;
    if !errs.is_empty() {
        problems.push(format!(
            "{} StartTask calls failed; first: {}",
            errs.len(),
            errs[0]
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let host_running = mem(hpid)?;
    let host_threads = status_field(hpid, "Threads");
    let host_fds = open_fds(hpid);
    let procs = all_procs();
    let sup_pids = supervisors(&procs, hpid, &host.state_dir);
    if sup_pids.len() != n {
        problems.push(format!(
            "{} supervisors running, expected {n}",
            sup_pids.len()
        ));
    }
    let sups = sum_mem(&sup_pids)?;
    let recorded = task_processes(&procs, &sup_pids);
    let task_proc_count = recorded.len() - sup_pids.len();
    if record_dirs(&host.state_dir) != n {
        problems.push(format!(
            "{} process records in the state dir, expected {n}",
            record_dirs(&host.state_dir)
        ));
    }

    let (stop_wall, stop_lat, errs) =
        for_all(&client, Op::Stop, &task_ids, &config, concurrency).await;
    if !errs.is_empty() {
        problems.push(format!(
            "{} StopTask calls failed; first: {}",
            errs.len(),
            errs[0]
        ));
    }
    let (destroy_wall, destroy_lat, errs) =
        for_all(&client, Op::Destroy, &task_ids, &config, concurrency).await;
    if !errs.is_empty() {
        problems.push(format!(
            "{} DestroyTask calls failed; first: {}",
            errs.len(),
            errs[0]
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Clean: nothing recorded survives, no supervisor of this state dir
    // anywhere, no zombie children, no records left.
    let left = survivors(&recorded);
    if !left.is_empty() {
        problems.push(format!(
            "{} task/supervisor processes survived, e.g. {:?}",
            left.len(),
            &left[..left.len().min(10)]
        ));
    }
    let state = host.state_dir.to_string_lossy().into_owned();
    let procs = all_procs();
    let stray = procs
        .iter()
        .filter(|p| p.cmdline.contains(SUPERVISE) && p.cmdline.contains(&state))
        .count();
    if stray > 0 {
        problems.push(format!("{stray} `{SUPERVISE}` processes of {state} remain"));
    }
    let zombies = procs
        .iter()
        .filter(|p| p.ppid == hpid && p.state == 'Z')
        .count();
    if zombies > 0 {
        problems.push(format!("{zombies} unreaped children of the host"));
    }
    if record_dirs(&host.state_dir) != 0 {
        problems.push(format!(
            "{} process records left in {state}",
            record_dirs(&host.state_dir)
        ));
    }
    let host_after = mem(hpid)?;
    drop(client);
    drop(host);
    Ok(ScaleResult {
        n,
        concurrency,
        start_wall,
        start_lat,
        stop_wall,
        stop_lat,
        destroy_wall,
        destroy_lat,
        host_before,
        host_running,
        host_after,
        host_threads,
        host_fds,
        sup_count: sup_pids.len(),
        sups,
        task_proc_count,
        problems,
    })
}

// ---------------------------------------------------------------- main

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn run() -> Res<bool> {
    let limits = raise_limits();
    let p = paths()?;
    let mem_n = knob("TASKS_MEM_N", 100).max(1);
    let anchor_n = knob("TASKS_ANCHOR_N", 100).max(1);
    let scale_n = knob("TASKS_SCALE_N", 1000);
    let concurrency = knob("TASKS_CONCURRENCY", 16).max(1);
    for b in [Some(&p.host), Some(&p.anchor), p.spawnwait.as_ref()]
        .into_iter()
        .flatten()
    {
        settle(b);
    }
    eprintln!("tasks: host   {}", p.host.display());
    eprintln!("tasks: guest  {}", p.guest.display());
    eprintln!("tasks: limits {limits}");
    let cache = tempfile::tempdir()?;
    let load_start = loadavg();

    let state_fs;
    // Warm the precompile cache: the measured hosts load the guest from it,
    // as a host does after its first launch on a node.
    {
        let (_h, fs) = launch_host(&p, cache.path())?;
        state_fs = fs;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    eprintln!("tasks: [1/4] {mem_n} running tasks: host growth + supervisors' private memory");
    let m = rt.block_on(bench_memory(&p, cache.path(), mem_n, concurrency))?;
    eprintln!("tasks: [2/4] {anchor_n} Go go-plugin anchors");
    let anchor = anchor_fleet(&p, anchor_n)?;
    eprintln!("tasks: [3/4] {anchor_n} Rust spawn-and-wait processes");
    let small = match &p.spawnwait {
        Some(b) => Some(spawnwait_fleet(b, anchor_n)?),
        None => None,
    };
    let scale = if scale_n > 0 {
        eprintln!("tasks: [4/4] {scale_n} concurrent tasks, {concurrency} RPCs in flight");
        Some(rt.block_on(bench_scale(&p, cache.path(), scale_n, concurrency))?)
    } else {
        None
    };
    drop(rt);

    println!();
    println!(
        "cpus: {}   loadavg at start: {load_start}   at end: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        loadavg()
    );
    println!("host binary: {}", p.host.display());
    println!("limits: {limits}");
    println!(
        "supervisor records on {state_fs}; memory in kB (KiB) from /proc/<pid>/smaps_rollup; private = Private_Clean + Private_Dirty"
    );
    println!();
    println!(
        "== bar 1: private memory per running task ({} tasks, started in {} with {concurrency} RPCs in flight)",
        m.n,
        fmt_d(m.start_wall)
    );
    let row = |label: &str, x: &Mem, n: usize| {
        let n = n.max(1) as f64;
        println!(
            "{label:<46} n={:<5} private {:>9.1}  (clean {:>7.1} dirty {:>8.1} anon {:>8.1})  rss {:>8.1}  pss {:>8.1}  per process",
            n as usize,
            x.private() as f64 / n,
            x.private_clean as f64 / n,
            x.private_dirty as f64 / n,
            x.anonymous as f64 / n,
            x.rss as f64 / n,
            x.pss as f64 / n,
        );
    };
    row("supervisors (bar)", &m.sups, m.sup_count);
    row("(charged once) the supervisor zygote", &m.zygote, 1);
    row(
        "(info) task processes (bash -c, exec's sleep)",
        &m.task_procs,
        m.task_proc_count,
    );
    row(&anchor.label, &anchor.total, anchor.n);
    if let Some(s) = &small {
        row(&s.label, &s.total, s.n);
    }
    for (label, x) in [
        ("after SetConfig", &m.host_p0),
        ("after warm-up", &m.host_p1),
        ("tasks running", &m.host_p2),
        ("after destroy", &m.host_p3),
    ] {
        println!(
            "host {label:<16} private {:>7} (clean {:>6} dirty {:>6})  anon {:>7}  rss {:>7}",
            x.private(),
            x.private_clean,
            x.private_dirty,
            x.anonymous,
            x.rss
        );
    }
    println!(
        "host growth per task: {:.1} kB over the warm baseline (private {:+.1}, anon {:+.1}); {:.1} kB counting the warm-up too",
        m.host_growth() / m.n as f64,
        (m.host_p2.private() as f64 - m.host_p1.private() as f64) / m.n as f64,
        (m.host_p2.anonymous as f64 - m.host_p1.anonymous as f64) / m.n as f64,
        growth(&m.host_p0, &m.host_p2) / m.n as f64
    );
    if m.sup_count != m.n {
        println!(
            "WARNING: found {} supervisors for {} tasks",
            m.sup_count, m.n
        );
    }
    println!(
        "one supervisor's private memory by mapping (kB: private dirty / private clean / anonymous):"
    );
    for (name, d, c, a) in m.breakdown.iter().take(12) {
        println!("    {name:<40} {d:>7} {c:>7} {a:>7}");
    }
    if !m.clean.is_empty() {
        println!("stop/destroy problems: {:?}", m.clean);
    }
    let per_task = m.per_task();
    let anchor_private = anchor.mean(Mem::private);
    let pass1 = per_task <= BAR_PER_TASK_KB && m.clean.is_empty() && m.sup_count == m.n;
    println!();
    println!(
        "per-task cost (host growth + supervisor) {:.1} kB = {}   [{:.1} kB counting warm-up]",
        per_task,
        mb(per_task),
        m.per_task_from_cold()
    );
    println!(
        "anchor (Go go-plugin) per process: private {:.1} kB = {}, rss {:.1} kB = {}",
        anchor_private,
        mb(anchor_private),
        anchor.mean(|x| x.rss),
        mb(anchor.mean(|x| x.rss))
    );
    if let Some(s) = &small {
        println!(
            "Rust spawn-and-wait per process: private {:.1} kB, rss {:.1} kB",
            s.mean(Mem::private),
            s.mean(|x| x.rss)
        );
    }
    println!(
        "ratio per-task / anchor: {:.2}x   target <= {} per task: {}",
        per_task / anchor_private.max(1e-9),
        mb(BAR_PER_TASK_KB),
        if pass1 { "PASS" } else { "FAIL" }
    );

    let mut pass2 = true;
    if let Some(s) = &scale {
        println!();
        println!(
            "== bar 2: {} concurrent running tasks ({} RPCs in flight)",
            s.n, s.concurrency
        );
        println!(
            "StartTask   total {:>9}  ({})",
            fmt_d(s.start_wall),
            lat_summary(&s.start_lat)
        );
        println!(
            "StopTask    total {:>9}  ({})",
            fmt_d(s.stop_wall),
            lat_summary(&s.stop_lat)
        );
        println!(
            "DestroyTask total {:>9}  ({})",
            fmt_d(s.destroy_wall),
            lat_summary(&s.destroy_lat)
        );
        println!(
            "host: rss {} kB before, {} kB = {} with {} running, {} kB after destroy; private {} -> {} kB; {} threads, {} fds while running",
            s.host_before.rss,
            s.host_running.rss,
            mb(s.host_running.rss as f64),
            s.n,
            s.host_after.rss,
            s.host_before.private(),
            s.host_running.private(),
            s.host_threads,
            s.host_fds
        );
        println!(
            "supervisors: {} running, private {:.1} kB each (total {}); task processes: {}",
            s.sup_count,
            s.sups.private() as f64 / s.sup_count.max(1) as f64,
            mb(s.sups.private() as f64),
            s.task_proc_count
        );
        pass2 = s.problems.is_empty();
        for prob in &s.problems {
            println!("PROBLEM: {prob}");
        }
        println!(
            "all {} started, stopped and destroyed cleanly: {}",
            s.n,
            if pass2 { "PASS" } else { "FAIL" }
        );
    }
    Ok(pass1 && pass2)
}
