//! Test harness for driver guests: runs the BUILT guest component in
//! wasmtime, the way the host does, against fake host capabilities that
//! record everything the guest asks for.
//!
//! ```no_run
//! use nomad_driver_testkit::{Harness, Reply, Task};
//!
//! let mut h = Harness::load("hello").unwrap();
//! h.program("fish", "/usr/bin/fish");
//! h.reply("/usr/bin/fish", &["--version"], Reply::exit(0).stdout("fish, version 3.6.0\n"));
//! h.set_config(r#"shell = "fish""#).unwrap();
//! assert_eq!(h.fingerprint().description, "ready");
//! let started = h.start_task(&Task::new("web").config(r#"greeting = "hi""#)).unwrap();
//! assert_eq!(h.commands().last().unwrap()[0], "/usr/bin/fish");
//! # let _ = started;
//! ```
//!
//! What is real and what is fake:
//! - Real: the guest's compiled component, the WIT boundary (the host's own
//!   wasmtime bindings), the decoding of HCL configs against the guest's
//!   schemas into the cty-msgpack bytes Nomad would send
//!   ([`nomad_wasm_host::hcldec`]), and per-call limits like the host's
//!   (a fresh instance per call, 64 MiB of memory, 5 s of compute).
//! - Fake: every host import. `process` runs nothing: `lookup-path` answers
//!   from [`Harness::program`], `run` from [`Harness::reply`], `spawn`
//!   hands out ids `p1`, `p2`, ... whose exit you set with
//!   [`Harness::set_exit`]; `http` answers from [`Harness::http_reply`];
//!   `fs` is an in-memory file system ([`Harness::file`],
//!   [`Harness::read`]); `env` answers from [`Harness::set_env`] for the
//!   names granted with [`Harness::grant_env`] (the host's own grant rules);
//!   `log` and `task-event` are recorded; `clock` is
//!   deterministic (see [`Harness::set_time`]). The guest gets no WASI
//!   filesystem, network or environment, as with the host; its stderr
//!   (panic messages) is captured into trap errors.
//!
//! Guests must be built first:
//! `cargo build -p <crate> --target wasm32-wasip2 --profile guest`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nomad_wasm_host::hcldec::{self, Vars};
use nomad_wasm_host::runtime::bindings::nomad::driver::{
    clock, env, fs, http, log, process, types,
};
use nomad_wasm_host::runtime::bindings::{DriverGuest, DriverGuestPre};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use env::EnvError;
pub use fs::{Entry, EntryKind, FsError};
pub use http::{HttpError, KeyInfo};
pub use log::Level;
pub use process::ProcessError;
pub use types::{
    Attribute, AttributeValue, DriverCapabilities, DriverError, ExitResult, ExitStatus,
    FingerprintReport, Health, Mount, NetworkOverride, NomadConfig, PluginInfo, PortMapping, Spec,
    TaskConfig, TaskPoll, TaskRef, TaskRunning, TaskStarted, TaskUsage,
};

/// Guest compute time allowed per call (the host's default).
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// The kill timeout [`Harness::stop_task`] passes: Nomad's default
/// `kill_timeout` (5 s).
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Guest linear memory allowed per call (the host's default).
pub const CALL_MEMORY: usize = 64 << 20;
/// The `nomad-config` given to `set-config`: Nomad's default port range.
pub const NOMAD_CONFIG: NomadConfig = NomadConfig {
    client_min_port: 20000,
    client_max_port: 32000,
};
/// The alloc id of every [`Task`] unless set with [`Task::alloc_id`].
pub const ALLOC_ID: &str = "5e7e57ed-0000-4000-8000-000000000001";
/// The directory under which allocation directories are placed.
pub const ALLOC_ROOT: &str = "/var/nomad/alloc";
/// Wall-clock time the fake clock starts at (2023-11-14T22:13:20Z).
pub const START_TIME: i64 = 1_700_000_000;

const EPOCH_TICK: Duration = Duration::from_millis(5);
const STDERR_CAP: usize = 16 * 1024;

/// Why a harness call failed.
#[derive(Debug, Clone)]
pub enum Error {
    /// The guest file could not be found, read or compiled.
    Load(String),
    /// The HCL did not decode against the guest's schema; the message is
    /// the one Nomad would give (hcldec's), prefixed with the field path.
    Decode(String),
    /// The guest refused: its `driver-error`.
    Driver(DriverError),
    /// The guest trapped, ran out of time or memory, or failed to
    /// instantiate.
    Guest(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(m) => write!(f, "loading the guest: {m}"),
            Error::Decode(m) => write!(f, "config does not decode: {m}"),
            Error::Driver(e) => write!(f, "the guest refused: {e:?}"),
            Error::Guest(m) => write!(f, "the guest failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        match (self, other) {
            (Error::Load(a), Error::Load(b))
            | (Error::Decode(a), Error::Decode(b))
            | (Error::Guest(a), Error::Guest(b)) => a == b,
            (Error::Driver(a), Error::Driver(b)) => driver_error_parts(a) == driver_error_parts(b),
            _ => false,
        }
    }
}

/// A driver error's case name and message, e.g. `("invalid-config", msg)`.
pub fn driver_error_parts(e: &DriverError) -> (&'static str, &str) {
    match e {
        DriverError::InvalidConfig(m) => ("invalid-config", m),
        DriverError::Temporary(m) => ("temporary", m),
        DriverError::Fatal(m) => ("fatal", m),
        DriverError::Unsupported(m) => ("unsupported", m),
    }
}

impl Error {
    /// The message of a `Driver` error of case `invalid-config`, if it is
    /// one (handy in assertions).
    pub fn invalid_config(&self) -> Option<&str> {
        match self {
            Error::Driver(DriverError::InvalidConfig(m)) => Some(m),
            _ => None,
        }
    }
}

/// A host command as the guest asked for it (`process.command`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

impl Command {
    /// Program followed by its arguments.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The value of `key` in the command's environment.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl From<process::Command> for Command {
    fn from(c: process::Command) -> Command {
        Command {
            program: c.program,
            args: c.args,
            env: c.env,
            cwd: c.cwd,
            user: c.user,
        }
    }
}

/// Where a spawned process's output goes (`process.output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Null,
    TaskStdout,
    TaskStderr,
}

impl From<process::Output> for Output {
    fn from(o: process::Output) -> Output {
        match o {
            process::Output::Null => Output::Null,
            process::Output::TaskStdout => Output::TaskStdout,
            process::Output::TaskStderr => Output::TaskStderr,
        }
    }
}

/// Resource limits of a spawn (`process.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_max_bytes: u64,
    pub cpu_shares: u64,
}

/// How the guest asked the host to sign an HTTP request (`http.signing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub key: String,
    pub key_id: Option<String>,
    pub account: String,
    pub user: Option<String>,
    pub algorithm: Option<String>,
}

/// An HTTP request as the guest asked for it (`http.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub sign: Option<Signing>,
    pub client_cert: Option<String>,
}

impl HttpRequest {
    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Status, headers and body of a scripted response.
type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// One line the guest logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// The answer to a scripted HTTP request.
#[derive(Debug, Clone)]
pub struct HttpReply {
    result: Result<HttpAnswer, HttpError>,
}

impl HttpReply {
    /// A response with `status` and no headers or body.
    pub fn status(status: u16) -> HttpReply {
        HttpReply {
            result: Ok((status, Vec::new(), Vec::new())),
        }
    }

