//! The driver core: runs Nomad's task lifecycle by asking the guest for
//! policy and doing the mechanism with the host's capabilities.
//!
//! Nothing here knows about protobuf; the `nomad` adapter converts.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::caps::process::Proc;
use crate::caps::{TaskContext, TaskEvent};
use crate::runtime::bindings::exports::nomad::driver::driver::Guest as DriverExports;
use crate::runtime::bindings::nomad::driver::types::{
    self as wit, DriverCapabilities as Capabilities, DriverError as GuestRefusal,
    FingerprintReport as Fingerprint, NomadConfig, PluginInfo, Spec,
};
use crate::runtime::{CallState, Guest, GuestError};
use crate::tasks::{HandleState, Task, TaskResult, TaskTable};
use nix::sys::signal::Signal;
use wasmtime::Store;

/// How long to wait for a task to die after SIGKILL before giving up.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// `poll-task` failures in a row after which a task is given up.
const POLL_FAILURES: u32 = 10;
/// The range a guest's requested poll delay is kept in.
const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(60);
/// After a followed task's stop-task returns, at least this long for the
/// poll it triggers to see the end before the host escalates.
const STOP_POLL_GRACE: Duration = Duration::from_secs(1);

/// The stop "signal" with which Nomad hands a remote task to another
/// allocation (NOMAD-PROTOCOL.md, `remote_tasks`): stop managing, don't kill.
pub const DETACH_SIGNAL: &str = "DETACH";

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The operator did not grant what was asked.
    #[error("{0}")]
    NotGranted(String),
    #[error("task not found for given id: {0}")]
    TaskNotFound(String),
    #[error("a task with id {0} already exists")]
    TaskExists(String),
    /// The guest trapped, timed out or could not be instantiated.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The guest returned an error value.
    #[error("{guest}: {call}: {refusal}")]
    Refused {
        guest: String,
        call: &'static str,
        refusal: Refusal,
    },
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The host could not do its part.
    #[error("{0}")]
    Host(String),
}

/// The guest's own error value, by kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("{0}")]
    Temporary(String),
    #[error("{0}")]
    Fatal(String),
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl From<GuestRefusal> for Refusal {
    fn from(e: GuestRefusal) -> Self {
        match e {
            GuestRefusal::InvalidConfig(m) => Refusal::InvalidConfig(m),
            GuestRefusal::Temporary(m) => Refusal::Temporary(m),
            GuestRefusal::Fatal(m) => Refusal::Fatal(m),
            GuestRefusal::Unsupported(m) => Refusal::Unsupported(m),
        }
    }
}

/// What the guest declared about itself at load time. These never change
/// for a loaded guest, so they are asked once, not on every request.
#[derive(Debug, Clone)]
pub struct GuestManifest {
    pub info: PluginInfo,
    pub config_schema: Option<Spec>,
    pub task_config_schema: Spec,
    pub capabilities: Capabilities,
}

/// A started task as the adapter needs it for the handle.
#[derive(Debug)]
pub struct Started {
    pub task: Arc<Task>,
    pub driver_state: Vec<u8>,
    pub network_override: Option<wit::NetworkOverride>,
}

/// The driver: one guest, its config and its tasks.
/// One loaded build of the guest, with the config it validated.
#[derive(Debug)]
pub struct Version {
    pub guest: Arc<Guest>,
    pub manifest: GuestManifest,
    /// The guest's validated config from `set-config`.
    config: RwLock<Option<Vec<u8>>>,
}

impl Version {
    /// Asks a loaded guest for its manifest once.
    pub fn new(guest: Arc<Guest>) -> Result<Self, DriverError> {
        let manifest = guest.call("info", None, |g, s| {
            Ok(GuestManifest {
                info: g.call_info(&mut *s)?,
                config_schema: g.call_config_schema(&mut *s)?,
                task_config_schema: g.call_task_config_schema(&mut *s)?,
                capabilities: g.call_capabilities(&mut *s)?,
            })
        })?;
        Ok(Version {
            guest,
            manifest,
            config: RwLock::new(None),
        })
    }

    pub fn sha256(&self) -> &str {
        self.guest.sha256()
    }
}

