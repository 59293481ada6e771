//! A driver guest that misbehaves on purpose, for the host's fault tests.
//! The task config's `mode` picks the fault: `loop` (never returns),
//! `trap` (panics), `oom` (allocates without bound), `bad-main` (names a
//! main process it never spawned) or `ok` (starts a task with no process).

use nomad_driver_sdk::schema::Schema;
use nomad_driver_sdk::{
    Driver, DriverCapabilities, DriverError, FingerprintReport, FsIsolation, Health, NomadConfig,
    PluginInfo, Spec, TaskConfig, TaskStarted, config_error, cty,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct TaskConf {
    mode: String,
}

/// The faulty driver.
#[derive(Debug)]
pub struct Misbehave;

impl Driver for Misbehave {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "misbehave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn task_config_schema() -> Spec {
        Schema::object([("mode", Schema::required("string"))]).build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: false,
            exec: false,
            fs_isolation: FsIsolation::None,
            network_modes: vec![],
            must_create_network: false,
            mounts: false,
            remote_tasks: false,
            disable_log_collection: false,
        }
    }

    fn set_config(_msgpack: Vec<u8>, _nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        Ok(Vec::new())
    }

    fn fingerprint(_config: Vec<u8>) -> FingerprintReport {
        FingerprintReport {
            health: Health::Healthy,
            description: "misbehaving on request".into(),
            attributes: vec![],
        }
    }

    fn start_task(_config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let conf: TaskConf = cty::from_slice(&task.driver_config).map_err(config_error)?;
        match conf.mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("deliberate trap in start-task"),
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "bad-main" => Ok(TaskStarted {
                driver_state: vec![],
                main_process: Some("never-spawned".into()),
                network_override: None,
            }),
            "ok" => Ok(TaskStarted {
                driver_state: vec![],
                main_process: None,
                network_override: None,
            }),
            other => Err(DriverError::InvalidConfig(format!(
                "field \"mode\": unknown mode {other:?}"
            ))),
        }
    }
}

#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Misbehave);