    /// A 200 response with a JSON body (and `content-type`).
    pub fn json(body: &str) -> HttpReply {
        HttpReply::status(200)
            .header("content-type", "application/json")
            .body(body)
    }

    /// `send` fails with this error instead.
    pub fn error(e: HttpError) -> HttpReply {
        HttpReply { result: Err(e) }
    }

    /// Adds a response header (names are lower-cased, as the host does).
    pub fn header(mut self, name: &str, value: &str) -> HttpReply {
        if let Ok((_, h, _)) = &mut self.result {
            h.push((name.to_lowercase(), value.into()));
        }
        self
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> HttpReply {
        if let Ok((_, _, b)) = &mut self.result {
            *b = body.as_ref().to_vec();
        }
        self
    }
}

/// The result of a scripted `process.run`.
#[derive(Debug, Clone)]
pub struct Reply {
    result: Result<(ExitStatus, Vec<u8>, Vec<u8>), ProcessError>,
}

impl Reply {
    /// The program exits with `code`, printing nothing (add output with
    /// [`Reply::stdout`] and [`Reply::stderr`]).
    pub fn exit(code: i32) -> Reply {
        Reply {
            result: Ok((
                ExitStatus {
                    code,
                    signal: 0,
                    oom_killed: false,
                },
                Vec::new(),
                Vec::new(),
            )),
        }
    }

    /// The program is killed by `signal` (exit code -1).
    pub fn killed(signal: i32) -> Reply {
        Reply {
            result: Ok((
                ExitStatus {
                    code: -1,
                    signal,
                    oom_killed: false,
                },
                Vec::new(),
                Vec::new(),
            )),
        }
    }

    /// `run` itself fails with this error (e.g. a timeout is
    /// `ProcessError::Failed("... timed out ...")`).
    pub fn error(e: ProcessError) -> Reply {
        Reply { result: Err(e) }
    }

    /// What the program writes to stdout.
    pub fn stdout(mut self, s: impl AsRef<[u8]>) -> Reply {
        if let Ok((_, out, _)) = &mut self.result {
            *out = s.as_ref().to_vec();
        }
        self
    }

    /// What the program writes to stderr.
    pub fn stderr(mut self, s: impl AsRef<[u8]>) -> Reply {
        if let Ok((_, _, err)) = &mut self.result {
            *err = s.as_ref().to_vec();
        }
        self
    }
}

/// One thing the guest asked the host for, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `process.lookup-path(name)`.
    LookupPath(String),
    /// `process.run(command, timeout-ms)`.
    Run { command: Command, timeout_ms: u32 },
    /// `process.spawn(spec)`.
    Spawn {
        command: Command,
        stdout: Output,
        stderr: Output,
        limits: Option<Limits>,
    },
    /// `process.signal(id, signal)`.
    Signal { id: String, signal: String },
    /// `process.status(id)`.
    Status { id: String },
    /// `log.task-event(message, annotations)`.
    TaskEvent {
        message: String,
        annotations: Vec<(String, String)>,
    },
    /// `log.log(level, message, fields)` (fields are in [`Harness::logs`]).
    Log { level: Level, message: String },
    /// `http.send(request)`.
    Http(HttpRequest),
    /// `http.describe-key(key)`.
    DescribeKey(String),
    /// An `fs` operation.
    Fs(FsOp),
    /// `env.get(name)`, granted or not.
    Env(String),
}

/// A file operation the guest asked for (paths as the guest gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    ReadFile(String),
    WriteFile {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    ListDir(String),
    CreateDir(String),
    Remove(String),
    Metadata(String),
}

/// A node of the fake file system.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FsNode {
    Dir,
    File { data: Vec<u8>, mode: u32 },
}

/// The fake file system: normalised absolute paths; `/` always exists.
/// The guest reaches only granted directories and, during a call about a
/// task, that task's allocation directory, as with the host.
#[derive(Debug, Default)]
struct MemFs {
    nodes: BTreeMap<String, FsNode>,
    /// Granted directory -> writable.
    grants: BTreeMap<String, bool>,
    /// The allocation directory of the task the current call is about.
    task_alloc: Option<String>,
}

/// `path` made absolute-normal (`.` and empty parts dropped, `..` applied
/// without going above `/`), or an error for a relative path.
fn normal_path(path: &str) -> Result<String, FsError> {
    if !path.starts_with('/') {
        return Err(FsError::Failed(format!("{path:?} is not an absolute path")));
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{dir}/"))
}

impl MemFs {
    fn check(&self, path: &str, write: bool) -> Result<String, FsError> {
        let p = normal_path(path)?;
        if self.task_alloc.as_deref().is_some_and(|a| under(&p, a)) {
            return Ok(p);
        }
        match self
            .grants
            .iter()
            .filter(|(d, _)| under(&p, d))
            .max_by_key(|(d, _)| d.len())
        {
            Some((_, true)) => Ok(p),
            Some((_, false)) if !write => Ok(p),
            Some((d, false)) => Err(FsError::NotGranted(format!(
                "{p} is in {d}, which is granted read-only (testkit: grant_dir({d:?}, true))"
            ))),
            None => Err(FsError::NotGranted(format!(
                "{p} is outside the task's allocation directory and every granted directory \
                 (testkit: Harness::grant_dir)"
            ))),
        }
    }

    fn is_dir(&self, p: &str) -> bool {
        p == "/" || matches!(self.nodes.get(p), Some(FsNode::Dir))
    }

    fn mkdir_all(&mut self, p: &str) -> Result<(), FsError> {
        if p == "/" {
            return Ok(());
        }
        self.mkdir_all(parent_of(p))?;
        match self.nodes.get(p) {
            Some(FsNode::File { .. }) => Err(FsError::Failed(format!("{p} is a file"))),
            Some(FsNode::Dir) => Ok(()),
            None => {
                self.nodes.insert(p.to_string(), FsNode::Dir);
                Ok(())
            }
        }
    }

    fn entry(&self, p: &str) -> Option<Entry> {
        let name = p.rsplit('/').next().unwrap_or_default().to_string();
        match self.nodes.get(p) {
            Some(FsNode::Dir) => Some(Entry {
                name,
                kind: EntryKind::Directory,
                size: 0,
            }),
            Some(FsNode::File { data, .. }) => Some(Entry {
                name,
                kind: EntryKind::File,
                size: data.len() as u64,
            }),
            None if p == "/" => Some(Entry {
                name,
                kind: EntryKind::Directory,
                size: 0,
            }),
            None => None,
        }
    }
}

/// A process the guest spawned.
#[derive(Debug, Clone)]
struct Proc {
    exit: Option<ExitStatus>,
}

/// The fakes' state; it moves into each call's store and back.
#[derive(Debug, Default)]
struct Fake {
    programs: BTreeMap<String, String>,
    fs: MemFs,
    http_replies: Vec<(String, String, HttpReply)>,
    http_denied: Vec<String>,
    keys: BTreeMap<String, KeyInfo>,
    /// The plugin's environment, and the host's grants that decide which of
    /// it the guest may read.
    env_vars: BTreeMap<String, String>,
    env_grants: nomad_wasm_host::grants::Grants,
    replies: Vec<(String, Vec<String>, Reply)>,
    denied: BTreeSet<String>,
    spawn_failures: BTreeMap<String, ProcessError>,
    calls: Vec<Call>,
    logs: Vec<LogLine>,
    events: Vec<(String, Vec<(String, String)>)>,
    procs: BTreeMap<String, Proc>,
    next_pid: u32,
    now: i64,
    monotonic: u64,
}

impl Fake {
    fn check_granted(&self, program: &str) -> Result<(), ProcessError> {
        if self.denied.contains(program) {
            return Err(ProcessError::NotGranted(format!(
                "executing {program} is not granted (grant it with --allow-exec {program})"
            )));
        }
        Ok(())
    }
}

/// Per-call store data.
struct State {
    fake: Fake,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.fake.calls.push(Call::Log {
            level,
            message: message.clone(),
        });
        self.fake.logs.push(LogLine {
            level,
            message,
            fields,
        });
    }

    fn task_event(&mut self, message: String, annotations: Vec<(String, String)>) {
        self.fake.calls.push(Call::TaskEvent {
            message: message.clone(),
            annotations: annotations.clone(),
        });
        self.fake.events.push((message, annotations));
    }
}