/// The driver: the current guest (and older builds that running tasks
/// started with), its config and its tasks.
#[derive(Debug)]
pub struct Driver {
    host: Arc<crate::caps::HostContext>,
    current: RwLock<Arc<Version>>,
    /// Every build a task of this process started with, by sha256: a task
    /// keeps the guest it started with after a reload.
    versions: std::sync::Mutex<std::collections::HashMap<String, Arc<Version>>>,
    tasks: TaskTable,
    /// The last agent config Nomad sent, replayed into a reloaded guest.
    last_config: RwLock<Option<(Vec<u8>, Option<NomadConfig>)>>,
}

impl Driver {
    /// Wraps a loaded guest, asking it for its manifest once.
    pub fn new(guest: Arc<Guest>) -> Result<Self, DriverError> {
        let host = guest.host().clone();
        let v = Arc::new(Version::new(guest)?);
        let versions = std::collections::HashMap::from([(v.sha256().to_owned(), v.clone())]);
        Ok(Driver {
            host,
            current: RwLock::new(v),
            versions: std::sync::Mutex::new(versions),
            tasks: TaskTable::default(),
            last_config: RwLock::new(None),
        })
    }

    /// The build new tasks start with.
    pub fn current(&self) -> Arc<Version> {
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What the current guest declared about itself.
    pub fn manifest(&self) -> GuestManifest {
        self.current().manifest.clone()
    }

    /// The host context every guest build shares (processes, events).
    pub fn host(&self) -> &Arc<crate::caps::HostContext> {
        &self.host
    }

    pub fn tasks(&self) -> &TaskTable {
        &self.tasks
    }

    /// The build a task started with (the current one if it is unknown).
    fn version_of(&self, task: &Task) -> Arc<Version> {
        self.versions
            .lock()
            .ok()
            .and_then(|m| m.get(&task.guest_sha256).cloned())
            .unwrap_or_else(|| self.current())
    }

    /// Replaces the current guest with `guest` for new tasks. The new build
    /// must have the same driver name and accept the agent config Nomad
    /// sent; `check` validates its manifest (e.g. its schemas). Running
    /// tasks keep the build they started with.
    pub async fn reload(
        &self,
        guest: Arc<Guest>,
        check: impl Fn(&GuestManifest) -> Result<(), String>,
    ) -> Result<Arc<Version>, DriverError> {
        let v = Arc::new(
            tokio::task::spawn_blocking(move || Version::new(guest))
                .await
                .map_err(|e| DriverError::Host(format!("reload was lost: {e}")))??,
        );
        let old = self.current();
        if v.manifest.info.name != old.manifest.info.name {
            return Err(DriverError::InvalidRequest(format!(
                "the new guest is driver {:?}, not {:?}: a reload cannot rename the driver",
                v.manifest.info.name, old.manifest.info.name
            )));
        }
        check(&v.manifest).map_err(DriverError::InvalidRequest)?;
        let last = self.last_config.read().ok().and_then(|c| c.clone());
        let (msgpack, nomad) = last.unwrap_or_default();
        self.set_config_on(&v, msgpack, nomad).await?;
        if let Ok(mut m) = self.versions.lock() {
            m.insert(v.sha256().to_owned(), v.clone());
        }
        if let Ok(mut cur) = self.current.write() {
            *cur = v.clone();
        }
        tracing::info!(
            was = %old.sha256(),
            now = %v.sha256(),
            version = %v.manifest.info.version,
            "guest reloaded; new tasks use the new build"
        );
        Ok(v)
    }

    /// Loads an earlier build of the guest from the compile cache and gives
    /// it the agent config, for a task recovered after a restart.
    async fn earlier_build(&self, sha256: &str) -> Option<Arc<Version>> {
        let current = self.current().guest.clone();
        let sha = sha256.to_owned();
        let v = tokio::task::spawn_blocking(move || {
            let guest = current.load_cached_build(&sha)?;
            Version::new(Arc::new(guest))
                .map_err(|e| tracing::warn!(error = %e, "earlier build does not answer"))
                .ok()
        })
        .await
        .ok()??;
        let v = Arc::new(v);
        let last = self.last_config.read().ok().and_then(|c| c.clone());
        let (msgpack, nomad) = last.unwrap_or_default();
        if let Err(e) = self.set_config_on(&v, msgpack, nomad).await {
            tracing::warn!(build = sha256, error = %e, "earlier build refuses the agent config");
            return None;
        }
        if let Ok(mut m) = self.versions.lock() {
            Some(m.entry(sha256.to_owned()).or_insert(v).clone())
        } else {
            Some(v)
        }
    }

    /// Calls a guest build on the blocking pool (a call may run short host
    /// commands), mapping failures to [`DriverError`].
    async fn call_on<R: Send + 'static>(
        &self,
        v: &Arc<Version>,
        call: &'static str,
        task: Option<TaskContext>,
        f: impl FnOnce(&DriverExports, &mut Store<CallState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> Result<R, DriverError> {
        let guest = v.guest.clone();
        // On the multi-threaded runtime (the plugin's) the call runs on this
        // worker thread, which hands its other tasks to another worker:
        // handing the call to the blocking pool and back costs two thread
        // wake-ups, on StartTask's path among others.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(move || guest.call(call, task, f))
                .map_err(DriverError::from);
        }
        tokio::task::spawn_blocking(move || guest.call(call, task, f))
            .await
            .map_err(|e| DriverError::Host(format!("guest call {call} was lost: {e}")))?
            .map_err(DriverError::from)
    }

    fn refused(&self, call: &'static str, e: GuestRefusal) -> DriverError {
        DriverError::Refused {
            guest: self.current().manifest.info.name.clone(),
            call,
            refusal: e.into(),
        }
    }

    /// Validates and stores the agent config.
    pub async fn set_config(
        &self,
        msgpack: Vec<u8>,
        nomad: Option<NomadConfig>,
    ) -> Result<(), DriverError> {
        let v = self.current();
        self.set_config_on(&v, msgpack.clone(), nomad).await?;
        if let Ok(mut last) = self.last_config.write() {
            *last = Some((msgpack, nomad));
        }
        // Nomad configures a driver before giving it tasks: have spare
        // supervisors ready for the first StartTask.
        self.host.processes.prewarm();
        Ok(())
    }

    async fn set_config_on(
        &self,
        v: &Arc<Version>,
        msgpack: Vec<u8>,
        nomad: Option<NomadConfig>,
    ) -> Result<(), DriverError> {
        let config = self
            .call_on(v, "set-config", None, move |g, s| {
                g.call_set_config(s, &msgpack, nomad)
            })
            .await?
            .map_err(|e| self.refused("set-config", e))?;
        if let Ok(mut slot) = v.config.write() {
            *slot = Some(config);
        }
        Ok(())
    }

    /// A build's stored config; if Nomad never sent one, its defaults.
    async fn config(&self, v: &Arc<Version>) -> Result<Vec<u8>, DriverError> {
        if let Some(c) = v.config.read().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let last = self.last_config.read().ok().and_then(|c| c.clone());
        let (msgpack, nomad) = last.unwrap_or_default();
        self.set_config_on(v, msgpack, nomad).await?;
        Ok(v.config
            .read()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_default())
    }

    /// The guest's fingerprint, plus what the host knows: which cgroups
    /// resource limits go through (`v2`, `v1-memory`, or `none`).
    pub async fn fingerprint(&self) -> Result<Fingerprint, DriverError> {
        let v = self.current();
        let config = self.config(&v).await?;
        let mut report = self
            .call_on(&v, "fingerprint", None, move |g, s| {
                g.call_fingerprint(s, &config)
            })
            .await?;
        report.attributes.push(wit::Attribute {
            key: format!("driver.{}.cgroups", v.manifest.info.name),
            value: wit::AttributeValue::Text(self.host.processes.cgroups().kind().into()),
            unit: String::new(),
        });
        Ok(report)
    }

    /// Starts a task: the guest validates its config and spawns what it
    /// needs; the host then watches the main process.
    pub async fn start_task(
        self: &Arc<Self>,
        spec: wit::TaskConfig,
        handle_config: nomad_plugin_proto::drivers::TaskConfig,
    ) -> Result<Started, DriverError> {
        if spec.id.is_empty() {
            return Err(DriverError::InvalidRequest("task config has no id".into()));
        }
        if self.tasks.contains(&spec.id) {
            return Err(DriverError::TaskExists(spec.id));
        }
        let v = self.current();
        let config = self.config(&v).await?;
        let ctx = TaskContext {
            id: spec.id.clone(),
            name: spec.name.clone(),
            alloc_id: spec.alloc_id.clone(),
            alloc_dir: spec.alloc_dir.clone(),
            stdout_path: spec.stdout_path.clone(),
            stderr_path: spec.stderr_path.clone(),
            spawned: Vec::new(),
        };
        let (id, name, alloc_id) = (spec.id.clone(), spec.name.clone(), spec.alloc_id.clone());
        let outcome = self
            .call_on(&v, "start-task", Some(ctx), move |g, s| {
                let r = g.call_start_task(&mut *s, &config, &spec)?;
                let spawned = s
                    .data()
                    .task
                    .as_ref()
                    .map(|t| t.spawned.clone())
                    .unwrap_or_default();
                Ok((r, spawned))
            })
            .await;
        let (result, spawned) = match outcome {
            Ok(v) => v,
            Err(e) => {
                // The guest died mid-start: nothing it spawned may linger.
                self.kill_processes(&id).await;
                self.host.processes.remove_task(&id);
                return Err(e);
            }
        };
        let started = match result {
            Ok(s) => s,
            Err(e) => {
                if !spawned.is_empty() {
                    tracing::warn!(task_id = %id, processes = spawned.len(), "start-task failed; killing what it spawned");
                }
                self.kill_processes(&id).await;
                self.host.processes.remove_task(&id);
                return Err(self.refused("start-task", e));
            }
        };
        let main = match &started.main_process {
            Some(pid) => Some(self.host.processes.get(pid).ok_or_else(|| {
                DriverError::Host(format!(
                    "the guest named main process {pid:?}, which it did not spawn"
                ))
            })?),
            None => None,
        };
        let task = Arc::new(
            Task::new(
                id.clone(),
                name,
                alloc_id,
                started.driver_state,
                started.main_process,
                handle_config,
            )
            .with_guest_sha256(v.sha256().to_owned()),
        );
        if let Some(n) = &started.network_override {
            task.set_network_override(n.clone());
        }
        if !self.tasks.insert(task.clone()) {
            self.kill_processes(&id).await;
            return Err(DriverError::TaskExists(id));
        }
        let driver = self.clone();
        let watched = task.clone();
        match main.clone() {
            Some(main) => tokio::spawn(async move { driver.watch_exit(watched, main).await }),
            None => tokio::spawn(async move { driver.follow(watched).await }),
        };
        let state = task.handle_state(v.guest.label(), v.sha256(), spawned, main.map(|p| p.pid));
        tracing::info!(task_id = %task.id, "task started");
        Ok(Started {
            task,
            driver_state: state.encode(),
            network_override: started.network_override,
        })
    }

    /// Follows a task without a main process through the guest's
    /// `poll-task` until it ends, is destroyed, or the guest cannot follow it.
    async fn follow(self: Arc<Self>, task: Arc<Task>) {
        use std::sync::atomic::Ordering;
        let mut failures = 0u32;
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = task.poll_now.notified() => {}
                _ = task.wait() => return,
            }
            if task.exit().is_some() || self.tasks.get(&task.id).is_none() {
                return;
            }
            let v = self.version_of(&task);
            let polled = match self.config(&v).await {
                Ok(config) => {
                    let tref = task_ref(&task);
                    self.call_on(&v, "poll-task", Some(task_context(&task)), move |g, s| {
                        g.call_poll_task(s, &config, &tref)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            let problem = match polled {
                Ok(Ok(wit::TaskPoll::Running(r))) => {
                    task.followed.store(true, Ordering::Release);
                    if let Some(n) = r.network_override {
                        task.set_network_override(n);
                    }
                    failures = 0;
                    delay = Duration::from_millis(r.delay_ms.into()).clamp(POLL_MIN, POLL_MAX);
                    continue;
                }
                Ok(Ok(wit::TaskPoll::Exited(r))) => {
                    tracing::info!(task_id = %task.id, exit_code = r.exit_code, signal = r.signal, "task exited");
                    task.set_exit(TaskResult {
                        exit_code: r.exit_code,
                        signal: r.signal,
                        oom_killed: r.oom_killed,
                        err: r.err,
                    });
                    return;
                }
                Ok(Err(GuestRefusal::Unsupported(_))) => {
                    tracing::debug!(task_id = %task.id, "task has no main process and the guest does not poll it; it ends when stopped");
                    return;
                }
                Ok(Err(e @ (GuestRefusal::Fatal(_) | GuestRefusal::InvalidConfig(_)))) => {
                    let e = self.refused("poll-task", e);
                    task.set_exit(TaskResult {
                        exit_code: -1,
                        err: Some(e.to_string()),
                        ..TaskResult::default()
                    });
                    return;
                }
                Ok(Err(e)) => self.refused("poll-task", e).to_string(),
                Err(e) => e.to_string(),
            };
            failures += 1;
            tracing::warn!(task_id = %task.id, failures, error = %problem, "poll-task failed");
            if failures >= POLL_FAILURES {
                let msg =
                    format!("lost track of the task after {failures} failed polls: {problem}");
                self.host
                    .emit(TaskEvent::for_task(&task_context(&task), msg.clone()));
                task.set_exit(TaskResult {
                    exit_code: -1,
                    err: Some(msg),
                    ..TaskResult::default()
                });
                return;
            }
            // 1 s, 2 s, 4 s ... up to 30 s.
            delay = Duration::from_secs(1 << (failures - 1).min(5)).min(Duration::from_secs(30));
        }
    }

    /// Waits for the main process, then asks the guest what the exit means.
    async fn watch_exit(self: Arc<Self>, task: Arc<Task>, main: Arc<Proc>) {
        let status = main.wait().await;
        let raw = TaskResult {
            exit_code: status.code,
            signal: status.signal,
            oom_killed: status.oom_killed,
            err: status.lost.then(|| {
                "the task's supervisor ended without recording its exit status".to_owned()
            }),
        };
        if status.lost {
            // Nothing for the guest to interpret: the status is unknown.
            self.host.emit(TaskEvent::for_task(
                &task_context(&task),
                "the task's supervisor ended without recording an exit status",
            ));
            task.set_exit(raw);
            return;
        }
        if status.oom_killed {
            self.host.emit(TaskEvent::for_task(
                &task_context(&task),
                "the task was killed because it ran out of memory",
            ));
        }
        let v = self.version_of(&task);
        let result = match self.config(&v).await {
            Ok(config) => {
                let tref = task_ref(&task);
                let exit: wit::ExitStatus = status.into();
                match self
                    .call_on(&v, "task-exited", Some(task_context(&task)), move |g, s| {
                        g.call_task_exited(s, &config, &tref, exit)
                    })
                    .await
                {
                    Ok(r) => TaskResult {
                        exit_code: r.exit_code,
                        signal: r.signal,
                        oom_killed: r.oom_killed,
                        err: r.err,
                    },
                    Err(e) => {
                        tracing::error!(task_id = %task.id, error = %e, "guest could not interpret the exit; reporting it as observed");
                        raw
                    }
                }
            }
            Err(_) => raw,
        };
        tracing::info!(task_id = %task.id, exit_code = result.exit_code, signal = result.signal, "task exited");
        task.set_exit(result);
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, DriverError> {
        self.tasks
            .get(id)
            .ok_or_else(|| DriverError::TaskNotFound(id.to_owned()))
    }

    pub fn inspect_task(&self, id: &str) -> Result<Arc<Task>, DriverError> {
        self.task(id)
    }

    /// The task's usage as the guest measures it; `None` when the guest
    /// leaves measuring to the host.
    pub async fn task_stats(
        &self,
        id: &str,
    ) -> Result<Option<crate::runtime::bindings::nomad::driver::types::TaskUsage>, DriverError>
    {
        let task = self.task(id)?;
        let v = self.version_of(&task);
        let config = self.config(&v).await?;
        let tref = task_ref(&task);
        self.call_on(&v, "task-stats", Some(task_context(&task)), move |g, s| {
            g.call_task_stats(s, &config, &tref)
        })
        .await?
        .map_err(|e| self.refused("task-stats", e))
    }

    pub async fn wait_task(&self, id: &str) -> Result<TaskResult, DriverError> {
        let task = self.task(id)?;
        Ok(task.wait().await)
    }

    /// Asks the guest to SIGKILL a task the host does not run itself (a
    /// remote instance): its `signal-task` with "SIGKILL".
    async fn guest_kill(&self, task: &Arc<Task>) -> Result<(), DriverError> {
        let v = self.version_of(task);
        let config = self.config(&v).await?;
        let tref = task_ref(task);
        self.call_on(&v, "signal-task", Some(task_context(task)), move |g, s| {
            g.call_signal_task(s, &config, &tref, "SIGKILL")
        })
        .await?
        .map_err(|e| self.refused("signal-task", e))
    }

    /// `StopTask(DETACH)`: Nomad hands a remote task to a replacement
    /// allocation and asks this one to stop managing it without stopping
    /// it. The task's wait ends (exit 0), the host stops following it, and
    /// its destroy releases nothing. Only for drivers that declare
    /// `remote-tasks`; nothing local may run for such a task.
    fn detach(&self, task: &Arc<Task>) -> Result<(), DriverError> {
        use std::sync::atomic::Ordering;
        let v = self.version_of(task);
        if !v.manifest.capabilities.remote_tasks {
            return Err(DriverError::InvalidRequest(format!(
                "stop signal {DETACH_SIGNAL} is only for remote tasks, and driver {:?} does not declare remote-tasks",
                v.manifest.info.name
            )));
        }
        if task.main_process.is_some() {
            return Err(DriverError::InvalidRequest(format!(
                "task {} runs a process on this host, which {DETACH_SIGNAL} would leave unmanaged; stop it with a signal",
                task.id
            )));
        }
        task.detached.store(true, Ordering::Release);
        if task.exit().is_none() {
            task.set_exit(TaskResult::default());
        }
        tracing::info!(task_id = %task.id, "task detached: no longer managed by this allocation");
        Ok(())
    }

    /// Asks the guest to stop the task with `signal` (telling it `timeout`),
    /// waits until `timeout` has passed since it asked, then kills whatever
    /// is left. Returns once the task is dead.
    pub async fn stop_task(
        &self,
        id: &str,
        timeout: Duration,
        signal: String,
    ) -> Result<(), DriverError> {
        use std::sync::atomic::Ordering;
        let task = self.task(id)?;
        if signal == DETACH_SIGNAL {
            return self.detach(&task);
        }
        if task.exit().is_some() {
            return Ok(());
        }
        if !signal.is_empty() {
            crate::caps::process::parse_signal(&signal).map_err(DriverError::InvalidRequest)?;
        }
        if !timeout.is_zero() {
            let v = self.version_of(&task);
            let config = self.config(&v).await?;
            let tref = task_ref(&task);
            let sig = signal.clone();
            let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            // The kill timeout runs from the stop, also while the guest's
            // stop-task waits for its runtime (e.g. sdc-docker's stop?t=).
            // (A timeout too far out to add, from a StopTaskRequest, is
            // as good as none: a year.)
            let now = tokio::time::Instant::now();
            let deadline = now
                .checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
            let asked = self
                .call_on(&v, "stop-task", Some(task_context(&task)), move |g, s| {
                    g.call_stop_task(s, &config, &tref, &sig, timeout_ms)
                })
                .await;
            match asked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task_id = id, error = %self.refused("stop-task", e), "guest could not stop the task; killing it")
                }
                Err(e) => {
                    tracing::warn!(task_id = id, error = %e, "guest failed in stop-task; killing the task")
                }
            }
            if task.main_process.is_none() && !task.followed.load(Ordering::Acquire) {
                // Nothing the host supervises or follows: the guest's stop
                // is the stop.
                task.set_exit(TaskResult::default());
                return Ok(());
            }
            let mut wait_until = deadline;
            if task.main_process.is_none() {
                // A followed task: poll now rather than at the guest's next
                // delay, and give that poll a moment even if the stop took
                // the whole timeout.
                task.poll_now.notify_one();
                wait_until = wait_until.max(tokio::time::Instant::now() + STOP_POLL_GRACE);
            }
            if tokio::time::timeout_at(wait_until, task.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            tracing::info!(
                task_id = id,
                ?timeout,
                "task did not stop in time; killing it"
            );
        }
        if task.main_process.is_none() && task.followed.load(Ordering::Acquire) {
            // A task the guest follows: its kill is the guest's SIGKILL,
            // and the guest's next poll sees the end.
            if let Err(e) = self.guest_kill(&task).await {
                tracing::warn!(task_id = id, error = %e, "guest could not kill the task");
            }
            task.poll_now.notify_one();
            if tokio::time::timeout(KILL_GRACE, task.wait()).await.is_ok() {
                return Ok(());
            }
        }
        self.kill_processes(id).await;
        if task.main_process.is_none() {
            task.set_exit(TaskResult {
                exit_code: 137,
                signal: 9,
                ..Default::default()
            });
        }
        match tokio::time::timeout(KILL_GRACE, task.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(DriverError::Host(format!(
                "task {id} is still alive {KILL_GRACE:?} after SIGKILL"
            ))),
        }
    }

    /// SIGKILLs the process group of every process of the task and waits
    /// (bounded) for them to be reaped.
    async fn kill_processes(&self, id: &str) {
        let procs = self.host.processes.of_task(id);
        for p in &procs {
            if let Err(e) = p.signal(Signal::SIGKILL) {
                tracing::warn!(task_id = id, pid = p.pid, error = %e, "kill failed");
            }
            // What left the process group is still in the task's cgroup.
            p.kill_cgroup();
        }
        for p in procs {
            let _ = tokio::time::timeout(KILL_GRACE, p.wait()).await;
        }
    }

    pub async fn signal_task(&self, id: &str, signal: String) -> Result<(), DriverError> {
        let task = self.task(id)?;
        crate::caps::process::parse_signal(&signal).map_err(DriverError::InvalidRequest)?;
        let v = self.version_of(&task);
        let config = self.config(&v).await?;
        let tref = task_ref(&task);
        self.call_on(&v, "signal-task", Some(task_context(&task)), move |g, s| {
            g.call_signal_task(s, &config, &tref, &signal)
        })
        .await?
        .map_err(|e| self.refused("signal-task", e))
    }

    /// The host command that runs `argv` inside the task, as the guest
    /// decides it, checked against the grants.
    pub async fn exec_command(
        &self,
        id: &str,
        argv: Vec<String>,
    ) -> Result<std::process::Command, DriverError> {
        let task = self.task(id)?;
        if argv.is_empty() {
            return Err(DriverError::InvalidRequest(
                "exec: the command is empty".into(),
            ));
        }
        let v = self.version_of(&task);
        let config = self.config(&v).await?;
        let tref = task_ref(&task);
        let cmd = self
            .call_on(
                &v,
                "exec-command",
                Some(task_context(&task)),
                move |g, s| g.call_exec_command(s, &config, &tref, &argv),
            )
            .await?
            .map_err(|e| self.refused("exec-command", e))?;
        crate::caps::process::build_command(&self.host, &cmd).map_err(|e| {
            use crate::runtime::bindings::nomad::driver::process::ProcessError as P;
            match e {
                P::NotGranted(m) => DriverError::NotGranted(m),
                P::NotFound(m) => DriverError::InvalidRequest(m),
                P::Failed(m) => DriverError::Host(m),
            }
        })
    }

    /// Runs `argv` inside the task to completion (script checks), capturing
    /// its output. A zero timeout means no limit.
    pub async fn exec_task(
        &self,
        id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<u8>, TaskResult), DriverError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut cmd = self.exec_command(id, argv).await?;
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let limit = if timeout.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            timeout
        };
        let out = tokio::task::spawn_blocking(move || {
            crate::caps::process::run_to_completion(cmd, &program, limit)
        })
        .await
        .map_err(|e| DriverError::Host(format!("exec was lost: {e}")))?
        .map_err(|e| DriverError::Host(format!("exec: {e:?}")))?;
        Ok((
            out.stdout,
            out.stderr,
            TaskResult {
                exit_code: out.status.code,
                signal: out.status.signal,
                oom_killed: out.status.oom_killed,
                err: None,
            },
        ))
    }

