//! The guest SDK: write a Nomad task driver as a WebAssembly component.
//!
//! A driver implements [`Driver`] (only what differs from the defaults) and
//! exports it with [`export_driver!`]:
//!
//! ```ignore
//! struct Hello;
//! impl nomad_driver_sdk::Driver for Hello { /* info, schemas, start_task, ... */ }
//! nomad_driver_sdk::export_driver!(Hello);
//! ```
//!
//! - [`cty`] decodes Nomad's cty-msgpack config bytes straight into serde
//!   types (numbers may arrive as int, float or string; nulls are "unset").
//! - [`schema`] builds the hclspec schemas Nomad uses to validate job
//!   configs, flattened for the WIT boundary.
//! - [`host`] re-exports the host capabilities (process, log, clock).
//!
//! The host calls every function on a fresh instance: keep nothing in
//! statics. What a driver must remember goes into the bytes it returns
//! from `set_config` and in `TaskStarted::driver_state`.

extern crate self as nomad_driver_sdk;

pub mod cty;
pub mod schema;

#[doc(hidden)]
pub use wit_bindgen;

/// The generated bindings for the `nomad:driver` world.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "driver-guest",
        pub_export_macro: true,
        export_macro_name: "export_driver",
        default_bindings_module: "::nomad_driver_sdk::bindings",
        runtime_path: "::nomad_driver_sdk::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::export_driver;
pub use bindings::nomad::driver::types::{
    Attribute, AttributeValue, DriverCapabilities, DriverError, ExitResult, ExitStatus,
    FingerprintReport, FsIsolation, Health, NetworkMode, NetworkOverride, NomadConfig, PluginInfo,
    Spec, TaskConfig, TaskPoll, TaskRef, TaskRunning, TaskStarted, TaskUsage,
};

/// Host capabilities, as the guest imports them.
pub mod host {
    pub use crate::bindings::nomad::driver::clock;
    pub use crate::bindings::nomad::driver::env;
    pub use crate::bindings::nomad::driver::fs;
    pub use crate::bindings::nomad::driver::http;
    pub use crate::bindings::nomad::driver::log;
    pub use crate::bindings::nomad::driver::process;
}

/// The signal a stop uses when Nomad's job names none (Nomad's own
/// drivers use SIGINT).
pub const DEFAULT_STOP_SIGNAL: &str = "SIGINT";

/// A Nomad task driver. Required: identity, schemas, capabilities, config,
/// fingerprint and start; the rest have the defaults a process-based driver
/// wants.
pub trait Driver {
    fn info() -> PluginInfo;

    /// The agent config schema; `None` means the driver takes no config.
    fn config_schema() -> Option<Spec> {
        None
    }

    fn task_config_schema() -> Spec;

    fn capabilities() -> DriverCapabilities;