impl clock::Host for State {
    fn now(&mut self) -> clock::Datetime {
        clock::Datetime {
            seconds: self.fake.now,
            nanoseconds: 0,
        }
    }

    fn monotonic_ns(&mut self) -> u64 {
        self.fake.monotonic += 1_000_000;
        self.fake.monotonic
    }
}

impl process::Host for State {
    fn lookup_path(&mut self, name: String) -> Option<String> {
        self.fake.calls.push(Call::LookupPath(name.clone()));
        if let Some(path) = self.fake.programs.get(&name) {
            return Some(path.clone());
        }
        // An absolute path resolves to itself if it is a known program.
        (name.contains('/') && self.fake.programs.values().any(|p| *p == name)).then_some(name)
    }

    fn run(
        &mut self,
        command: process::Command,
        timeout_ms: u32,
    ) -> Result<process::RunOutput, ProcessError> {
        self.fake.calls.push(Call::Run {
            command: command.clone().into(),
            timeout_ms,
        });
        self.fake.check_granted(&command.program)?;
        let best = self
            .fake
            .replies
            .iter()
            .enumerate()
            .filter(|(_, (program, prefix, _))| {
                *program == command.program && command.args.starts_with(prefix)
            })
            // Longest prefix wins; among equals, the latest scripted.
            .max_by_key(|(i, (_, prefix, _))| (prefix.len(), *i))
            .map(|(_, (_, _, reply))| reply.clone());
        match best.map(|r| r.result) {
            None => Ok(process::RunOutput {
                status: ExitStatus {
                    code: 0,
                    signal: 0,
                    oom_killed: false,
                },
                stdout: Vec::new(),
                stderr: Vec::new(),
            }),
            Some(Ok((status, stdout, stderr))) => Ok(process::RunOutput {
                status,
                stdout,
                stderr,
            }),
            Some(Err(e)) => Err(e),
        }
    }

    fn spawn(&mut self, spec: process::SpawnSpec) -> Result<String, ProcessError> {
        let program = spec.command.program.clone();
        self.fake.calls.push(Call::Spawn {
            command: spec.command.into(),
            stdout: spec.stdout.into(),
            stderr: spec.stderr.into(),
            limits: spec.limits.map(|l| Limits {
                memory_max_bytes: l.memory_max_bytes,
                cpu_shares: l.cpu_shares,
            }),
        });
        self.fake.check_granted(&program)?;
        if let Some(e) = self.fake.spawn_failures.get(&program) {
            return Err(e.clone());
        }
        self.fake.next_pid += 1;
        let id = format!("p{}", self.fake.next_pid);
        self.fake.procs.insert(id.clone(), Proc { exit: None });
        Ok(id)
    }

    fn signal(&mut self, id: String, signal: String) -> Result<(), ProcessError> {
        self.fake.calls.push(Call::Signal {
            id: id.clone(),
            signal,
        });
        if !self.fake.procs.contains_key(&id) {
            return Err(ProcessError::NotFound(format!("no process {id}")));
        }
        Ok(())
    }

    fn status(&mut self, id: String) -> Result<Option<ExitStatus>, ProcessError> {
        self.fake.calls.push(Call::Status { id: id.clone() });
        match self.fake.procs.get(&id) {
            Some(p) => Ok(p.exit),
            None => Err(ProcessError::NotFound(format!("no process {id}"))),
        }
    }
}

impl http::Host for State {
    fn send(&mut self, request: http::Request) -> Result<http::Response, HttpError> {
        let req = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
            sign: request.sign.map(|s| Signing {
                key: s.key,
                key_id: s.key_id,
                account: s.account,
                user: s.user,
                algorithm: s.algorithm,
            }),
            client_cert: request.client_cert,
        };
        self.fake.calls.push(Call::Http(req.clone()));
        if let Some(prefix) = self
            .fake
            .http_denied
            .iter()
            .find(|p| req.url.starts_with(p.as_str()))
        {
            return Err(HttpError::NotGranted(format!(
                "requests to {prefix} are not granted"
            )));
        }
        let best = self
            .fake
            .http_replies
            .iter()
            .enumerate()
            .filter(|(_, (method, prefix, _))| {
                (method.is_empty() || method.eq_ignore_ascii_case(&req.method))
                    && req.url.starts_with(prefix.as_str())
            })
            .max_by_key(|(i, (_, prefix, _))| (prefix.len(), *i))
            .map(|(_, (_, _, reply))| reply.result.clone());
        match best {
            Some(Ok((status, headers, body))) => Ok(http::Response {
                status,
                headers,
                body,
            }),
            Some(Err(e)) => Err(e),
            None => Err(HttpError::Network(format!(
                "testkit: no scripted response for {} {} (script one with Harness::http_reply)",
                req.method, req.url
            ))),
        }
    }

    fn describe_key(&mut self, key: String) -> Result<KeyInfo, HttpError> {
        self.fake.calls.push(Call::DescribeKey(key.clone()));
        self.fake
            .keys
            .get(&key)
            .cloned()
            .ok_or_else(|| HttpError::NotGranted(format!("no secret grant named {key:?}")))
    }
}

impl env::Host for State {
    fn get(&mut self, name: String) -> Result<Option<String>, EnvError> {
        self.fake.calls.push(Call::Env(name.clone()));
        self.fake
            .env_grants
            .check_env(&name)
            .map_err(|e| EnvError::NotGranted(e.to_string()))?;
        Ok(self.fake.env_vars.get(&name).cloned())
    }
}

impl fs::Host for State {
    fn read_file(&mut self, path: String) -> Result<Vec<u8>, FsError> {
        self.fake.calls.push(Call::Fs(FsOp::ReadFile(path.clone())));
        let p = self.fake.fs.check(&path, false)?;
        match self.fake.fs.nodes.get(&p) {
            Some(FsNode::File { data, .. }) => Ok(data.clone()),
            Some(FsNode::Dir) => Err(FsError::Failed(format!("{p} is a directory"))),
            None if p == "/" => Err(FsError::Failed("/ is a directory".into())),
            None => Err(FsError::NotFound(format!("{p} does not exist"))),
        }
    }

    fn write_file(&mut self, path: String, contents: Vec<u8>, mode: u32) -> Result<(), FsError> {
        self.fake.calls.push(Call::Fs(FsOp::WriteFile {
            path: path.clone(),
            contents: contents.clone(),
            mode,
        }));
        let p = self.fake.fs.check(&path, true)?;
        if !self.fake.fs.is_dir(parent_of(&p)) {
            return Err(FsError::NotFound(format!(
                "the directory of {p} does not exist"
            )));
        }
        if self.fake.fs.is_dir(&p) {
            return Err(FsError::Failed(format!("{p} is a directory")));
        }
        self.fake.fs.nodes.insert(
            p,
            FsNode::File {
                data: contents,
                mode,
            },
        );
        Ok(())
    }

