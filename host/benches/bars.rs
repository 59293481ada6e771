//! The host's performance bars, each measured against a baseline taken in
//! the same run (interleaved with it, so machine noise hits both alike).
//!
//! Run with `cargo bench -p nomad-wasm-host --bench bars` (see BENCHMARKS.md).
//! Needs the hello guest (`cargo build -p hello-guest --target wasm32-wasip2
//! --profile guest`) and Go with Debian's go-plugin packages for the launch
//! anchor; the host binary itself is built by `cargo bench` (it is this
//! package's binary target, passed in as `CARGO_BIN_EXE_nomad-driver-wasm`).
//!
//! Bars (all on medians):
//! 1. plugin launch to handshake line, warm precompile cache: <= 10 ms
//!    (anchor: a minimal Go go-plugin server with Nomad's handshake)
//! 2. StartTask RPC to process running, minus a bare spawn of the same
//!    argv: <= 1 ms
//! 3. one guest call (fresh instance from the InstancePre + `info`):
//!    <= 50 us (baseline: the same instantiate + call with a minimal store)
//! 4. loading a precompiled guest from a warm cache: <= 1 ms
//!    (baseline: wasmtime's own read + deserialize of the cached artifact)
//! 5. a guest call that loops forever is cut off within 2x its deadline
//!    (baseline: the deadline; `guests/misbehave`, mode `loop`)
//!
//! Outside `cargo bench` (e.g. `cargo test --all-targets`, which runs bench
//! targets without `--bench`) nothing is timed and the binary exits at once.
//!
//! Environment knobs: `BARS_LAUNCH_RUNS` (50), `BARS_START_RUNS` (200),
//! `BARS_CALL_RUNS` (10000), `BARS_LOAD_RUNS` (200), `BARS_LOOP_RUNS` (20),
//! `HELLO_WASM` (guest path), `MISBEHAVE_WASM`, `GO` (the go binary).
#![allow(unsafe_code)] // one Component::deserialize for the load baseline; see SAFETY there

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nomad_plugin_proto::base::{SetConfigRequest, base_plugin_client::BasePluginClient};
use nomad_plugin_proto::drivers::{
    DestroyTaskRequest, StartTaskRequest, TaskConfig, WaitTaskRequest, driver_client::DriverClient,
    start_task_response,
};
use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::bindings::DriverGuestPre;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
const COOKIE_VALUE: &str = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
const SHELL: &str = "/usr/bin/bash";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "bars: timing runs only under `cargo bench -p nomad-wasm-host --bench bars`; skipping"
        );
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bars: at least one bar FAILED");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bars: error: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------- setup

