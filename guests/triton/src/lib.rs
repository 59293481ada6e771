//! The Triton task driver (CloudAPI machines and sdc-docker containers) as
//! a WebAssembly guest.
//!
//! This first version holds the whole configuration surface ([`config`]:
//! schemas, decoding, every rejection) and the request plan ([`plan`]:
//! config to the exact CloudAPI/sdc-docker requests, list answers to
//! uuids, instance states to task phases). The lifecycle that sends the
//! plan through the host's signed `http` capability is NOT built yet:
//! `start-task` validates the job config fully and then refuses with
//! `unsupported`, saying so, rather than pretending to start anything.

pub mod config;
pub mod plan;

use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, FingerprintReport,
    FsIsolation, Health, NomadConfig, PluginInfo, Spec, TaskConfig, TaskStarted,
};

use config::{PluginConf, TaskConf};

/// The driver name jobs use: `driver = "triton"`.
pub const NAME: &str = "triton";

/// The Triton driver.
#[derive(Debug)]
pub struct Triton;

impl Driver for Triton {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn config_schema() -> Option<Spec> {
        Some(config::plugin_schema().build())
    }

    fn task_config_schema() -> Spec {
        config::task_schema().build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: false,
            exec: false,
            fs_isolation: FsIsolation::Image,
            network_modes: vec![],
            must_create_network: false,
            mounts: false,
            remote_tasks: true,
            disable_log_collection: true,
        }
    }

    fn set_config(msgpack: Vec<u8>, _nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        let conf = PluginConf::decode(&msgpack)?;
        serde_json::to_vec(&conf)
            .map_err(|e| DriverError::Fatal(format!("cannot keep the plugin config: {e}")))
    }

    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        let conf: PluginConf = serde_json::from_slice(&config).unwrap_or_default();
        let configured = conf.cloudapi_url.is_some() || conf.docker_url.is_some();
        FingerprintReport {
            health: Health::Undetected,
            description: if configured {
                "the Triton lifecycle is not built yet in this guest version".into()
            } else {
                "no cloudapi_url or docker_url in the plugin config".into()
            },
            attributes: vec![Attribute {
                key: format!("driver.{NAME}.lifecycle"),
                value: AttributeValue::Boolean(false),
                unit: String::new(),
            }],
        }
    }

    fn start_task(_config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let conf = TaskConf::decode(&task.driver_config)?;
        Err(DriverError::Unsupported(format!(
            "the Triton driver's {} lifecycle is not built yet in this guest version (config accepted)",
            conf.api_type
        )))
    }
}

// Exported only for wasm: a native build (for tests) has no host.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Triton);
