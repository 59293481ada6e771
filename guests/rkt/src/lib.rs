//! The rkt task driver (hashicorp/nomad-driver-rkt) as a WebAssembly guest.
//!
//! rkt is abandoned upstream; this guest keeps the Go driver's behaviour
//! for those who still run it. Everything runs through the host's generic
//! process capability with the operator's grant for the `rkt` binary:
//! optional `rkt trust`, `rkt prepare` (prints the pod UUID), then `rkt
//! run-prepared <uuid>` as the task's main process, which the host
//! supervises (stop, signals and stats act on that process tree, as the Go
//! driver's executor did). Exec is `rkt enter <uuid> <command...>`.
//!
//! Every failing rkt command's stderr becomes a Nomad task event and part
//! of the error. The plan (which flags, in which order) is pure code in
//! [`plan`].

pub mod plan;

use nomad_driver_sdk::host::log;
use nomad_driver_sdk::host::process::{self, Command, Limits, Output, RunOutput, SpawnSpec};
use nomad_driver_sdk::schema::Schema;
use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, FingerprintReport,
    FsIsolation, Health, NomadConfig, PluginInfo, Spec, TaskConfig, TaskRef, TaskStarted,
};
use serde::{Deserialize, Serialize};

use plan::{PluginConfig, RKT_PATH_ENV};

/// The driver name jobs use: `driver = "rkt"`.
pub const NAME: &str = "rkt";

/// What a running task needs remembered.
#[derive(Debug, Serialize, Deserialize)]
struct TaskState {
    /// The rkt binary, as resolved at start.
    rkt: String,
    /// The pod's UUID from `rkt prepare`.
    uuid: String,
}

/// The rkt driver.
#[derive(Debug)]
pub struct Rkt;

fn rkt_command(rkt: &str, args: Vec<String>) -> Command {
    Command {
        program: rkt.to_owned(),
        args,
        env: vec![("PATH".into(), RKT_PATH_ENV.into())],
        cwd: None,
        user: None,
    }
}

fn error_text(e: DriverError) -> String {
    match e {
        DriverError::InvalidConfig(m)
        | DriverError::Temporary(m)
        | DriverError::Fatal(m)
        | DriverError::Unsupported(m) => m,
    }
}

/// Runs one rkt command to completion; a failure is reported as a task
/// event carrying rkt's stderr (when `event`) and returned as the text.
fn run_rkt(
    rkt: &str,
    args: Vec<String>,
    timeout_ms: u32,
    event: bool,
) -> Result<RunOutput, String> {
    let shown = plan::display_args(&args);
    let msg = match process::run(&rkt_command(rkt, args), timeout_ms) {
        Ok(out) if out.status.code == 0 && out.status.signal == 0 => return Ok(out),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let how = if out.status.signal != 0 {
                format!("was killed by signal {}", out.status.signal)
            } else {
                format!("exited with {}", out.status.code)
            };
            let detail = [stderr.as_str(), stdout.as_str()]
                .into_iter()
                .find(|d| !d.is_empty())
                .unwrap_or("(no output)")
                .to_owned();
            let msg = format!("`{shown}` {how}: {detail}");
            if event {
                log::task_event(
                    &msg,
                    &[
                        ("command".into(), shown.clone()),
                        ("exit_code".into(), out.status.code.to_string()),
                        ("stderr".into(), stderr),
                    ],
                );
            }
            msg
        }
        Err(e) => {
            let msg = format!(
                "`{shown}` could not run: {}",
                error_text(nomad_driver_sdk::process_error(e))
            );
            if event {
                log::task_event(&msg, &[("command".into(), shown.clone())]);
            }
            msg
        }
    };
    log::log(log::Level::Warn, &msg, &[]);
    Err(msg)
}

fn report(
    health: Health,
    description: impl Into<String>,
    attributes: Vec<Attribute>,
) -> FingerprintReport {
    FingerprintReport {
        health,
        description: description.into(),
        attributes,
    }
}

fn attr(key: &str, value: AttributeValue) -> Attribute {
    Attribute {
        key: key.into(),
        value,
        unit: String::new(),
    }
}

impl Driver for Rkt {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn config_schema() -> Option<Spec> {
        Some(Schema::object([("volumes_enabled", Schema::attr("bool").or_default("true"))]).build())
    }