    /// Removes the task and everything the host and guest hold for it.
    /// Unknown ids succeed: Nomad may destroy twice.
    pub async fn destroy_task(&self, id: &str, force: bool) -> Result<(), DriverError> {
        use std::sync::atomic::Ordering;
        let Some(task) = self.tasks.get(id) else {
            tracing::debug!(task_id = id, "destroy of an unknown task: nothing to do");
            return Ok(());
        };
        if task.detached.load(Ordering::Acquire) {
            // Another allocation manages the instance now: forget it here,
            // without the guest's destroy-task (which would delete it).
            self.tasks.remove(id);
            self.host.forget_task_events(id);
            tracing::info!(task_id = id, "detached task forgotten");
            return Ok(());
        }
        if task.exit().is_none() {
            if !force {
                return Err(DriverError::InvalidRequest(format!(
                    "task {id} is still running: stop it first or destroy with force"
                )));
            }
            if task.main_process.is_none() {
                // Nothing of the task runs here (e.g. a remote instance):
                // its kill is the guest's SIGKILL, without which it would
                // outlive the task.
                if let Err(e) = self.guest_kill(&task).await {
                    tracing::warn!(task_id = id, error = %e, "guest could not kill the task it destroys");
                }
            }
            self.kill_processes(id).await;
            task.set_exit(TaskResult {
                exit_code: 137,
                signal: 9,
                ..Default::default()
            });
        }
        let v = self.version_of(&task);
        let config = self.config(&v).await?;
        let tref = task_ref(&task);
        self.call_on(
            &v,
            "destroy-task",
            Some(task_context(&task)),
            move |g, s| g.call_destroy_task(s, &config, &tref),
        )
        .await?
        .map_err(|e| self.refused("destroy-task", e))?;
        self.tasks.remove(id);
        self.host.processes.remove_task(id);
        self.host.forget_task_events(id);
        tracing::info!(task_id = id, "task destroyed");
        Ok(())
    }

