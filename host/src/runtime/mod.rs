//! The guest runtime: one wasmtime [`Engine`], the guest component loaded
//! and linked once into an `InstancePre`, and a fresh instance per call.
//!
//! Lifecycle contract:
//! - Loading never happens on a request path. [`Guest::load`] compiles the
//!   component ahead of time (or reuses a precompiled artifact from the
//!   on-disk cache, keyed by the component's sha256 and the engine), links
//!   it against the host's imports, and type-checks it against the
//!   `driver-guest` world. A component that does not implement the world is
//!   refused here, with wasmtime's reason.
//! - Every call gets a new `Store` and instance: a guest keeps no memory
//!   between calls, so a trap or a runaway call cannot leave state behind
//!   that poisons the next one.
//! - Every call is bounded: an epoch deadline on the guest's own compute
//!   time (time spent inside host imports does not count; those have their
//!   own timeouts) and a cap on its linear memory. Breaking either becomes a
//!   [`GuestError`] naming the guest and the call; the host keeps serving.

pub mod bindings;
mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::caps::{HostContext, TaskContext};
use bindings::exports::nomad::driver::driver::Guest as DriverExports;
use bindings::{DriverGuest, DriverGuestPre};

/// How often the epoch ticker advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Guest calls that run at once, in this process. The engine's pooling
/// allocator has a slot for each (memories, tables and instances are
/// reused, not mapped per call); a call beyond this waits for a slot rather
/// than failing to instantiate.
pub const CONCURRENT_CALLS: u32 = 32;

/// Bytes of guest stderr kept per call (panic messages end up here).
const GUEST_STDERR_CAP: usize = 16 * 1024;

/// Limits applied to every guest call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Guest compute time allowed per call.
    pub deadline: Duration,
    /// Maximum linear memory of the instance, in bytes.
    pub max_memory: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            deadline: Duration::from_secs(5),
            max_memory: 64 << 20,
        }
    }
}