    fn list_dir(&mut self, path: String) -> Result<Vec<Entry>, FsError> {
        self.fake.calls.push(Call::Fs(FsOp::ListDir(path.clone())));
        let p = self.fake.fs.check(&path, false)?;
        if !self.fake.fs.is_dir(&p) {
            return Err(match self.fake.fs.nodes.get(&p) {
                Some(_) => FsError::Failed(format!("{p} is not a directory")),
                None => FsError::NotFound(format!("{p} does not exist")),
            });
        }
        let fs = &self.fake.fs;
        Ok(fs
            .nodes
            .keys()
            .filter(|k| k.as_str() != p && parent_of(k) == p)
            .filter_map(|k| fs.entry(k))
            .collect())
    }

    fn create_dir(&mut self, path: String) -> Result<(), FsError> {
        self.fake
            .calls
            .push(Call::Fs(FsOp::CreateDir(path.clone())));
        let p = self.fake.fs.check(&path, true)?;
        self.fake.fs.mkdir_all(&p)
    }

    fn remove(&mut self, path: String) -> Result<(), FsError> {
        self.fake.calls.push(Call::Fs(FsOp::Remove(path.clone())));
        let p = self.fake.fs.check(&path, true)?;
        if p == "/" {
            return Err(FsError::NotGranted("removing / is not granted".into()));
        }
        self.fake.fs.nodes.retain(|k, _| !under(k, &p));
        Ok(())
    }

    fn metadata(&mut self, path: String) -> Result<Option<Entry>, FsError> {
        self.fake.calls.push(Call::Fs(FsOp::Metadata(path.clone())));
        let p = self.fake.fs.check(&path, false)?;
        Ok(self.fake.fs.entry(&p))
    }
}

/// One compiled component per file, shared by the harnesses of a test
/// binary (compiling is the slow part).
struct Compiled {
    engine: Engine,
    pre: DriverGuestPre<State>,
}

fn engine() -> Result<Engine, Error> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("testkit-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
            Ok(engine)
        })
        .clone()
        .map_err(Error::Load)
}

fn compile(path: &Path) -> Result<Arc<Compiled>, Error> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Compiled>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(path).cloned()) {
        return Ok(c);
    }
    let engine = engine()?;
    let bytes = std::fs::read(path).map_err(|e| {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Error::Load(format!(
            "cannot read guest component {}: {e}. Build it first: \
             cargo build -p <crate of {stem}> --target wasm32-wasip2 --profile guest \
             (or point NOMAD_TESTKIT_WASM_DIR at the directory that has {stem}.wasm)",
            path.display()
        ))
    })?;
    let component = Component::new(&engine, &bytes).map_err(|e| {
        Error::Load(format!(
            "{} is not a usable component: {e:#}",
            path.display()
        ))
    })?;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| Error::Load(format!("linking WASI: {e:#}")))?;
    DriverGuest::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| Error::Load(format!("linking host imports: {e:#}")))?;
    let wrong_world = |e: wasmtime::Error| {
        Error::Load(format!(
            "{} does not implement the world nomad:driver/driver-guest: {e:#}",
            path.display()
        ))
    };
    let pre = DriverGuestPre::new(linker.instantiate_pre(&component).map_err(wrong_world)?)
        .map_err(wrong_world)?;
    let compiled = Arc::new(Compiled { engine, pre });
    if let Ok(mut m) = cache.lock() {
        m.insert(path.to_path_buf(), compiled.clone());
    }
    Ok(compiled)
}

/// Where guests are found: `NOMAD_TESTKIT_WASM_DIR`, else
/// `$CARGO_TARGET_DIR/wasm32-wasip2/guest`, else the workspace's
/// `target/wasm32-wasip2/guest`.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NOMAD_TESTKIT_WASM_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("wasm32-wasip2").join("guest")
}

/// A task to start, with deterministic ids and paths.
///
/// Defaults: alloc id [`ALLOC_ID`], task id `<alloc id>/<name>/00000001`,
/// alloc dir `/var/nomad/alloc/<alloc id>`, task dir `<alloc dir>/<name>`,
/// job `job`, group `group`, namespace `default`, node `node-1`
/// (id `00000000-0000-4000-8000-00000000000a`), 100 MHz CPU, 300 MB memory,
/// no ports, mounts, user or network namespace, an empty config and an
/// empty environment (add Nomad's `NOMAD_*` variables with
/// [`Task::nomad_env`]). Config templates (`${NOMAD_TASK_DIR}`) are always
/// interpolated with Nomad's variables for this task plus [`Task::env`].
#[derive(Debug, Clone)]
pub struct Task {
    name: String,
    id: Option<String>,
    alloc_id: String,
    job: String,
    group: String,
    config: String,
    env: Vec<(String, String)>,
    nomad_env: bool,
    user: String,
    cpu_shares: i64,
    memory_mb: i64,
    memory_max_mb: i64,
    cpuset_cpus: String,
    ports: Vec<PortMapping>,
    mounts: Vec<Mount>,
    network_namespace: Option<String>,
    node_attrs: Vec<(String, String)>,
}

impl Task {
    pub fn new(name: &str) -> Task {
        Task {
            name: name.into(),
            id: None,
            alloc_id: ALLOC_ID.into(),
            job: "job".into(),
            group: "group".into(),
            config: String::new(),
            env: Vec::new(),
            nomad_env: false,
            user: String::new(),
            cpu_shares: 100,
            memory_mb: 300,
            memory_max_mb: 0,
            cpuset_cpus: String::new(),
            ports: Vec::new(),
            mounts: Vec::new(),
            network_namespace: None,
            node_attrs: Vec::new(),
        }
    }

    /// A node attribute or meta value config templates may use, by its
    /// dotted name: `.node_attr("attr.kernel.name", "linux")` makes
    /// `${attr.kernel.name}` interpolate to `linux`.
    pub fn node_attr(mut self, name: &str, value: &str) -> Task {
        self.node_attrs.push((name.into(), value.into()));
        self
    }

    /// The task's `config { }` body in HCL, decoded against the guest's
    /// task-config-schema as Nomad would (one argument per line).
    pub fn config(mut self, hcl: &str) -> Task {
        self.config = hcl.into();
        self
    }

