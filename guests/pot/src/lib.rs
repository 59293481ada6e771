//! The pot task driver (FreeBSD jails, bsdpot/pot) as a WebAssembly guest.
//!
//! Everything runs through the host's generic process capability with the
//! operator's grant for the `pot` binary: `pot prepare`, the per-task
//! set-up commands, `pot start` as the task's main process, and `pot
//! destroy`, `signal`, `exec`, `get-rss`, `last-run-stats` later. The plan
//! (which commands, which flags) is pure code in [`plan`]; this module only
//! runs it and reports failures: every failing pot command's stderr becomes
//! a Nomad task event and part of the error.
//!
//! Fingerprint: pot must be on the host's PATH, the host must be FreeBSD
//! (learned by running the granted `uname -s`; anything else is
//! UNDETECTED), and `pot version` must answer.

pub mod plan;

use nomad_driver_sdk::host::log;
use nomad_driver_sdk::host::process::{self, Command, Output, RunOutput, SpawnSpec};
use nomad_driver_sdk::schema::Schema;
use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, ExitResult, ExitStatus,
    FingerprintReport, FsIsolation, Health, NomadConfig, PluginInfo, Spec, TaskConfig, TaskRef,
    TaskStarted, TaskUsage,
};
use serde::{Deserialize, Serialize};

use plan::{POT_PATH_ENV, PluginConfig};

/// The driver name jobs use: `driver = "pot"`.
pub const NAME: &str = "pot";

/// The exit status `pot start` uses to say "the jail's command ended; ask
/// `pot last-run-stats` for its exit code".
pub const EXIT_SEE_LAST_RUN_STATS: i32 = 125;

/// What a running task needs remembered.
#[derive(Debug, Serialize, Deserialize)]
struct TaskState {
    /// The pot binary, as resolved at start.
    pot: String,
    /// The pot this task runs as.
    pot_name: String,
}

/// The pot driver.
#[derive(Debug)]
pub struct Pot;

fn pot_command(pot: &str, args: Vec<String>) -> Command {
    Command {
        program: pot.to_owned(),
        args,
        env: vec![("PATH".into(), POT_PATH_ENV.into())],
        cwd: None,
        user: None,
    }
}

/// Runs one pot command to completion. A non-zero exit or a refused run is
/// reported as a task event carrying pot's stderr, and returned as the
/// error text.
fn run_pot(
    pot: &str,
    args: Vec<String>,
    timeout_ms: u32,
    event: bool,
) -> Result<RunOutput, String> {
    let shown = plan::display_args(&args);
    let failure = match process::run(&pot_command(pot, args), timeout_ms) {
        Ok(out) if out.status.code == 0 && out.status.signal == 0 => return Ok(out),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let how = if out.status.signal != 0 {
                format!("was killed by signal {}", out.status.signal)
            } else {
                format!("exited with {}", out.status.code)
            };
            let detail = if !stderr.is_empty() {
                stderr.clone()
            } else if !stdout.is_empty() {
                stdout
            } else {
                "(no output)".to_owned()
            };
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
                nomad_driver_sdk::process_error(e).text()
            );
            if event {
                log::task_event(&msg, &[("command".into(), shown.clone())]);
            }
            msg
        }
    };
    log::log(log::Level::Warn, &failure, &[]);
    Err(failure)
}

/// The text inside a driver error.
trait ErrorText {
    fn text(&self) -> String;
}

impl ErrorText for DriverError {
    fn text(&self) -> String {
        match self {
            DriverError::InvalidConfig(m)
            | DriverError::Temporary(m)
            | DriverError::Fatal(m)
            | DriverError::Unsupported(m) => m.clone(),
        }
    }
}

fn state(task: &TaskRef) -> Result<TaskState, DriverError> {
    serde_json::from_slice(&task.driver_state)
        .map_err(|e| DriverError::Fatal(format!("the task's driver state is unreadable: {e}")))
}

/// Destroys the pot if it still exists (`pot ls -q` lists it), so a stop,
/// the task's own exit and Nomad's destroy can each call it.
fn destroy_if_present(st: &TaskState) -> Result<(), String> {
    let listed = run_pot(&st.pot, plan::list_args(), plan::STEP_TIMEOUT_MS, true)?;
    if !plan::pot_listed(&String::from_utf8_lossy(&listed.stdout), &st.pot_name) {
        return Ok(());
    }
    run_pot(
        &st.pot,
        plan::destroy_args(&st.pot_name),
        plan::STEP_TIMEOUT_MS,
        true,
    )
    .map(|_| ())
}