    fn task_config_schema() -> Spec {
        Schema::object([
            ("image", Schema::required("string")),
            ("command", Schema::attr("string")),
            ("args", Schema::attr("list(string)")),
            ("trust_prefix", Schema::attr("string")),
            ("dns_servers", Schema::attr("list(string)")),
            ("dns_search_domains", Schema::attr("list(string)")),
            ("net", Schema::attr("list(string)")),
            ("port_map", Schema::attr("any")),
            ("volumes", Schema::attr("list(string)")),
            ("insecure_options", Schema::attr("list(string)")),
            ("no_overlay", Schema::attr("bool")),
            ("debug", Schema::attr("bool")),
            ("group", Schema::attr("string")),
        ])
        .build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: true,
            exec: true,
            fs_isolation: FsIsolation::Image,
            network_modes: vec![],
            must_create_network: false,
            mounts: true,
            remote_tasks: false,
            disable_log_collection: false,
        }
    }

    fn set_config(msgpack: Vec<u8>, _nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        let cfg = plan::decode_plugin(&msgpack)?;
        serde_json::to_vec(&cfg).map_err(|e| DriverError::Fatal(format!("encoding config: {e}")))
    }

    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        let cfg: PluginConfig = serde_json::from_slice(&config).unwrap_or_default();
        let Some(rkt) = process::lookup_path("rkt") else {
            return report(
                Health::Undetected,
                "rkt was not found on the host's PATH",
                vec![],
            );
        };
        let out = match run_rkt(&rkt, vec!["version".into()], 10_000, false) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(m) => return report(Health::Undetected, m, vec![]),
        };
        let Some((version, appc)) = plan::parse_versions(&out) else {
            return report(
                Health::Undetected,
                format!(
                    "cannot read rkt's version from `rkt version`: {:?}",
                    out.trim()
                ),
                vec![],
            );
        };
        let (a, b, c) = plan::MIN_VERSION;
        match plan::semver(&version) {
            Some(v) if v >= plan::MIN_VERSION => {}
            _ => {
                return report(
                    Health::Undetected,
                    format!(
                        "unsupported rkt version {version}; the driver needs {a}.{b}.{c} or later"
                    ),
                    vec![],
                );
            }
        }
        let mut attrs = vec![
            attr("driver.rkt", AttributeValue::Boolean(true)),
            attr("driver.rkt.version", AttributeValue::Text(version)),
            attr("driver.rkt.appc.version", AttributeValue::Text(appc)),
        ];
        if cfg.volumes_enabled {
            attrs.push(attr(
                "driver.rkt.volumes.enabled",
                AttributeValue::Boolean(true),
            ));
        }
        report(Health::Healthy, "ready", attrs)
    }

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let cfg: PluginConfig = serde_json::from_slice(&config).unwrap_or_default();
        let conf = plan::decode_task(&task.driver_config)?;
        let p = plan::plan(&conf, &task, &cfg)?;
        let rkt = process::lookup_path("rkt").ok_or_else(|| {
            DriverError::Fatal("rkt was not found on the host's PATH (grant it with --allow-exec /usr/local/bin/rkt)".into())
        })?;
        if let Some(trust) = &p.trust {
            run_rkt(&rkt, trust.clone(), plan::PREPARE_TIMEOUT_MS, true)
                .map_err(DriverError::Temporary)?;
        }
        let out = run_rkt(&rkt, p.prepare.clone(), plan::PREPARE_TIMEOUT_MS, true)
            .map_err(DriverError::Temporary)?;
        let uuid = plan::parse_uuid(&String::from_utf8_lossy(&out.stdout)).map_err(|m| {
            log::task_event(&m, &[]);
            DriverError::Temporary(m)
        })?;
        let run = p.run_prepared_for(&uuid);
        let spec = SpawnSpec {
            command: rkt_command(&rkt, run.clone()),
            stdout: Output::TaskStdout,
            stderr: Output::TaskStderr,
            // As the Go driver's executor with ResourceLimits: the pod runs
            // inside the host's cgroup for the task.
            limits: Some(Limits {
                memory_max_bytes: task.resources.memory_limit_bytes.max(0) as u64,
                cpu_shares: task.resources.cpu_shares.max(0) as u64,
            }),
        };
        let id = process::spawn(&spec).map_err(|e| {
            let msg = format!(
                "`{}` could not start: {}",
                plan::display_args(&run),
                error_text(nomad_driver_sdk::process_error(e))
            );
            log::task_event(&msg, &[]);
            DriverError::Temporary(msg)
        })?;
        let st = TaskState { rkt, uuid };
        Ok(TaskStarted {
            driver_state: serde_json::to_vec(&st)
                .map_err(|e| DriverError::Fatal(format!("encoding task state: {e}")))?,
            main_process: Some(id),
            network_override: None,
        })
    }

    fn exec_command(
        _config: Vec<u8>,
        task: TaskRef,
        command: Vec<String>,
    ) -> Result<Command, DriverError> {
        if command.is_empty() {
            return Err(DriverError::InvalidConfig(
                "exec: the command is empty".into(),
            ));
        }
        let st: TaskState = serde_json::from_slice(&task.driver_state).map_err(|e| {
            DriverError::Fatal(format!("the task's driver state is unreadable: {e}"))
        })?;
        Ok(rkt_command(&st.rkt, plan::enter_args(&st.uuid, &command)))
    }
}

// Exported only for wasm: a native build (for unit tests) has no host.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Rkt);

#[cfg(test)]
mod tests;