struct Paths {
    host: PathBuf,
    guest: PathBuf,
    misbehave: PathBuf,
    anchor: PathBuf,
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
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

fn paths() -> Res<Paths> {
    let root = repo_root();
    let target = target_dir(&root);
    let host = PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm"));
    if !host.is_file() {
        return Err(format!(
            "host binary {} is missing; `cargo bench -p nomad-wasm-host --bench bars` builds it \
             (or: cargo build --release -p nomad-wasm-host)",
            host.display()
        )
        .into());
    }
    let guest = std::env::var_os("HELLO_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("wasm32-wasip2/guest/hello.wasm"));
    if !guest.is_file() {
        return Err(format!(
            "hello guest {} is missing; build it with:\n  rustup target add wasm32-wasip2\n  \
             cargo build -p hello-guest --target wasm32-wasip2 --profile guest\n\
             (or point HELLO_WASM at a built hello.wasm)",
            guest.display()
        )
        .into());
    }
    let misbehave = std::env::var_os("MISBEHAVE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("wasm32-wasip2/guest/misbehave.wasm"));
    if !misbehave.is_file() {
        return Err(format!(
            "misbehave guest {} is missing; build it with:\n  \
             cargo build -p misbehave-guest --target wasm32-wasip2 --profile guest",
            misbehave.display()
        )
        .into());
    }
    if !Path::new(SHELL).is_file() {
        return Err(format!("{SHELL} is missing; the hello driver runs tasks with bash").into());
    }
    let anchor = build_go_anchor(&root, &target)?;
    Ok(Paths {
        host,
        guest,
        misbehave,
        anchor,
    })
}

/// Builds tests/bench/goplugin-anchor offline in GOPATH mode against
/// Debian's packaged go-plugin and grpc-go.
fn build_go_anchor(root: &Path, target: &Path) -> Res<PathBuf> {
    let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
    let src = root.join("tests/bench/goplugin-anchor");
    let out_dir = target.join("bench-anchor");
    let out = out_dir.join("goplugin-anchor");
    let missing_go = |e: &dyn std::fmt::Display| -> BoxError {
        format!(
            "cannot run `{go}` ({e}); the launch bar needs Go and Debian's go-plugin packages:\n  \
             apt-get install -y --no-install-recommends golang-go golang-github-hashicorp-go-plugin-dev \
             golang-google-grpc-dev golang-github-hashicorp-go-hclog-dev"
        )
        .into()
    };
    let version = Command::new(&go)
        .arg("version")
        .output()
        .map_err(|e| missing_go(&e))?;
    if !version.status.success() {
        return Err(missing_go(&"`go version` failed"));
    }
    std::fs::create_dir_all(out_dir.join("gopath"))?;
    eprintln!(
        "bars: building the Go anchor with {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let gopath = format!("{}:/usr/share/gocode", out_dir.join("gopath").display());
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out_dir.join("gocache"))
        .output()
        .map_err(|e| missing_go(&e))?;
    if !built.status.success() {
        return Err(format!(
            "building the Go anchor in {} failed (are golang-github-hashicorp-go-plugin-dev and \
             golang-google-grpc-dev installed?):\n{}",
            src.display(),
            String::from_utf8_lossy(&built.stderr)
        )
        .into());
    }
    Ok(out)
}

// ---------------------------------------------------------------- stats

struct Series {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Series {
    fn new(name: &'static str, capacity: usize) -> Self {
        Series {
            name,
            samples: Vec::with_capacity(capacity),
        }
    }

    fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort_unstable();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let i = ((s.len() - 1) as f64 * p).round() as usize;
        s[i.min(s.len() - 1)]
    }

    fn median(&self) -> Duration {
        self.pct(0.5)
    }

    fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "{:<46} n={:<6} p10 {:>10}  median {:>10}  p90 {:>10}  p99 {:>10}",
            self.name,
            self.samples.len(),
            fmt(self.pct(0.10)),
            fmt(self.median()),
            fmt(self.pct(0.90)),
            fmt(self.pct(0.99)),
        )
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} us")
    }
}

fn fmt_signed(us: f64) -> String {
    if us.abs() >= 1000.0 {
        format!("{:+.2} ms", us / 1000.0)
    } else {
        format!("{us:+.1} us")
    }
}

struct Bar {
    name: &'static str,
    measured: Duration,
    baseline: Duration,
    /// The value compared with the target, in microseconds.
    checked_us: f64,
    checked_label: &'static str,
    target_us: f64,
}

impl Bar {
    fn pass(&self) -> bool {
        self.checked_us <= self.target_us
    }
}

fn print_table(bars: &[Bar]) {
    println!();
    println!(
        "{:<38} {:>10} {:>10} {:>7}  {:<20} {:>12}  result",
        "bar", "measured", "baseline", "ratio", "checked", "target"
    );
    println!("{}", "-".repeat(112));
    for b in bars {
        let ratio = b.measured.as_secs_f64() / b.baseline.as_secs_f64().max(1e-12);
        println!(
            "{:<38} {:>10} {:>10} {:>6.2}x  {:<20} {:>12}  {}",
            b.name,
            fmt(b.measured),
            fmt(b.baseline),
            ratio,
            format!(
                "{} {}",
                b.checked_label,
                fmt_signed(b.checked_us).trim_start_matches('+')
            ),
            format!("<= {}", fmt(Duration::from_secs_f64(b.target_us / 1e6))),
            if b.pass() { "PASS" } else { "FAIL" }
        );
    }
    println!();
}