    /// An environment variable (Nomad's `env { }` and its own), in order.
    pub fn env(mut self, key: &str, value: &str) -> Task {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Also put Nomad's own variables (`NOMAD_TASK_DIR`, `NOMAD_ALLOC_ID`,
    /// ...; see [`Task::nomad_vars`]) into the task's environment, before
    /// the ones set with [`Task::env`].
    pub fn nomad_env(mut self) -> Task {
        self.nomad_env = true;
        self
    }

    pub fn memory_mb(mut self, mb: i64) -> Task {
        self.memory_mb = mb;
        self
    }

    pub fn memory_max_mb(mut self, mb: i64) -> Task {
        self.memory_max_mb = mb;
        self
    }

    pub fn cpu_shares(mut self, mhz: i64) -> Task {
        self.cpu_shares = mhz;
        self
    }

    pub fn cpuset_cpus(mut self, cpus: &str) -> Task {
        self.cpuset_cpus = cpus.into();
        self
    }

    /// A port: `label`, host port `value`, task port `to`, on 127.0.0.1.
    pub fn port(mut self, label: &str, value: i32, to: i32) -> Task {
        self.ports.push(PortMapping {
            label: label.into(),
            value,
            to,
            host_ip: "127.0.0.1".into(),
        });
        self
    }

    /// The task's `user`.
    pub fn user(mut self, user: &str) -> Task {
        self.user = user.into();
        self
    }

    /// A volume mount of `host_path` at `task_path` (propagation `private`).
    pub fn mount(mut self, host_path: &str, task_path: &str, readonly: bool) -> Task {
        self.mounts.push(Mount {
            task_path: task_path.into(),
            host_path: host_path.into(),
            readonly,
            propagation_mode: "private".into(),
        });
        self
    }

    /// The group network namespace the task joins.
    pub fn network_namespace(mut self, path: &str) -> Task {
        self.network_namespace = Some(path.into());
        self
    }

    /// Overrides the alloc id (default [`ALLOC_ID`]).
    pub fn with_alloc_id(mut self, id: &str) -> Task {
        self.alloc_id = id.into();
        self
    }

    /// Overrides the task id (default `<alloc id>/<name>/00000001`).
    pub fn with_id(mut self, id: &str) -> Task {
        self.id = Some(id.into());
        self
    }

    pub fn job(mut self, job: &str) -> Task {
        self.job = job.into();
        self
    }

    pub fn group(mut self, group: &str) -> Task {
        self.group = group.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task id: `<alloc id>/<name>/00000001` unless overridden.
    pub fn id(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{}/{}/00000001", self.alloc_id, self.name))
    }

    pub fn alloc_id(&self) -> &str {
        &self.alloc_id
    }

    pub fn alloc_dir(&self) -> String {
        format!("{ALLOC_ROOT}/{}", self.alloc_id)
    }

    /// `<alloc dir>/<name>`.
    pub fn task_dir(&self) -> String {
        format!("{}/{}", self.alloc_dir(), self.name)
    }

    pub fn stdout_path(&self) -> String {
        format!("{}/alloc/logs/.{}.stdout.fifo", self.alloc_dir(), self.name)
    }

    pub fn stderr_path(&self) -> String {
        format!("{}/alloc/logs/.{}.stderr.fifo", self.alloc_dir(), self.name)
    }

    pub fn config_hcl(&self) -> &str {
        &self.config
    }

    /// Nomad's variables for this task, as the client sets them.
    pub fn nomad_vars(&self) -> Vec<(String, String)> {
        let task_dir = self.task_dir();
        vec![
            (
                "NOMAD_ALLOC_DIR".into(),
                format!("{}/alloc", self.alloc_dir()),
            ),
            ("NOMAD_ALLOC_ID".into(), self.alloc_id.clone()),
            (
                "NOMAD_ALLOC_NAME".into(),
                format!("{}.{}[0]", self.job, self.group),
            ),
            ("NOMAD_CPU_LIMIT".into(), self.cpu_shares.to_string()),
            ("NOMAD_GROUP_NAME".into(), self.group.clone()),
            ("NOMAD_JOB_ID".into(), self.job.clone()),
            ("NOMAD_JOB_NAME".into(), self.job.clone()),
            ("NOMAD_MEMORY_LIMIT".into(), self.memory_mb.to_string()),
            ("NOMAD_NAMESPACE".into(), "default".into()),
            ("NOMAD_SECRETS_DIR".into(), format!("{task_dir}/secrets")),
            ("NOMAD_TASK_DIR".into(), format!("{task_dir}/local")),
            ("NOMAD_TASK_NAME".into(), self.name.clone()),
        ]
    }

    fn full_env(&self) -> Vec<(String, String)> {
        let mut env = if self.nomad_env {
            self.nomad_vars()
        } else {
            Vec::new()
        };
        env.extend(self.env.iter().cloned());
        env
    }

    fn vars(&self) -> Vars {
        let mut vars = Vars::new();
        for (k, v) in self
            .nomad_vars()
            .into_iter()
            .chain(self.env.iter().cloned())
        {
            vars = vars.env(k, v);
        }
        for (k, v) in &self.node_attrs {
            vars = vars.node(k, v);
        }
        vars
    }

    /// The `task-config` the guest receives, with `driver_config` bytes.
    pub fn task_config(&self, driver_config: Vec<u8>) -> TaskConfig {
        let limit = self.memory_mb.max(self.memory_max_mb) * 1024 * 1024;
        TaskConfig {
            id: self.id(),
            name: self.name.clone(),
            alloc_id: self.alloc_id.clone(),
            task_group: self.group.clone(),
            job_name: self.job.clone(),
            job_id: self.job.clone(),
            namespace: "default".into(),
            node_name: "node-1".into(),
            node_id: "00000000-0000-4000-8000-00000000000a".into(),
            driver_config,
            env: self.full_env(),
            user: self.user.clone(),
            alloc_dir: self.alloc_dir(),
            stdout_path: self.stdout_path(),
            stderr_path: self.stderr_path(),
            resources: types::Resources {
                cpu_shares: self.cpu_shares,
                memory_mb: self.memory_mb,
                memory_max_mb: self.memory_max_mb,
                memory_limit_bytes: limit,
                cpuset_cpus: self.cpuset_cpus.clone(),
                ports: self.ports.clone(),
            },
            mounts: self.mounts.clone(),
            network_namespace: self.network_namespace.clone(),
        }
    }
}

/// A task the guest started.
#[derive(Debug, Clone)]
pub struct Started {
    task: Task,
    started: TaskStarted,
}

impl Started {
    /// What the guest returned from `start-task`.
    pub fn task_started(&self) -> &TaskStarted {
        &self.started
    }

    pub fn driver_state(&self) -> &[u8] {
        &self.started.driver_state
    }

    /// The spawned process id the guest named as the task, e.g. `p1`.
    pub fn main_process(&self) -> Option<&str> {
        self.started.main_process.as_deref()
    }

    pub fn network_override(&self) -> Option<&NetworkOverride> {
        self.started.network_override.as_ref()
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The `task-ref` later calls get.
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            id: self.task.id(),
            name: self.task.name.clone(),
            alloc_id: self.task.alloc_id.clone(),
            driver_state: self.started.driver_state.clone(),
            main_process: self.started.main_process.clone(),
        }
    }
}

/// A loaded guest with its fake host.
pub struct Harness {
    label: String,
    compiled: Arc<Compiled>,
    fake: Fake,
    /// The guest's own config bytes from `set-config`, once called.
    config: Option<Vec<u8>>,
    config_schema: Option<Spec>,
    task_config_schema: Spec,
    deadline: Duration,
    memory: usize,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("guest", &self.label)
            .field("calls", &self.fake.calls.len())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Loads `<wasm dir>/<name>.wasm` (see [`wasm_dir`]) and asks it for its
    /// schemas.
    pub fn load(name: &str) -> Result<Harness, Error> {
        Harness::load_path(&wasm_dir().join(format!("{name}.wasm")))
    }

    /// Loads the guest component at `path`.
    pub fn load_path(path: &Path) -> Result<Harness, Error> {
        let compiled = compile(path)?;
        let mut h = Harness {
            label: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            compiled,
            fake: Fake {
                now: START_TIME,
                ..Fake::default()
            },
            config: None,
            config_schema: None,
            task_config_schema: Spec { nodes: vec![] },
            deadline: CALL_DEADLINE,
            memory: CALL_MEMORY,
        };
        h.config_schema = h.call("config-schema", |g, s| g.call_config_schema(s))?;
        h.task_config_schema = h.call("task-config-schema", |g, s| g.call_task_config_schema(s))?;
        Ok(h)
    }