fn text(key: &str, v: &str) -> Attribute {
    Attribute {
        key: key.into(),
        value: AttributeValue::Text(v.into()),
        unit: String::new(),
    }
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

/// The host's kernel name from a granted `uname -s`.
fn host_os() -> Result<String, FingerprintReport> {
    let Some(uname) = process::lookup_path("uname") else {
        return Err(report(
            Health::Undetected,
            "cannot tell the host OS: uname was not found on the host's PATH",
            vec![],
        ));
    };
    let cmd = Command {
        program: uname.clone(),
        args: vec!["-s".into()],
        env: vec![],
        cwd: None,
        user: None,
    };
    match process::run(&cmd, 5_000) {
        Ok(out) if out.status.code == 0 => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Err(report(
            Health::Unhealthy,
            format!(
                "`{uname} -s` exited with {}: {}",
                out.status.code,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            vec![],
        )),
        Err(e) => Err(report(
            Health::Unhealthy,
            format!(
                "cannot tell the host OS: {} (pot needs FreeBSD; the driver runs `{uname} -s` to check)",
                nomad_driver_sdk::process_error(e).text()
            ),
            vec![],
        )),
    }
}

impl Driver for Pot {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn config_schema() -> Option<Spec> {
        Some(Schema::object([("enabled", Schema::attr("bool").or_default("true"))]).build())
    }

    fn task_config_schema() -> Spec {
        Schema::object([
            ("image", Schema::required("string")),
            ("pot", Schema::required("string")),
            ("tag", Schema::required("string")),
            ("command", Schema::attr("string")),
            ("args", Schema::attr("list(string)")),
            ("network_mode", Schema::attr("string")),
            ("port_map", Schema::attr("any")),
            ("copy", Schema::attr("list(string)")),
            ("mount", Schema::attr("list(string)")),
            ("mount_read_only", Schema::attr("list(string)")),
            ("attributes", Schema::attr("list(string)")),
            ("extra_hosts", Schema::attr("list(string)")),
        ])
        .build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: true,
            exec: true,
            // A pot is its own image: Nomad then gives the task jail paths
            // (/local, /secrets) and does not add the agent's environment.
            fs_isolation: FsIsolation::Image,
            network_modes: vec![],
            must_create_network: false,
            mounts: false,
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
        if !cfg.enabled {
            return report(
                Health::Undetected,
                "disabled in the agent config (enabled = false)",
                vec![],
            );
        }
        let Some(pot) = process::lookup_path("pot") else {
            return report(
                Health::Undetected,
                "pot was not found on the host's PATH",
                vec![],
            );
        };
        match host_os() {
            Ok(os) if os == "FreeBSD" => {}
            Ok(os) => {
                return report(
                    Health::Undetected,
                    format!("pot needs FreeBSD jails; this host runs {os}"),
                    vec![],
                );
            }
            Err(r) => return r,
        }
        match run_pot(&pot, vec!["version".into()], 10_000, false) {
            Ok(out) => match plan::parse_version(&String::from_utf8_lossy(&out.stdout)) {
                Some(v) => report(
                    Health::Healthy,
                    "ready",
                    vec![
                        Attribute {
                            key: "driver.pot".into(),
                            value: AttributeValue::Boolean(true),
                            unit: String::new(),
                        },
                        text("driver.pot.version", &v),
                    ],
                ),
                None => report(
                    Health::Unhealthy,
                    format!(
                        "cannot read pot's version from {:?}",
                        String::from_utf8_lossy(&out.stdout).trim()
                    ),
                    vec![],
                ),
            },
            Err(m) => report(Health::Unhealthy, m, vec![]),
        }
    }

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let cfg: PluginConfig = serde_json::from_slice(&config).unwrap_or_default();
        if !cfg.enabled {
            return Err(DriverError::Fatal(
                "the pot driver is disabled (enabled = false)".into(),
            ));
        }
        let conf = plan::decode_task(&task.driver_config)?;
        let p = plan::plan(&conf, &task)?;
        let pot = process::lookup_path("pot").ok_or_else(|| {
            DriverError::Fatal(
                "pot was not found on the host's PATH (install pot and grant it with --allow-exec /usr/local/bin/pot)"
                    .into(),
            )
        })?;
        for w in &p.warnings {
            log::task_event(w, &[]);
        }
        for (i, args) in p.setup.iter().enumerate() {
            let timeout = if i == 0 {
                plan::PREPARE_TIMEOUT_MS
            } else {
                plan::STEP_TIMEOUT_MS
            };
            if let Err(msg) = run_pot(&pot, args.clone(), timeout, true) {
                if i > 0 {
                    // The pot exists: do not leave a half-made one behind.
                    let _ = run_pot(
                        &pot,
                        plan::destroy_args(&p.pot_name),
                        plan::STEP_TIMEOUT_MS,
                        true,
                    );
                }
                return Err(DriverError::Temporary(msg));
            }
        }
        let spec = SpawnSpec {
            command: pot_command(&pot, p.start.clone()),
            stdout: Output::TaskStdout,
            stderr: Output::TaskStderr,
            limits: None,
        };
        let id = match process::spawn(&spec) {
            Ok(id) => id,
            Err(e) => {
                let msg = format!(
                    "`{}` could not start: {}",
                    plan::display_args(&p.start),
                    nomad_driver_sdk::process_error(e).text()
                );
                log::task_event(&msg, &[]);
                let _ = run_pot(
                    &pot,
                    plan::destroy_args(&p.pot_name),
                    plan::STEP_TIMEOUT_MS,
                    true,
                );
                return Err(DriverError::Temporary(msg));
            }
        };
        let st = TaskState {
            pot,
            pot_name: p.pot_name,
        };
        Ok(TaskStarted {
            driver_state: serde_json::to_vec(&st)
                .map_err(|e| DriverError::Fatal(format!("encoding task state: {e}")))?,
            main_process: Some(id),
            network_override: None,
        })
    }

    /// `pot start` ended. 125 means the jail's command ended and its real
    /// exit code is in `pot last-run-stats`.
    ///
    /// Unlike the Go driver, the pot is not destroyed here but in
    /// `destroy_task`, which Nomad calls after every exit: a destroy here
    /// would race the one a stop is still running (pot stops the jail,
    /// which ends `pot start`, before it destroys the dataset).
    fn task_exited(_config: Vec<u8>, task: TaskRef, status: ExitStatus) -> ExitResult {
        let mut result = ExitResult {
            exit_code: status.code,
            signal: status.signal,
            oom_killed: status.oom_killed,
            err: None,
        };
        if status.signal != 0 || status.code != EXIT_SEE_LAST_RUN_STATS {
            return result;
        }
        let st = match state(&task) {
            Ok(st) => st,
            Err(e) => {
                result.err = Some(e.text());
                return result;
            }
        };
        let stats = run_pot(
            &st.pot,
            plan::last_run_stats_args(&st.pot_name),
            plan::STEP_TIMEOUT_MS,
            false,
        )
        .and_then(|out| plan::parse_last_run_stats(&String::from_utf8_lossy(&out.stdout)));
        match stats {
            Ok(code) => result.exit_code = code,
            Err(m) => {
                // A pot a stop already destroyed has no stats to read: the
                // exit is what the stop made it.
                let gone = run_pot(&st.pot, plan::list_args(), plan::STEP_TIMEOUT_MS, false)
                    .is_ok_and(|out| {
                        !plan::pot_listed(&String::from_utf8_lossy(&out.stdout), &st.pot_name)
                    });
                if gone {
                    log::log(
                        log::Level::Info,
                        &format!(
                            "pot {} was destroyed before its exit code could be read",
                            st.pot_name
                        ),
                        &[],
                    );
                } else {
                    log::task_event(&m, &[]);
                    result.err = Some(format!(
                        "pot start exited with 125 and the jail's exit code is unknown: {m}"
                    ));
                }
            }
        }
        result
    }

    /// As the Go driver: `pot destroy -F` stops the jail, which ends `pot
    /// start`. The job's kill signal is not used (pot stops the jail).
    fn stop_task(
        _config: Vec<u8>,
        task: TaskRef,
        _signal: String,
        _timeout_ms: u32,
    ) -> Result<(), DriverError> {
        let st = state(&task)?;
        run_pot(
            &st.pot,
            plan::destroy_args(&st.pot_name),
            plan::STEP_TIMEOUT_MS,
            true,
        )
        .map(|_| ())
        .map_err(DriverError::Temporary)
    }

    fn signal_task(_config: Vec<u8>, task: TaskRef, signal: String) -> Result<(), DriverError> {
        let st = state(&task)?;
        run_pot(
            &st.pot,
            plan::signal_args(&st.pot_name, &signal),
            plan::STEP_TIMEOUT_MS,
            true,
        )
        .map(|_| ())
        .map_err(DriverError::Temporary)
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
        let st = state(&task)?;
        Ok(pot_command(
            &st.pot,
            plan::exec_args(&st.pot_name, &command),
        ))
    }

    /// Usage from `pot get-rss -J` (rctl's view of the jail). A failure is
    /// an error for this sample only; no task event (it would repeat every
    /// stats interval).
    fn task_stats(_config: Vec<u8>, task: TaskRef) -> Result<Option<TaskUsage>, DriverError> {
        let st = state(&task)?;
        let out = run_pot(&st.pot, plan::get_rss_args(&st.pot_name), 10_000, false)
            .map_err(DriverError::Temporary)?;
        plan::parse_rss(&String::from_utf8_lossy(&out.stdout))
            .map(Some)
            .map_err(DriverError::Temporary)
    }

    fn destroy_task(_config: Vec<u8>, task: TaskRef) -> Result<(), DriverError> {
        let st = state(&task)?;
        destroy_if_present(&st).map_err(DriverError::Temporary)
    }
}

// Exported only for wasm: a native build (for unit tests) has no host.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Pot);

#[cfg(test)]
mod tests;