/// Why loading a guest failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read guest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotAComponent { path: PathBuf, reason: String },
    #[error(
        "guest {path} does not implement the world nomad:driver/driver-guest@0.1.0 \
         that this host serves: {reason}"
    )]
    WrongWorld { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Pinned { path: PathBuf, reason: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// Why a guest call failed (as opposed to the guest returning an error
/// value, which is an ordinary result of the call).
#[derive(Debug, thiserror::Error)]
#[error("guest {guest} failed in {call}: {kind}")]
pub struct GuestError {
    /// The guest's file name.
    pub guest: String,
    /// The exported function, e.g. `start-task`.
    pub call: &'static str,
    pub kind: GuestFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestFailure {
    #[error("it ran longer than its {0:?} deadline and was stopped")]
    Timeout(Duration),
    #[error("it tried to grow its memory past the {0} byte limit")]
    OutOfMemory(usize),
    #[error("it trapped: {0}")]
    Trap(String),
    #[error("could not instantiate it: {0}")]
    Instantiate(String),
}

/// Per-call host state: the data of one `Store`.
pub struct CallState {
    pub(crate) host: Arc<HostContext>,
    pub(crate) task: Option<TaskContext>,
    /// Time spent blocked inside host imports during this call; it is not
    /// charged to the guest's deadline.
    pub(crate) host_time: Duration,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState")
            .field("guest", &self.host.guest)
            .field("task", &self.task)
            .field("host_time", &self.host_time)
            .finish_non_exhaustive()
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CallState {
    /// Runs a blocking host operation, keeping its time off the guest's
    /// deadline.
    pub(crate) fn blocking<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let start = Instant::now();
        let r = f(self);
        self.host_time += start.elapsed();
        r
    }
}

/// A loaded guest, ready to be called.
pub struct Guest {
    engine: Engine,
    pre: DriverGuestPre<CallState>,
    host: Arc<HostContext>,
    limits: CallLimits,
    label: String,
    sha256: String,
    /// Where precompiled builds are cached: earlier builds of this guest are
    /// found there by sha256 (see [`Guest::load_cached_build`]).
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("label", &self.label)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Builds the engine every guest in this process shares.
pub fn engine() -> Result<Engine, LoadError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Sized for components of several core modules (a Rust guest has a
    // handful; an interpreter-based one such as componentize-py's has more
    // and larger tables). Address space is reserved per slot up front;
    // memory is committed only as guests touch it and returned after.
    let n = CONCURRENT_CALLS;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n * 32)
        .max_core_instances_per_component(32)
        .total_memories(n * 4)
        .max_memories_per_component(4)
        .total_tables(n * 16)
        .max_tables_per_component(16)
        .table_elements(200_000)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        .max_unused_warm_slots(n)
        // Calls are synchronous: no fiber stacks are needed, and each one
        // reserved costs an mprotect at engine creation (the default of
        // 1000 added ~3 ms to every host launch).
        .total_stacks(1);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch ticker; guest deadlines will not fire");
    }
}

impl Guest {
    /// Loads, precompiles (or reuses the cached artifact) and links the
    /// guest at `path`.
    pub fn load(
        engine: &Engine,
        path: &Path,
        cache_dir: Option<&Path>,
        host: Arc<HostContext>,
        limits: CallLimits,
    ) -> Result<Guest, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // A pinned guest is checked before anything of it is compiled.
        let sha = cache::sha256_hex(&bytes);
        host.grants
            .check_sha256(&sha)
            .map_err(|reason| LoadError::Pinned {
                path: path.to_path_buf(),
                reason,
            })?;
        let loaded = cache::load_component(engine, path, &bytes, cache_dir)?;
        let pre = link(engine, &loaded.component, path)?;

        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        tracing::info!(
            guest = %label,
            sha256 = %loaded.sha256,
            source = loaded.source.as_str(),
            "guest loaded"
        );
        Ok(Guest {
            engine: engine.clone(),
            pre,
            host,
            limits,
            label,
            sha256: loaded.sha256,
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    /// An earlier build of this guest, by sha256, from the compile cache:
    /// a task recovered after a restart keeps the build it started with
    /// even when the `.wasm` has since been replaced. `None` when the cache
    /// does not hold it (or a sha256 pin forbids it).
    pub fn load_cached_build(&self, sha256: &str) -> Option<Guest> {
        let dir = self.cache_dir.as_deref()?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if let Err(reason) = self.host.grants.check_sha256(sha256) {
            tracing::warn!(guest = %self.label, build = sha256, %reason, "not loading an earlier build");
            return None;
        }
        let file = dir.join(cache::artifact_name(&self.engine, sha256));
        let artifact = std::fs::read(&file).ok()?;
        let loaded = cache::deserialize(&self.engine, &artifact)
            .map_err(|e| LoadError::NotAComponent {
                path: file.clone(),
                reason: e,
            })
            .and_then(|component| link(&self.engine, &component, &file));
        match loaded {
            Ok(pre) => {
                tracing::info!(guest = %self.label, build = sha256, "loaded an earlier build from the cache");
                Some(Guest {
                    engine: self.engine.clone(),
                    pre,
                    host: self.host.clone(),
                    limits: self.limits,
                    label: format!("{} (build {})", self.label, &sha256[..12]),
                    sha256: sha256.to_owned(),
                    cache_dir: self.cache_dir.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(guest = %self.label, build = sha256, error = %e, "cached earlier build is unusable");
                None
            }
        }
    }

    /// The guest's file name, used in logs and errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The sha256 of the guest's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The shared host context the guest's imports act on.
    pub fn host(&self) -> &Arc<HostContext> {
        &self.host
    }

    /// Calls one export on a fresh instance.
    ///
    /// `task` scopes the call to a task (its FIFOs, its events). `f` gets the
    /// guest's exports and the store and makes the actual call.
    pub fn call<R>(
        &self,
        call: &'static str,
        task: Option<TaskContext>,
        f: impl FnOnce(&DriverExports, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        let fail = |kind| GuestError {
            guest: self.label.clone(),
            call,
            kind,
        };
        let stderr = MemoryOutputPipe::new(GUEST_STDERR_CAP);
        let state = CallState {
            host: self.host.clone(),
            task,
            host_time: Duration::ZERO,
            wasi: wasmtime_wasi::WasiCtxBuilder::new()
                .stderr(stderr.clone())
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.max_memory)
                .trap_on_grow_failure(true)
                .build(),
        };
        let _slot = CALL_SLOTS.acquire();
        // A trace-level span over the whole call, the instance's teardown
        // included (declared before the store, so it ends after the store is
        // dropped). Off unless a subscriber enables trace; it changes nothing
        // the call does. Tests use it to attribute what happens on this
        // thread, such as the guest's memory being freed, to the call
        // (guests/triton/tests/key_memory.rs).
        let _span = tracing::trace_span!("guest call", guest = %self.label, call).entered();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        arm_deadline(&mut store, self.limits.deadline);

        let result = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &self.limits, true))
            .and_then(|guest| {
                f(guest.nomad_driver_driver(), &mut store)
                    .map_err(|e| classify(e, &self.limits, false))
            });
        let output = stderr.contents();
        if !output.is_empty() {
            tracing::debug!(guest = %self.label, call, stderr = %String::from_utf8_lossy(&output), "guest wrote to stderr");
        }
        result
            .map_err(|kind| match kind {
                GuestFailure::Trap(msg) if !output.is_empty() => GuestFailure::Trap(format!(
                    "{msg} (guest stderr: {})",
                    String::from_utf8_lossy(&output).trim()
                )),
                other => other,
            })
            .map_err(fail)
    }
}

/// Links a component against WASI and the host's imports, checking it
/// implements the world.
fn link(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<DriverGuestPre<CallState>, LoadError> {
    let linker = linker_for(engine)?;
    let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    };
    let instance_pre = linker.instantiate_pre(component).map_err(wrong_world)?;
    DriverGuestPre::new(instance_pre).map_err(wrong_world)
}

/// The linker with WASI and the host's imports, built once per engine (it
/// holds a few hundred functions; building it was a good part of a load).
/// One slot: a host has one engine; a new engine (tests) replaces it, so an
/// old engine is not kept alive by its linker.
fn linker_for(engine: &Engine) -> Result<Arc<Linker<CallState>>, LoadError> {
    static LINKER: std::sync::Mutex<Option<Arc<Linker<CallState>>>> = std::sync::Mutex::new(None);
    let mut slot = LINKER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = slot.as_ref()
        && Engine::same(l.engine(), engine)
    {
        return Ok(l.clone());
    }
    let mut linker: Linker<CallState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| LoadError::Engine(format!("linking WASI: {e:#}")))?;
    DriverGuest::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(|e| LoadError::Engine(format!("linking host imports: {e:#}")))?;
    let linker = Arc::new(linker);
    *slot = Some(linker.clone());
    Ok(linker)
}

/// Admits at most [`CONCURRENT_CALLS`] guest calls at once in this process.
static CALL_SLOTS: CallSlots = CallSlots {
    used: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

struct CallSlots {
    used: std::sync::Mutex<u32>,
    freed: std::sync::Condvar,
}

struct CallSlot(&'static CallSlots);

impl CallSlots {
    /// Waits for a free slot (calls run on blocking threads).
    fn acquire(&'static self) -> CallSlot {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= CONCURRENT_CALLS {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        CallSlot(self)
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// Arms the epoch deadline so that only guest compute time counts.
fn arm_deadline(store: &mut Store<CallState>, budget: Duration) {
    let ticks = ticks_for(budget);
    let start = Instant::now();
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_callback(move |ctx| {
        let guest_time = start.elapsed().saturating_sub(ctx.data().host_time);
        if guest_time >= budget {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Continue(ticks_for(budget - guest_time)))
        }
    });
}

fn ticks_for(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

fn classify(e: wasmtime::Error, limits: &CallLimits, instantiating: bool) -> GuestFailure {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        match trap {
            Trap::Interrupt => return GuestFailure::Timeout(limits.deadline),
            Trap::AllocationTooLarge => return GuestFailure::OutOfMemory(limits.max_memory),
            _ => {}
        }
    }
    let text = format!("{e:#}");
    // StoreLimits with trap_on_grow_failure reports "forcing trap when
    // growing memory to N bytes".
    if text.contains("growing memory") || (text.contains("memory") && text.contains("limit")) {
        return GuestFailure::OutOfMemory(limits.max_memory);
    }
    if instantiating {
        GuestFailure::Instantiate(text)
    } else {
        GuestFailure::Trap(text)
    }
}