    /// Changes the per-call compute deadline (default [`CALL_DEADLINE`]).
    pub fn set_deadline(&mut self, d: Duration) {
        self.deadline = d;
    }

    /// Changes the per-call memory limit (default [`CALL_MEMORY`]).
    pub fn set_memory_limit(&mut self, bytes: usize) {
        self.memory = bytes;
    }

    /// `lookup-path(name)` answers `path` (and `lookup-path(path)` too).
    /// Names not registered resolve to none.
    pub fn program(&mut self, name: &str, path: &str) {
        self.fake.programs.insert(name.into(), path.into());
    }

    /// Scripts `run` of `program` whose arguments start with `args_prefix`
    /// (the longest matching prefix wins; later scripts win ties). An
    /// unscripted run exits 0 with no output; both are recorded.
    pub fn reply(&mut self, program: &str, args_prefix: &[&str], reply: Reply) {
        self.fake.replies.push((
            program.into(),
            args_prefix.iter().map(|s| s.to_string()).collect(),
            reply,
        ));
    }

    /// `run` and `spawn` of `program` fail with `not-granted`, as when the
    /// operator did not grant it.
    pub fn deny(&mut self, program: &str) {
        self.fake.denied.insert(program.into());
    }

    /// `spawn` of `program` fails with `error`.
    pub fn fail_spawn(&mut self, program: &str, error: ProcessError) {
        self.fake.spawn_failures.insert(program.into(), error);
    }

    /// Puts a file into the fake file system (creating its directories),
    /// regardless of grants (this is the test's setup, not the guest).
    pub fn file(&mut self, path: &str, contents: impl AsRef<[u8]>) {
        if let Ok(p) = normal_path(path) {
            let _ = self.fake.fs.mkdir_all(parent_of(&p));
            self.fake.fs.nodes.insert(
                p,
                FsNode::File {
                    data: contents.as_ref().to_vec(),
                    mode: 0o644,
                },
            );
        }
    }

    /// Creates a directory (and its parents) in the fake file system.
    pub fn dir(&mut self, path: &str) {
        if let Ok(p) = normal_path(path) {
            let _ = self.fake.fs.mkdir_all(&p);
        }
    }

    /// The contents of a file in the fake file system (what the guest
    /// wrote, or what was put there).
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.fake.fs.nodes.get(&normal_path(path).ok()?) {
            Some(FsNode::File { data, .. }) => Some(data.clone()),
            _ => None,
        }
    }

    /// The permission bits a file was written with.
    pub fn mode(&self, path: &str) -> Option<u32> {
        match self.fake.fs.nodes.get(&normal_path(path).ok()?) {
            Some(FsNode::File { mode, .. }) => Some(*mode),
            _ => None,
        }
    }

    /// Whether a file or directory exists in the fake file system.
    pub fn exists(&self, path: &str) -> bool {
        normal_path(path).is_ok_and(|p| p == "/" || self.fake.fs.nodes.contains_key(&p))
    }

    /// Grants the guest a directory of the fake file system, as a `dir`
    /// grant does for the host (`writable`: also writes). Without grants
    /// the guest reaches only the allocation directory of the task a call
    /// is about.
    pub fn grant_dir(&mut self, dir: &str, writable: bool) {
        if let Ok(p) = normal_path(dir) {
            self.fake.fs.grants.insert(p, writable);
        }
    }

    /// Scripts `http.send`: requests whose method is `method` (empty: any)
    /// and whose URL starts with `url_prefix` get `reply` (the longest
    /// matching prefix wins; later scripts win ties). An unscripted request
    /// fails with a `network` error naming it; every request is recorded.
    pub fn http_reply(&mut self, method: &str, url_prefix: &str, reply: HttpReply) {
        self.fake
            .http_replies
            .push((method.into(), url_prefix.into(), reply));
    }

    /// Requests to URLs starting with `url_prefix` fail with `not-granted`.
    pub fn deny_http(&mut self, url_prefix: &str) {
        self.fake.http_denied.push(url_prefix.into());
    }