// ---------------------------------------------------------------- processes

fn plugin_command(exe: &Path, args: &[&str], tmp: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(COOKIE_KEY, COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "2")
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        // Both plugins put their socket under TMPDIR; the Go one leaves it
        // behind when killed, so give them a directory this run removes.
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Spawns, reads the first stdout line; returns the time from just before
/// spawn to the line, the line and the still-running child.
fn launch(mut cmd: Command) -> Res<(Duration, String, Child)> {
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    let n = BufReader::new(stdout).read_line(&mut line);
    let elapsed = start.elapsed();
    if n.is_err() || line.is_empty() {
        stop(&mut child);
        return Err(format!(
            "{:?} printed no first line (exited: {:?})",
            cmd.get_program(),
            child.try_wait()
        )
        .into());
    }
    Ok((elapsed, line, child))
}

/// SIGTERM, then SIGKILL after 3 s; always reaps.
fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn expect_handshake(line: &str, who: &str) -> Res<PathBuf> {
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    match fields.as_slice() {
        ["1", "2", "unix", socket, "grpc", ..] => Ok(PathBuf::from(socket)),
        _ => Err(format!("{who} printed an unexpected handshake line: {line:?}").into()),
    }
}

// ---------------------------------------------------------------- bar 1

struct LaunchResult {
    host: Series,
    anchor: Series,
    host_version: Series,
}

fn bench_launch(p: &Paths, cache: &Path, runs: usize) -> Res<LaunchResult> {
    let tmp = tempfile::tempdir()?;
    let cache_s = cache.to_string_lossy().into_owned();
    let guest_s = p.guest.to_string_lossy().into_owned();
    let state_s = tmp.path().join("state").to_string_lossy().into_owned();
    let host_args = [
        "--guest",
        guest_s.as_str(),
        "--allow-exec",
        SHELL,
        "--cache-dir",
        cache_s.as_str(),
        "--state-dir",
        state_s.as_str(),
    ];

    // Warm the precompile cache (this first run compiles the guest).
    let (cold, line, mut child) = launch(plugin_command(&p.host, &host_args, tmp.path()))?;
    stop(&mut child);
    expect_handshake(&line, "the host")?;
    let cached = std::fs::read_dir(cache)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    if cached == 0 {
        return Err(format!(
            "the host wrote no .cwasm into --cache-dir {}",
            cache.display()
        )
        .into());
    }
    eprintln!(
        "bars: launch with a cold cache (compiles the guest): {}",
        fmt(cold)
    );

    let mut r = LaunchResult {
        host: Series::new("host: spawn -> handshake line (warm cache)", runs),
        anchor: Series::new("Go go-plugin anchor: spawn -> handshake line", runs),
        host_version: Series::new("(info) host --version: spawn -> first line", runs),
    };
    for i in 0..runs + 3 {
        let warm = i < 3;
        let (d, line, mut child) = launch(plugin_command(&p.host, &host_args, tmp.path()))?;
        stop(&mut child);
        expect_handshake(&line, "the host")?;
        if !warm {
            r.host.samples.push(d);
        }

        let (d, line, mut child) = launch(plugin_command(&p.anchor, &[], tmp.path()))?;
        stop(&mut child);
        expect_handshake(&line, "the Go anchor")?;
        if !warm {
            r.anchor.samples.push(d);
        }

        // Process floor of the host binary: exec, loader, std, arg parsing.
        let (d, _, mut child) = launch(plugin_command(&p.host, &["--version"], tmp.path()))?;
        let _ = child.wait();
        if !warm {
            r.host_version.samples.push(d);
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------- bar 2

/// cty-msgpack of {greeting = "hi", sleep = null, exit_code = null}: a
/// fixmap of three entries with fixstr keys (Nomad sends every declared
/// attribute, unset ones as nil).
fn hello_task_config() -> Vec<u8> {
    fn fixstr(out: &mut Vec<u8>, text: &str) {
        out.push(0xa0 | text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    const NIL: u8 = 0xc0;
    let mut b = vec![0x83];
    fixstr(&mut b, "greeting");
    fixstr(&mut b, "hi");
    fixstr(&mut b, "sleep");
    b.push(NIL);
    fixstr(&mut b, "exit_code");
    b.push(NIL);
    b
}

struct StartResult {
    host: Series,
    bare: Series,
    host_disk: Series,
    /// Where each host kept its supervisor records, and on what.
    state_dirs: String,
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Launches a host whose supervisor state lives under `state_dir`; returns
/// it and its socket.
fn start_host(p: &Paths, cache: &Path, tmp: &Path, state_dir: &Path) -> Res<(Child, PathBuf)> {
    let cache_s = cache.to_string_lossy().into_owned();
    let guest_s = p.guest.to_string_lossy().into_owned();
    let state_s = state_dir.to_string_lossy().into_owned();
    let args = [
        "--guest",
        guest_s.as_str(),
        "--allow-exec",
        SHELL,
        "--cache-dir",
        cache_s.as_str(),
        "--state-dir",
        state_s.as_str(),
    ];
    let (_, line, mut child) = launch(plugin_command(&p.host, &args, tmp))?;
    match expect_handshake(&line, "the host") {
        Ok(socket) => Ok((child, socket)),
        Err(e) => {
            stop(&mut child);
            Err(e)
        }
    }
}

/// The supervisor state dir for the bar: on tmpfs, as `/run` (the host's
/// default for root) is on a real node. /dev/shm if it is tmpfs, else a
/// temp dir (and the label says so).
fn tmpfs_base() -> Res<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if is_tmpfs(shm) {
        Ok(tempfile::Builder::new()
            .prefix("bars-state-")
            .tempdir_in(shm)?)
    } else {
        Ok(tempfile::tempdir()?)
    }
}

fn bench_start_task(p: &Paths, cache: &Path, runs: usize) -> Res<StartResult> {
    let tmp = tempfile::tempdir()?;
    let shm = tmpfs_base()?;
    let tmpfs_dir = shm.path().join("state");
    let disk_dir = tmp.path().join("state");
    let (mut fast, fast_socket) = start_host(p, cache, tmp.path(), &tmpfs_dir)?;
    let (mut disk, disk_socket) = match start_host(p, cache, tmp.path(), &disk_dir) {
        Ok(h) => h,
        Err(e) => {
            stop(&mut fast);
            return Err(e);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(start_task_loop(fast_socket, disk_socket, runs));
    drop(rt);
    stop(&mut fast);
    stop(&mut disk);
    let (host, bare, host_disk) = result?;
    let fs = |d: &Path| if is_tmpfs(d) { "tmpfs" } else { "not tmpfs" };
    let state_dirs = format!(
        "bar 2 {} ({}), info row {} ({})",
        tmpfs_dir.display(),
        fs(shm.path()),
        disk_dir.display(),
        fs(tmp.path())
    );
    Ok(StartResult {
        host,
        bare,
        host_disk,
        state_dirs,
    })
}

async fn connect(socket: PathBuf) -> Res<DriverClient<tonic::transport::Channel>> {
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

/// Times one StartTask; waits for the task and destroys it untimed.
async fn start_one(
    driver: &mut DriverClient<tonic::transport::Channel>,
    id: String,
    config: &[u8],
) -> Res<Duration> {
    let task = TaskConfig {
        id: id.clone(),
        name: "task".into(),
        msgpack_driver_config: config.to_vec(),
        alloc_id: "alloc".into(),
        ..Default::default()
    };
    let start = Instant::now();
    let resp = driver
        .start_task(StartTaskRequest { task: Some(task) })
        .await?
        .into_inner();
    let elapsed = start.elapsed();
    if resp.result != start_task_response::Result::Success as i32 {
        return Err(format!("StartTask {id} failed: {}", resp.driver_error_msg).into());
    }
    let waited = driver
        .wait_task(WaitTaskRequest {
            task_id: id.clone(),
        })
        .await?
        .into_inner();
    let code = waited.result.map(|r| r.exit_code).unwrap_or(-1);
    if code != 0 || !waited.err.is_empty() {
        return Err(format!("task {id} exited with {code} ({})", waited.err).into());
    }
    driver
        .destroy_task(DestroyTaskRequest {
            task_id: id,
            force: true,
        })
        .await?;
    Ok(elapsed)
}

async fn start_task_loop(
    fast: PathBuf,
    disk: PathBuf,
    runs: usize,
) -> Res<(Series, Series, Series)> {
    let mut fast = connect(fast).await?;
    let mut disk = connect(disk).await?;
    let config = hello_task_config();
    let argv = [
        SHELL,
        "-c",
        "printf '%s\\n' \"$1\"",
        "hello-world-example",
        "hi",
        "0",
        "0",
    ];
    let mut host = Series::new("host: StartTask RPC, state dir on tmpfs", runs);
    let mut bare = Series::new("bare std::process::Command::spawn (same argv)", runs);
    let mut host_disk = Series::new("(info) host: StartTask, state dir on disk", runs);
    let warmup = 10;
    for i in 0..runs + warmup {
        let d = start_one(&mut fast, format!("alloc/task/{i}"), &config).await?;
        if i >= warmup {
            host.samples.push(d);
        }

        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let d = start.elapsed();
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("bare bash exited with {status}").into());
        }
        if i >= warmup {
            bare.samples.push(d);
        }

        let d = start_one(&mut disk, format!("alloc/task/{i}"), &config).await?;
        if i >= warmup {
            host_disk.samples.push(d);
        }
    }
    Ok((host, bare, host_disk))
}

// ---------------------------------------------------------------- bars 3, 4

/// The baseline's store data: what WASI needs, nothing else.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct InProcessResult {
    call_host: Series,
    call_bare: Series,
    load_host: Series,
    load_bare: Series,
    load_hash: Series,
    engine_new: Duration,
}

fn bench_in_process(p: &Paths, cache: &Path, calls: usize, loads: usize) -> Res<InProcessResult> {
    let t = Instant::now();
    let engine = runtime::engine()?;
    let engine_new = t.elapsed();
    let state = tempfile::tempdir()?;
    let host_ctx = || {
        HostContext::new(
            "hello.wasm".into(),
            Grants::default(),
            state.path().to_path_buf(),
        )
    };
    let guest = Guest::load(
        &engine,
        &p.guest,
        Some(cache),
        host_ctx(),
        CallLimits::default(),
    )?;

    // Baseline: the same component, same engine (so the same compiled code
    // with epoch checks), linked with WASI only (the nomad imports trap if
    // called; `info` calls none), a plain Store, no limiter, no deadline
    // callback, no stderr pipe.
    let component = Component::from_file(&engine, &p.guest)?;
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.define_unknown_imports_as_traps(&component)?;
    let bare_pre = DriverGuestPre::new(linker.instantiate_pre(&component)?)?;
    let bare_call = || -> Res<String> {
        let mut store = Store::new(
            &engine,
            Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let g = bare_pre.instantiate(&mut store)?;
        Ok(g.nomad_driver_driver().call_info(&mut store)?.name)
    };
    let host_call = || -> Res<String> { Ok(guest.call("info", None, |g, s| g.call_info(s))?.name) };
    let (a, b) = (host_call()?, bare_call()?);
    if a != b || a.is_empty() {
        return Err(format!("info disagrees: host {a:?}, baseline {b:?}").into());
    }

    let mut call_host = Series::new("host: Guest::call(\"info\") (instantiate+call)", calls);
    let mut call_bare = Series::new("bare wasmtime: instantiate_pre + call_info", calls);
    for _ in 0..1000 {
        host_call()?;
        bare_call()?;
    }
    for _ in 0..calls {
        let t = Instant::now();
        let r = host_call();
        call_host.samples.push(t.elapsed());
        r?;
        let t = Instant::now();
        let r = bare_call();
        call_bare.samples.push(t.elapsed());
        r?;
    }

    // Bar 4: Guest::load from the warm cache vs wasmtime's floor for the
    // same artifact (read the .cwasm + deserialize).
    let artifact = std::fs::read_dir(cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .ok_or("no .cwasm in the cache dir")?;
    let mut load_host = Series::new("host: Guest::load (warm cache)", loads);
    let mut load_bare = Series::new("bare wasmtime: read .cwasm + deserialize", loads);
    let mut load_hash = Series::new("(info) read guest .wasm + sha256 (cache key)", loads);
    for i in 0..loads + 5 {
        let t = Instant::now();
        let g = Guest::load(
            &engine,
            &p.guest,
            Some(cache),
            host_ctx(),
            CallLimits::default(),
        )?;
        let d = t.elapsed();
        drop(g);
        if i >= 5 {
            load_host.samples.push(d);
        }
        let t = Instant::now();
        let bytes = std::fs::read(&artifact)?;
        // SAFETY: the artifact was written by this host's own cache, from
        // the guest built in this workspace, moments ago; wasmtime still
        // checks its header against the engine.
        let c = unsafe { Component::deserialize(&engine, &bytes) }?;
        let d = t.elapsed();
        drop(c);
        if i >= 5 {
            load_bare.samples.push(d);
        }
        let t = Instant::now();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(&p.guest)?);
        let d = t.elapsed();
        std::hint::black_box(digest);
        if i >= 5 {
            load_hash.samples.push(d);
        }
    }
    Ok(InProcessResult {
        call_host,
        call_bare,
        load_host,
        load_bare,
        load_hash,
        engine_new,
    })
}

// ---------------------------------------------------------------- bar 5

/// The deadline bar 5 gives the looping call.
const LOOP_DEADLINE: Duration = Duration::from_millis(100);

/// Times `start-task` of a guest that never returns, under its deadline.
fn bench_loop_cutoff(p: &Paths, cache: &Path, runs: usize) -> Res<Series> {
    let engine = runtime::engine()?;
    let state = tempfile::tempdir()?;
    let host = HostContext::new(
        "misbehave.wasm".into(),
        Grants::default(),
        state.path().to_path_buf(),
    );
    let limits = CallLimits {
        deadline: LOOP_DEADLINE,
        ..CallLimits::default()
    };
    let guest = Guest::load(&engine, &p.misbehave, Some(cache), host, limits)?;
    // `{mode = "loop"}` as cty-msgpack.
    let mut cfg = vec![0x81, 0xa4];
    cfg.extend_from_slice(b"mode");
    cfg.push(0xa4);
    cfg.extend_from_slice(b"loop");
    let pb = TaskConfig {
        id: "loop".into(),
        name: "loop".into(),
        alloc_id: "alloc".into(),
        msgpack_driver_config: cfg,
        ..Default::default()
    };
    let spec = nomad_wasm_host::nomad::convert::task_config(&pb);
    let mut series = Series::new("host: looping start-task until cut off", runs);
    for _ in 0..runs {
        let t = Instant::now();
        let r = guest.call("start-task", None, |g, s| g.call_start_task(s, &[], &spec));
        let d = t.elapsed();
        match r {
            Err(e) if matches!(e.kind, runtime::GuestFailure::Timeout(_)) => series.samples.push(d),
            other => return Err(format!("the looping call was not cut off: {other:?}").into()),
        }
    }
    Ok(series)
}

// ---------------------------------------------------------------- main

/// The three load averages; other work on the machine inflates every row.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn run() -> Res<bool> {
    let p = paths()?;
    let launch_runs = knob("BARS_LAUNCH_RUNS", 50);
    let start_runs = knob("BARS_START_RUNS", 200);
    let call_runs = knob("BARS_CALL_RUNS", 10_000);
    let load_runs = knob("BARS_LOAD_RUNS", 200);
    let loop_runs = knob("BARS_LOOP_RUNS", 20);
    eprintln!("bars: host   {}", p.host.display());
    eprintln!(
        "bars: guest  {} ({} bytes)",
        p.guest.display(),
        std::fs::metadata(&p.guest)?.len()
    );
    eprintln!("bars: anchor {}", p.anchor.display());
    let cache = tempfile::tempdir()?;
    let load_start = loadavg();

    eprintln!("bars: [1/3] launch -> handshake, {launch_runs} interleaved runs each");
    let launch = bench_launch(&p, cache.path(), launch_runs)?;
    eprintln!("bars: [2/3] StartTask vs bare spawn, {start_runs} interleaved runs each");
    let start = bench_start_task(&p, cache.path(), start_runs)?;
    eprintln!(
        "bars: [3/3] in-process: {call_runs} guest calls, {load_runs} loads, each interleaved with its baseline"
    );
    let inproc = bench_in_process(&p, cache.path(), call_runs, load_runs)?;
    eprintln!("bars: [+] {loop_runs} looping calls, deadline {LOOP_DEADLINE:?}");
    let looping = bench_loop_cutoff(&p, cache.path(), loop_runs)?;

    println!();
    println!(
        "cpus: {}   loadavg at start: {}   at end: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_start,
        loadavg()
    );
    println!("supervisor state dirs: {}", start.state_dirs);
    for s in [
        &launch.host,
        &launch.anchor,
        &launch.host_version,
        &start.host,
        &start.bare,
        &start.host_disk,
        &inproc.call_host,
        &inproc.call_bare,
        &inproc.load_host,
        &inproc.load_bare,
        &inproc.load_hash,
        &looping,
    ] {
        println!("{}", s.describe());
    }
    println!(
        "{:<46} {}",
        "(info) runtime::engine() once",
        fmt(inproc.engine_new)
    );

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let start_overhead = us(start.host.median()) - us(start.bare.median());
    let bars = [
        Bar {
            name: "1 launch -> handshake (warm cache)",
            measured: launch.host.median(),
            baseline: launch.anchor.median(),
            checked_us: us(launch.host.median()),
            checked_label: "median",
            target_us: 10_000.0,
        },
        Bar {
            name: "2 StartTask -> process running",
            measured: start.host.median(),
            baseline: start.bare.median(),
            checked_us: start_overhead,
            checked_label: "overhead",
            target_us: 1_000.0,
        },
        Bar {
            name: "3 guest call (instantiate + info)",
            measured: inproc.call_host.median(),
            baseline: inproc.call_bare.median(),
            checked_us: us(inproc.call_host.median()),
            checked_label: "median",
            target_us: 50.0,
        },
        Bar {
            name: "4 precompiled guest load (warm cache)",
            measured: inproc.load_host.median(),
            baseline: inproc.load_bare.median(),
            checked_us: us(inproc.load_host.median()),
            checked_label: "median",
            target_us: 1_000.0,
        },
        Bar {
            name: "5 looping call cut off (deadline 100 ms)",
            measured: looping.max(),
            baseline: LOOP_DEADLINE,
            checked_us: us(looping.max()),
            checked_label: "max",
            target_us: 2.0 * us(LOOP_DEADLINE),
        },
    ];
    print_table(&bars);
    Ok(bars.iter().all(Bar::pass))
}