    /// Re-adopts a task from its handle after a host restart: its
    /// supervised processes are found from their records and watched again.
    /// A task that ended meanwhile reports its recorded exit. Recovering a
    /// task this host already knows is a no-op. Nothing is ever restarted.
    pub async fn recover_task(
        self: &Arc<Self>,
        config: nomad_plugin_proto::drivers::TaskConfig,
        driver_state: &[u8],
    ) -> Result<(), DriverError> {
        let id = config.id.clone();
        if self.tasks.contains(&id) {
            return Ok(());
        }
        let state = HandleState::decode(driver_state).map_err(DriverError::InvalidRequest)?;
        if state.version != crate::tasks::HANDLE_VERSION {
            return Err(DriverError::InvalidRequest(format!(
                "task {id}: handle version {} is not one this host reads (it writes {})",
                state.version,
                crate::tasks::HANDLE_VERSION
            )));
        }
        // The task keeps the build it started with if this process has it,
        // or the compile cache does.
        let known = self
            .versions
            .lock()
            .ok()
            .and_then(|m| m.get(&state.guest_sha256).cloned());
        let known = match known {
            Some(v) => Some(v),
            None => self.earlier_build(&state.guest_sha256).await,
        };
        let v = known.unwrap_or_else(|| {
            let now = self.current();
            tracing::warn!(task_id = %id, was = %state.guest_sha256, now = %now.sha256(), "task was started by another build of the guest; the current one serves it");
            now
        });
        let procs = &self.host.processes;
        let mut adopted = Vec::new();
        for p in state.processes.iter().chain(state.main_process.iter()) {
            let proc = procs
                .adopt(p, Some(id.clone()))
                .map_err(|e| DriverError::Host(format!("cannot recover task {id}: {e}")))?;
            adopted.push(proc);
        }
        let main = state
            .main_process
            .as_ref()
            .and_then(|m| adopted.iter().find(|p| &p.id == m).cloned());
        let task = Arc::new(
            Task::new(
                id.clone(),
                config.name.clone(),
                config.alloc_id.clone(),
                state.guest_state,
                state.main_process,
                config,
            )
            .with_started_at(state.started_at_unix_ns)
            .with_guest_sha256(v.sha256().to_owned()),
        );
        if !self.tasks.insert(task.clone()) {
            return Ok(()); // recovered concurrently
        }
        let driver = self.clone();
        let watched = task.clone();
        match main {
            Some(main) => tokio::spawn(async move { driver.watch_exit(watched, main).await }),
            None => tokio::spawn(async move { driver.follow(watched).await }),
        };
        tracing::info!(task_id = %id, "task recovered");
        Ok(())
    }
}

fn task_ref(task: &Task) -> wit::TaskRef {
    wit::TaskRef {
        id: task.id.clone(),
        name: task.name.clone(),
        alloc_id: task.alloc_id.clone(),
        driver_state: task.guest_state.clone(),
        main_process: task.main_process.clone(),
    }
}

fn task_context(task: &Task) -> TaskContext {
    TaskContext {
        id: task.id.clone(),
        name: task.name.clone(),
        alloc_id: task.alloc_id.clone(),
        alloc_dir: task.handle_config.alloc_dir.clone(),
        stdout_path: task.handle_config.stdout_path.clone(),
        stderr_path: task.handle_config.stderr_path.clone(),
        spawned: Vec::new(),
    }
}