    /// Sets a variable of the plugin's environment. The guest reads it only
    /// if it is granted ([`Harness::grant_env`]).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.fake.env_vars.insert(name.into(), value.into());
    }

    /// Grants `env.get` of a variable, or of a prefix written `PREFIX*`,
    /// with the host's rules (`--allow-env`): a prefix does not cover
    /// secret-looking names. Panics on a pattern the host would refuse.
    pub fn grant_env(&mut self, pattern: &str) {
        let grants = std::mem::take(&mut self.fake.env_grants);
        self.fake.env_grants = grants
            .with_env(pattern)
            .unwrap_or_else(|e| panic!("testkit: grant_env({pattern:?}): {e}"));
    }

    /// Makes `var` the environment variable a host `secret` grant named
    /// `secret` takes its key from (`secret "NAME" { env = "VAR" }`): the
    /// host then refuses it to `env.get` even if granted.
    pub fn secret_env(&mut self, secret: &str, var: &str) {
        let grants = std::mem::take(&mut self.fake.env_grants);
        self.fake.env_grants = grants
            .with_secret_env(secret, var, None)
            .unwrap_or_else(|e| panic!("testkit: secret_env({secret:?}, {var:?}): {e}"));
    }

    /// The environment variables the guest asked for, in order.
    pub fn env_reads(&self) -> Vec<&str> {
        self.fake
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Env(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A key grant `http.describe-key(name)` answers; unknown names fail with
    /// `not-granted`.
    pub fn http_key(&mut self, name: &str, info: KeyInfo) {
        self.fake.keys.insert(name.into(), info);
    }

    /// The HTTP requests the guest sent, in order.
    pub fn http_requests(&self) -> Vec<&HttpRequest> {
        self.fake
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Http(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The spawned process `id` has exited with `status` (what `status`
    /// reports from now on).
    pub fn set_exit(&mut self, id: &str, status: ExitStatus) {
        self.fake
            .procs
            .entry(id.into())
            .or_insert(Proc { exit: None })
            .exit = Some(status);
    }

    /// Sets the fake wall clock (seconds since the epoch; default
    /// [`START_TIME`]). The monotonic clock advances 1 ms per reading.
    pub fn set_time(&mut self, seconds: i64) {
        self.fake.now = seconds;
    }

    /// Everything the guest asked for, in order.
    pub fn calls(&self) -> &[Call] {
        &self.fake.calls
    }

    /// Program and arguments of every `run` and `spawn`, in order
    /// (including refused ones).
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.fake
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Run { command, .. } | Call::Spawn { command, .. } => Some(
                    std::iter::once(command.program.clone())
                        .chain(command.args.iter().cloned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The spawned commands only, with their output routing and limits.
    pub fn spawned(&self) -> Vec<&Command> {
        self.fake
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn { command, .. } => Some(command),
                _ => None,
            })
            .collect()
    }

    /// Forgets the recorded calls, logs and events (not the scripts).
    pub fn clear_calls(&mut self) {
        self.fake.calls.clear();
        self.fake.logs.clear();
        self.fake.events.clear();
    }

    /// Task events the guest emitted: message and annotations.
    pub fn task_events(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.fake.events.clone()
    }

    /// Log lines the guest wrote: level, message, fields.
    pub fn logs(&self) -> &[LogLine] {
        &self.fake.logs
    }

    /// The guest's plugin config schema.
    pub fn config_schema(&self) -> Option<&Spec> {
        self.config_schema.as_ref()
    }

    /// The guest's task config schema.
    pub fn task_config_schema(&self) -> &Spec {
        &self.task_config_schema
    }

    pub fn info(&mut self) -> Result<PluginInfo, Error> {
        self.call("info", |g, s| g.call_info(s))
    }

    pub fn capabilities(&mut self) -> Result<DriverCapabilities, Error> {
        self.call("capabilities", |g, s| g.call_capabilities(s))
    }

    /// The plugin config bytes Nomad would send for this `config { }` body:
    /// decoded against the config schema; empty bytes if the guest has
    /// none.
    pub fn decode_plugin_config(&self, hcl: &str) -> Result<Vec<u8>, Error> {
        match &self.config_schema {
            Some(spec) => hcldec::decode_body(spec, hcl).map_err(|e| Error::Decode(e.to_string())),
            None if hcl.trim().is_empty() => Ok(Vec::new()),
            None => Err(Error::Decode(
                "config: the driver takes no plugin config (its config-schema is none)".into(),
            )),
        }
    }

    /// The task config bytes Nomad would send for `task`.
    pub fn decode_task_config(&self, task: &Task) -> Result<Vec<u8>, Error> {
        hcldec::decode_body_with(&self.task_config_schema, &task.config, &task.vars())
            .map_err(|e| Error::Decode(e.to_string()))
    }

    /// Decodes the plugin config body `hcl` and calls `set-config` with it
    /// (and [`NOMAD_CONFIG`]); the guest's result is kept for later calls.
    /// Without it, the first call that needs a config sets an empty one,
    /// as Nomad does for an agent without a `config { }` block.
    pub fn set_config(&mut self, hcl: &str) -> Result<(), Error> {
        let bytes = self.decode_plugin_config(hcl)?;
        self.set_config_bytes(bytes)
    }

    /// `set-config` with raw msgpack bytes.
    pub fn set_config_bytes(&mut self, msgpack: Vec<u8>) -> Result<(), Error> {
        let r = self.call("set-config", |g, s| {
            g.call_set_config(s, &msgpack, Some(NOMAD_CONFIG))
        })?;
        self.config = Some(r.map_err(Error::Driver)?);
        Ok(())
    }

    /// The config bytes the guest returned from its last successful
    /// `set-config` (its own encoding of the parsed agent config), if any.
    pub fn guest_config(&self) -> Option<&[u8]> {
        self.config.as_deref()
    }

    fn config(&mut self) -> Result<Vec<u8>, Error> {
        if self.config.is_none() {
            self.set_config("")?;
        }
        Ok(self.config.clone().unwrap_or_default())
    }

    /// The guest's fingerprint. Panics if the guest fails (see
    /// [`Harness::try_fingerprint`]).
    pub fn fingerprint(&mut self) -> FingerprintReport {
        match self.try_fingerprint() {
            Ok(r) => r,
            Err(e) => panic!("fingerprint of {} failed: {e}", self.label),
        }
    }

    pub fn try_fingerprint(&mut self) -> Result<FingerprintReport, Error> {
        let config = self.config()?;
        self.call("fingerprint", |g, s| g.call_fingerprint(s, &config))
    }

    /// Decodes the task's config and calls `start-task`. As Nomad does
    /// before it starts a task, the fake file system gets the allocation
    /// directory (`alloc/`, `alloc/logs/`) and the task directory
    /// (`local/`, `secrets/`, `tmp/`).
    pub fn start_task(&mut self, task: &Task) -> Result<Started, Error> {
        let driver_config = self.decode_task_config(task)?;
        self.make_task_dirs(task);
        let config = self.config()?;
        let spec = task.task_config(driver_config);
        let started = self
            .task_call(task, "start-task", |g, s| {
                g.call_start_task(s, &config, &spec)
            })?
            .map_err(Error::Driver)?;
        self.check_main_process(&started)?;
        Ok(Started {
            task: task.clone(),
            started,
        })
    }

    /// The host refuses a start whose main process the guest did not spawn.
    fn check_main_process(&self, started: &TaskStarted) -> Result<(), Error> {
        match &started.main_process {
            Some(pid) if !self.fake.procs.contains_key(pid) => Err(Error::Guest(format!(
                "{} failed in start-task: the guest named main process {pid:?}, which it did not spawn",
                self.label
            ))),
            _ => Ok(()),
        }
    }

    fn make_task_dirs(&mut self, task: &Task) {
        let alloc = task.alloc_dir();
        let dir = task.task_dir();
        for d in [
            format!("{alloc}/alloc/logs"),
            format!("{alloc}/alloc/data"),
            format!("{alloc}/alloc/tmp"),
            format!("{dir}/local"),
            format!("{dir}/secrets"),
            format!("{dir}/tmp"),
        ] {
            self.dir(&d);
        }
    }

    /// `start-task` with raw driver-config bytes (to test bytes Nomad
    /// would never send).
    pub fn start_task_bytes(
        &mut self,
        task: &Task,
        driver_config: Vec<u8>,
    ) -> Result<Started, Error> {
        self.make_task_dirs(task);
        let config = self.config()?;
        let spec = task.task_config(driver_config);
        let started = self
            .task_call(task, "start-task", |g, s| {
                g.call_start_task(s, &config, &spec)
            })?
            .map_err(Error::Driver)?;
        self.check_main_process(&started)?;
        Ok(Started {
            task: task.clone(),
            started,
        })
    }

    /// The task's main process ended with `status`.
    pub fn task_exited(
        &mut self,
        started: &Started,
        status: ExitStatus,
    ) -> Result<ExitResult, Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        self.task_call(&started.task, "task-exited", |g, s| {
            g.call_task_exited(s, &config, &tref, status)
        })
    }

    /// `stop-task` with Nomad's default kill timeout ([`KILL_TIMEOUT`]).
    pub fn stop_task(&mut self, started: &Started, signal: &str) -> Result<(), Error> {
        self.stop_task_within(started, signal, KILL_TIMEOUT)
    }

    /// `stop-task` with the job's `kill_timeout` (whole milliseconds,
    /// saturated at u32::MAX, as the host passes it).
    pub fn stop_task_within(
        &mut self,
        started: &Started,
        signal: &str,
        kill_timeout: Duration,
    ) -> Result<(), Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        let timeout_ms = u32::try_from(kill_timeout.as_millis()).unwrap_or(u32::MAX);
        self.task_call(&started.task, "stop-task", |g, s| {
            g.call_stop_task(s, &config, &tref, signal, timeout_ms)
        })?
        .map_err(Error::Driver)
    }

    pub fn signal_task(&mut self, started: &Started, signal: &str) -> Result<(), Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        self.task_call(&started.task, "signal-task", |g, s| {
            g.call_signal_task(s, &config, &tref, signal)
        })?
        .map_err(Error::Driver)
    }

    /// The host command the guest would run for `nomad alloc exec`.
    pub fn exec_command(&mut self, started: &Started, argv: &[&str]) -> Result<Command, Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.task_call(&started.task, "exec-command", |g, s| {
            g.call_exec_command(s, &config, &tref, &argv)
        })?
        .map(Command::from)
        .map_err(Error::Driver)
    }

    /// `poll-task`: what the guest finds when the host follows a task that
    /// has no main process.
    pub fn poll_task(&mut self, started: &Started) -> Result<TaskPoll, Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        self.task_call(&started.task, "poll-task", |g, s| {
            g.call_poll_task(s, &config, &tref)
        })?
        .map_err(Error::Driver)
    }

    pub fn task_stats(&mut self, started: &Started) -> Result<Option<TaskUsage>, Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        self.task_call(&started.task, "task-stats", |g, s| {
            g.call_task_stats(s, &config, &tref)
        })?
        .map_err(Error::Driver)
    }

    pub fn destroy_task(&mut self, started: &Started) -> Result<(), Error> {
        let config = self.config()?;
        let tref = started.task_ref();
        self.task_call(&started.task, "destroy-task", |g, s| {
            g.call_destroy_task(s, &config, &tref)
        })?
        .map_err(Error::Driver)
    }

    /// [`Harness::call`] for a call about `task`: the guest's file access
    /// includes the task's allocation directory for its duration.
    fn task_call<R>(
        &mut self,
        task: &Task,
        name: &str,
        f: impl FnOnce(
            &nomad_wasm_host::runtime::bindings::exports::nomad::driver::driver::Guest,
            &mut Store<State>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        self.fake.fs.task_alloc = Some(task.alloc_dir());
        let r = self.call(name, f);
        self.fake.fs.task_alloc = None;
        r
    }

    /// Calls one export on a fresh instance, like the host: the fakes move
    /// into the store for the call and come back after it.
    fn call<R>(
        &mut self,
        name: &str,
        f: impl FnOnce(
            &nomad_wasm_host::runtime::bindings::exports::nomad::driver::driver::Guest,
            &mut Store<State>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        let stderr = MemoryOutputPipe::new(STDERR_CAP);
        let state = State {
            fake: std::mem::take(&mut self.fake),
            wasi: wasmtime_wasi::WasiCtxBuilder::new()
                .stderr(stderr.clone())
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.compiled.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (self.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let result = self
            .compiled
            .pre
            .instantiate(&mut store)
            .and_then(|guest| f(guest.nomad_driver_driver(), &mut store));
        self.fake = store.into_data().fake;
        result.map_err(|e| {
            let mut msg = format!("{} failed in {name}: {}", self.label, describe(&e, self));
            let out = stderr.contents();
            if !out.is_empty() {
                msg.push_str(&format!(
                    " (guest stderr: {})",
                    String::from_utf8_lossy(&out).trim()
                ));
            }
            Error::Guest(msg)
        })
    }
}

fn describe(e: &wasmtime::Error, h: &Harness) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!(
            "it ran longer than its {:?} deadline and was stopped",
            h.deadline
        ),
        _ => {
            let text = format!("{e:#}");
            if text.contains("growing memory") {
                format!(
                    "it tried to grow its memory past the {} byte limit",
                    h.memory
                )
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fs::Host as _;

    fn state() -> State {
        State {
            fake: Fake::default(),
            wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().build(),
        }
    }

    fn request(method: &str, url: &str) -> http::Request {
        http::Request {
            method: method.into(),
            url: url.into(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout_ms: 0,
            sign: Some(http::Signing {
                key: "triton".into(),
                key_id: None,
                account: "acct".into(),
                user: None,
                algorithm: None,
            }),
            client_cert: None,
        }
    }

    #[test]
    fn http_replies_match_by_method_and_longest_url_prefix() {
        use http::Host as _;
        let mut s = state();
        s.fake.http_replies.push((
            String::new(),
            "https://api.example/".into(),
            HttpReply::status(404),
        ));
        s.fake.http_replies.push((
            "GET".into(),
            "https://api.example/my/machines".into(),
            HttpReply::json("[]").header("X-Request-Id", "1"),
        ));
        s.fake.http_denied.push("https://evil.example".into());
        let r = s
            .send(request("get", "https://api.example/my/machines?limit=1"))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"[]");
        assert!(r.headers.contains(&("x-request-id".into(), "1".into())));
        // Another method falls back to the catch-all prefix.
        let r = s
            .send(request("POST", "https://api.example/my/machines"))
            .unwrap();
        assert_eq!(r.status, 404);
        assert!(matches!(
            s.send(request("GET", "https://other.example/")),
            Err(HttpError::Network(m)) if m.contains("no scripted response")
        ));
        assert!(matches!(
            s.send(request("GET", "https://evil.example/x")),
            Err(HttpError::NotGranted(_))
        ));
        assert!(matches!(
            s.describe_key("triton".into()),
            Err(HttpError::NotGranted(_))
        ));
        let Call::Http(first) = &s.fake.calls[0] else {
            panic!("{:?}", s.fake.calls)
        };
        assert_eq!(first.sign.as_ref().map(|g| g.key.as_str()), Some("triton"));
        assert_eq!(s.fake.calls.len(), 5);
    }

    #[test]
    fn paths_normalise_without_escaping_the_root() {
        assert_eq!(normal_path("/a/./b//c/").unwrap(), "/a/b/c");
        assert_eq!(normal_path("/a/../../../etc").unwrap(), "/etc");
        assert!(normal_path("rel/x").is_err());
        assert!(under("/a/b", "/a") && under("/a", "/a") && !under("/ab", "/a"));
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
    }

    #[test]
    fn the_fake_fs_follows_grants_and_the_task_alloc_dir() {
        let mut s = state();
        let not_granted = |r: Result<(), FsError>| matches!(r, Err(FsError::NotGranted(_)));
        // Nothing granted, no task: everything refused.
        assert!(not_granted(s.create_dir("/alloc/x".into())));
        // During a task call its alloc dir is reachable, `..` cannot leave it.
        s.fake.fs.task_alloc = Some("/alloc".into());
        s.create_dir("/alloc/x/y".into()).unwrap();
        s.write_file("/alloc/x/y/f".into(), b"hi".to_vec(), 0o600)
            .unwrap();
        assert_eq!(s.read_file("/alloc/x/y/../y/f".into()).unwrap(), b"hi");
        assert!(matches!(
            s.read_file("/alloc/../etc/passwd".into()),
            Err(FsError::NotGranted(_))
        ));
        assert!(matches!(
            s.write_file("/alloc/nodir/f".into(), vec![], 0o644),
            Err(FsError::NotFound(_))
        ));
        let names: Vec<String> = s
            .list_dir("/alloc/x".into())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["y"]);
        let meta = s.metadata("/alloc/x/y/f".into()).unwrap().unwrap();
        assert_eq!((meta.kind, meta.size), (EntryKind::File, 2));
        assert!(s.metadata("/alloc/none".into()).unwrap().is_none());
        s.remove("/alloc/x".into()).unwrap();
        assert!(s.fake.fs.nodes.keys().all(|k| !k.starts_with("/alloc/x")));
        // Read-only and writable grants.
        s.fake.fs.task_alloc = None;
        s.fake.fs.grants.insert("/etc".into(), false);
        s.fake.fs.grants.insert("/etc/app".into(), true);
        s.fake.fs.mkdir_all("/etc/app").unwrap();
        assert!(not_granted(s.write_file("/etc/f".into(), vec![], 0o644)));
        s.write_file("/etc/app/f".into(), b"x".to_vec(), 0o644)
            .unwrap();
        assert!(matches!(
            s.read_file("/etc/none".into()),
            Err(FsError::NotFound(_))
        ));
        // Every operation was recorded.
        assert_eq!(
            s.fake
                .calls
                .iter()
                .filter(|c| matches!(c, Call::Fs(_)))
                .count(),
            13
        );
    }
}