    /// Validates the agent config; the bytes returned come back as `config`.
    fn set_config(msgpack: Vec<u8>, nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError>;

    fn fingerprint(config: Vec<u8>) -> FingerprintReport;

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError>;

    /// What the main process's exit means; by default, exactly what it was.
    fn task_exited(_config: Vec<u8>, _task: TaskRef, status: ExitStatus) -> ExitResult {
        ExitResult {
            exit_code: status.code,
            signal: status.signal,
            oom_killed: status.oom_killed,
            err: None,
        }
    }

    /// Sends the stop signal (default SIGINT) to the main process's group.
    /// `timeout_ms` is the job's kill timeout; the host kills what is left
    /// once it has passed, so the default does not need it.
    fn stop_task(
        config: Vec<u8>,
        task: TaskRef,
        signal: String,
        _timeout_ms: u32,
    ) -> Result<(), DriverError> {
        let signal = if signal.is_empty() {
            DEFAULT_STOP_SIGNAL.to_owned()
        } else {
            signal
        };
        Self::signal_task(config, task, signal)
    }

    /// Sends a signal to the main process's group.
    fn signal_task(_config: Vec<u8>, task: TaskRef, signal: String) -> Result<(), DriverError> {
        let Some(main) = task.main_process else {
            return Err(DriverError::Unsupported(
                "this task has no process to signal".into(),
            ));
        };
        host::process::signal(&main, &signal).map_err(process_error)
    }

    /// No exec by default.
    fn exec_command(
        _config: Vec<u8>,
        _task: TaskRef,
        _command: Vec<String>,
    ) -> Result<host::process::Command, DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not run commands inside its tasks".into(),
        ))
    }

    /// Follows a task without a main process (see the WIT docs); by default
    /// unsupported: such a task then ends only when stopped. A running
    /// answer may carry the task's network override once it is known (see
    /// [`running`]).
    fn poll_task(_config: Vec<u8>, _task: TaskRef) -> Result<TaskPoll, DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not follow tasks without a main process".into(),
        ))
    }

    /// Usage measured by the driver itself; by default none, and the host
    /// measures the task's supervised processes.
    fn task_stats(_config: Vec<u8>, _task: TaskRef) -> Result<Option<TaskUsage>, DriverError> {
        Ok(None)
    }

    /// Nothing to release beyond the host's own processes by default.
    fn destroy_task(_config: Vec<u8>, _task: TaskRef) -> Result<(), DriverError> {
        Ok(())
    }
}

/// A `poll-task` answer: still running, poll again after `delay_ms`, with
/// the task's addressing if it is now known (e.g. a machine's IP once it
/// is up; none keeps what was reported before).
pub fn running(delay_ms: u32, network_override: Option<NetworkOverride>) -> TaskPoll {
    TaskPoll::Running(TaskRunning {
        delay_ms,
        network_override,
    })
}

/// A host process error as a driver error: a missing grant or program can
/// not be fixed by retrying; other failures may be.
pub fn process_error(e: host::process::ProcessError) -> DriverError {
    use host::process::ProcessError as P;
    match e {
        P::NotGranted(m) => DriverError::Fatal(m),
        P::NotFound(m) => DriverError::Fatal(m),
        P::Failed(m) => DriverError::Temporary(m),
    }
}

/// A config decoding error as an invalid-config driver error.
pub fn config_error(e: cty::Error) -> DriverError {
    DriverError::InvalidConfig(e.to_string())
}

impl<T: Driver> bindings::exports::nomad::driver::driver::Guest for T {
    fn info() -> PluginInfo {
        T::info()
    }
    fn config_schema() -> Option<Spec> {
        T::config_schema()
    }
    fn task_config_schema() -> Spec {
        T::task_config_schema()
    }
    fn capabilities() -> DriverCapabilities {
        T::capabilities()
    }
    fn set_config(msgpack: Vec<u8>, nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        T::set_config(msgpack, nomad)
    }
    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        T::fingerprint(config)
    }
    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        T::start_task(config, task)
    }
    fn task_exited(config: Vec<u8>, task: TaskRef, status: ExitStatus) -> ExitResult {
        T::task_exited(config, task, status)
    }
    fn stop_task(
        config: Vec<u8>,
        task: TaskRef,
        signal: String,
        timeout_ms: u32,
    ) -> Result<(), DriverError> {
        T::stop_task(config, task, signal, timeout_ms)
    }
    fn signal_task(config: Vec<u8>, task: TaskRef, signal: String) -> Result<(), DriverError> {
        T::signal_task(config, task, signal)
    }
    fn exec_command(
        config: Vec<u8>,
        task: TaskRef,
        command: Vec<String>,
    ) -> Result<host::process::Command, DriverError> {
        T::exec_command(config, task, command)
    }
    fn poll_task(config: Vec<u8>, task: TaskRef) -> Result<TaskPoll, DriverError> {
        T::poll_task(config, task)
    }
    fn task_stats(config: Vec<u8>, task: TaskRef) -> Result<Option<TaskUsage>, DriverError> {
        T::task_stats(config, task)
    }
    fn destroy_task(config: Vec<u8>, task: TaskRef) -> Result<(), DriverError> {
        T::destroy_task(config, task)
    }
}
