//! systemd-nspawn containers as a Nomad task driver, as a WebAssembly guest.
//!
//! The container is the task's main process: the guest asks the host to
//! `spawn` `systemd-nspawn` with the argv [`plan::plan`] builds, so the
//! host supervises it (recovery after a host restart, stdout/stderr into
//! Nomad's FIFOs, cgroup memory limits). Everything else goes through
//! granted host programs, never nspawn-specific host code:
//!
//! | What | Program (grant it) |
//! |---|---|
//! | the container | `systemd-nspawn` |
//! | is the image a directory, a file, missing | `test -d PATH`, `test -e PATH` |
//! | fingerprint: is the host root | `id -u` |
//! | find the container's PID 1 (no machined) | `pgrep`, `ps -o pidns=` |
//! | signals to the container's command or init | `kill -s NAME PID` (procps) |
//! | exec without machined | `nsenter --target PID --all --root --wd` |
//! | with machined (systemd is PID 1) | `machinectl`, `systemd-run --machine` |
//!
//! With systemd as PID 1 the container registers with machined; without
//! it (most CI machines) it runs with `--register=no --keep-unit`.

pub mod config;
pub mod plan;

use nomad_driver_sdk::host::{clock, log, process};
use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, FingerprintReport,
    FsIsolation, Health, NetworkMode, NomadConfig, PluginInfo, Spec, TaskConfig, TaskRef,
    TaskStarted, TaskUsage, process_error,
};
use process::{Command, Limits, Output, SpawnSpec};

use config::{Machined, PluginConfig, TaskConf};
use plan::{ImageKind, Leader, Mode, State, StopAction};

/// The driver name jobs use: `driver = "nspawn"`.
pub const NAME: &str = "nspawn";

/// How long start-task looks for the container's PID 1.
const LEADER_WAIT_NS: u64 = 10_000_000_000;
/// At most this many searches (each runs `pgrep`, a few ms).
const LEADER_ATTEMPTS: u32 = 1000;
/// Probe timeout.
const PROBE_MS: u32 = 5_000;

/// The nspawn driver.
#[derive(Debug)]
pub struct Nspawn;

fn cmd(program: String, args: &[&str]) -> Command {
    Command {
        program,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![],
        cwd: None,
        user: None,
    }
}

/// Runs a granted host program found on PATH; `Err` says why not.
fn probe(name: &str, args: &[&str]) -> Result<process::RunOutput, String> {
    let program = process::lookup_path(name).ok_or_else(|| format!("{name} is not installed"))?;
    process::run(&cmd(program, args), PROBE_MS).map_err(|e| match e {
        process::ProcessError::NotGranted(m)
        | process::ProcessError::NotFound(m)
        | process::ProcessError::Failed(m) => m,
    })
}

fn stdout_of(out: &process::RunOutput) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text_attr(key: &str, v: &str) -> Attribute {
    Attribute {
        key: key.into(),
        value: AttributeValue::Text(v.into()),
        unit: String::new(),
    }
}

fn bool_attr(key: &str, v: bool) -> Attribute {
    Attribute {
        key: key.into(),
        value: AttributeValue::Boolean(v),
        unit: String::new(),
    }
}

/// What is at `path` on the host: `test -d`, then `test -e`. Unknown when
/// `test` is not granted or fails otherwise.
fn image_kind(path: &str) -> ImageKind {
    let test = |flag: &str| probe("test", &[flag, path]).map(|o| o.status.code);
    match test("-d") {
        Ok(0) => ImageKind::Directory,
        Ok(1) => match test("-e") {
            Ok(0) => ImageKind::File,
            Ok(1) => ImageKind::Missing,
            _ => ImageKind::Unknown,
        },
        _ => ImageKind::Unknown,
    }
}

/// Whether machined answers (systemd is PID 1 and machinectl is granted).
fn machined_available() -> bool {
    probe("machinectl", &["list", "--no-legend", "--no-pager"]).is_ok_and(|o| o.status.code == 0)
}

fn mode_for(plugin: &PluginConfig) -> Mode {
    match plugin.machined {
        Machined::Always => Mode::Machined,
        Machined::Never => Mode::Standalone,
        Machined::Auto if machined_available() => Mode::Machined,
        Machined::Auto => Mode::Standalone,
    }
}

fn state_of(task: &TaskRef) -> Result<State, DriverError> {
    serde_json::from_slice(&task.driver_state)
        .map_err(|e| DriverError::Fatal(format!("the task's driver state is unreadable: {e}")))
}

/// The pid namespace inode of `pid`, if it runs.
fn pidns_of(pid: u32) -> Option<String> {
    let out = probe("ps", &["-o", "pidns=", "-p", &pid.to_string()]).ok()?;
    let ns = stdout_of(&out).trim().to_owned();
    (out.status.code == 0 && !ns.is_empty() && ns != "-").then_some(ns)
}

/// Looks for the container's PID 1 once: the nspawn process of the
/// machine, then its child that lives in another pid namespace.
fn find_leader_once(state: &State) -> Option<Leader> {
    if state.mode == Mode::Machined {
        let out = probe(
            "machinectl",
            &["show", "--property=Leader", "--value", &state.machine],
        )
        .ok()?;
        let pid = plan::parse_pid(&stdout_of(&out))?;
        return Some(Leader {
            pid,
            pidns: pidns_of(pid)?,
        });
    }
    let pattern = plan::machine_pattern(&state.machine);
    let main = plan::parse_pid(&stdout_of(
        &probe("pgrep", &["--oldest", "--full", "--", &pattern]).ok()?,
    ))?;
    let child = plan::parse_pid(&stdout_of(
        &probe("pgrep", &["--oldest", "--parent", &main.to_string()]).ok()?,
    ))?;
    let (outer, inner) = (pidns_of(main)?, pidns_of(child)?);
    // nspawn's short-lived setup child shares the host's namespace.
    (outer != inner).then_some(Leader {
        pid: child,
        pidns: inner,
    })
}

/// Waits (bounded) for the container's PID 1 to appear, giving up early
/// if the nspawn process has already exited.
fn wait_for_leader(state: &State, main: &str) -> Option<Leader> {
    let start = clock::monotonic_ns();
    for _ in 0..LEADER_ATTEMPTS {
        if let Some(l) = find_leader_once(state) {
            return Some(l);
        }
        if !matches!(process::status(main), Ok(None)) {
            return None;
        }
        if clock::monotonic_ns().saturating_sub(start) > LEADER_WAIT_NS {
            return None;
        }
    }
    None
}

/// The leader recorded at start if it is still the same process, else a
/// fresh search (e.g. a task started before the leader was found).
fn live_leader(state: &State) -> Option<Leader> {
    if let Some(l) = &state.leader
        && pidns_of(l.pid).as_deref() == Some(l.pidns.as_str())
    {
        return Some(l.clone());
    }
    find_leader_once(state)
}

/// The process a signal for the container's command goes to: the command
/// itself (PID 2 under the stub init with process_two, else PID 1).
fn payload_pid(state: &State, leader: &Leader) -> Option<u32> {
    if !state.as_pid2 {
        return Some(leader.pid);
    }
    let out = probe("pgrep", &["--oldest", "--parent", &leader.pid.to_string()]).ok()?;
    plan::parse_pid(&stdout_of(&out))
}

fn kill(pid: u32, signal: &str) -> Result<(), DriverError> {
    let name = plan::kill_signal_name(signal)?;
    let out = probe("kill", &["-s", &name, &pid.to_string()]).map_err(DriverError::Temporary)?;
    if out.status.code != 0 {
        return Err(DriverError::Temporary(format!(
            "kill -s {name} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Signals the container's command (or init when booted).
fn signal_container(task: &TaskRef, state: &State, signal: &str) -> Result<(), DriverError> {
    plan::kill_signal_name(signal)?;
    let Some(leader) = live_leader(state) else {
        // No container process (yet or any more): nspawn itself is all
        // there is to signal.
        return match &task.main_process {
            Some(main) => process::signal(main, signal).map_err(process_error),
            None => Err(DriverError::Temporary(format!(
                "container {} has no running process",
                state.machine
            ))),
        };
    };
    let target = if state.boot {
        Some(leader.pid)
    } else {
        payload_pid(state, &leader)
    };
    match target {
        Some(pid) => kill(pid, signal),
        // The stub init is alone: the command has already exited.
        None => Ok(()),
    }
}

/// Usage with only the resident memory measured.
fn usage(rss: Option<u64>) -> TaskUsage {
    TaskUsage {
        memory_rss_bytes: rss,
        memory_cache_bytes: None,
        memory_swap_bytes: None,
        memory_usage_bytes: None,
        memory_max_usage_bytes: None,
        cpu_percent: None,
        cpu_user_percent: None,
        cpu_system_percent: None,
        cpu_total_ticks: None,
    }
}

impl Driver for Nspawn {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn config_schema() -> Option<Spec> {
        Some(PluginConfig::schema().build())
    }

    fn task_config_schema() -> Spec {
        TaskConf::schema().build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: true,
            exec: true,
            fs_isolation: FsIsolation::Image,
            network_modes: vec![NetworkMode::Host, NetworkMode::Group],
            must_create_network: false,
            mounts: true,
            remote_tasks: false,
            disable_log_collection: false,
        }
    }

    fn set_config(msgpack: Vec<u8>, _nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        Ok(PluginConfig::decode(&msgpack)?.to_bytes())
    }

    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        let report = |health, description: String, attributes| FingerprintReport {
            health,
            description,
            attributes,
        };
        let plugin = match PluginConfig::load(&config) {
            Ok(p) => p,
            Err(e) => return report(Health::Unhealthy, format!("{e:?}"), vec![]),
        };
        if !plugin.enabled {
            return report(
                Health::Undetected,
                "disabled in the plugin config".into(),
                vec![],
            );
        }
        if process::lookup_path("systemd-nspawn").is_none() {
            return report(
                Health::Undetected,
                "systemd-nspawn not found (Debian package systemd-container)".into(),
                vec![],
            );
        }
        match probe("id", &["-u"]) {
            Ok(out) if out.status.code == 0 && stdout_of(&out).trim() == "0" => {}
            Ok(out) => {
                return report(
                    Health::Undetected,
                    format!(
                        "the host does not run as root (uid {}); systemd-nspawn needs root",
                        stdout_of(&out).trim()
                    ),
                    vec![],
                );
            }
            Err(e) => {
                return report(
                    Health::Undetected,
                    format!("cannot tell whether the host runs as root: {e}"),
                    vec![],
                );
            }
        }
        let version = match probe("systemd-nspawn", &["--version"]) {
            Ok(out) if out.status.code == 0 => plan::parse_version(&stdout_of(&out)),
            Ok(out) => {
                return report(
                    Health::Unhealthy,
                    format!("systemd-nspawn --version exited with {}", out.status.code),
                    vec![],
                );
            }
            Err(e) => {
                return report(
                    Health::Unhealthy,
                    format!("cannot run systemd-nspawn: {e}"),
                    vec![],
                );
            }
        };
        let Some((major, full)) = version else {
            return report(
                Health::Unhealthy,
                "systemd-nspawn --version printed no version".into(),
                vec![],
            );
        };
        let machined = match plugin.machined {
            Machined::Never => false,
            _ => machined_available(),
        };
        report(
            Health::Healthy,
            "ready".into(),
            vec![
                bool_attr("driver.nspawn", true),
                text_attr("driver.nspawn.version", &major),
                text_attr("driver.nspawn.full_version", &full),
                bool_attr("driver.nspawn.machined", machined),
                bool_attr("driver.nspawn.volumes", plugin.volumes),
            ],
        )
    }

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let plugin = PluginConfig::load(&config)?;
        let conf = TaskConf::decode(&task.driver_config)?;
        let mode = mode_for(&plugin);
        let mut plan = plan::plan_with(&conf, &plugin, &task, mode, &image_kind)?;
        let program = process::lookup_path("systemd-nspawn").ok_or_else(|| {
            DriverError::Fatal("systemd-nspawn was not found on the host's PATH".into())
        })?;
        let limits = (plan.memory_limit > 0 || plan.cpu_shares > 0).then_some(Limits {
            memory_max_bytes: plan.memory_limit,
            cpu_shares: plan.cpu_shares,
        });
        let id = process::spawn(&SpawnSpec {
            command: Command {
                program,
                args: plan.args.clone(),
                env: plan.nspawn_env.clone(),
                cwd: None,
                user: None,
            },
            stdout: Output::TaskStdout,
            stderr: Output::TaskStderr,
            limits,
        })
        .map_err(process_error)?;
        plan.state.leader = wait_for_leader(&plan.state, &id);
        let leader = plan
            .state
            .leader
            .as_ref()
            .map(|l| l.pid.to_string())
            .unwrap_or_else(|| "none (already exited?)".into());
        log::task_event(
            &format!("container {} started", plan.state.machine),
            &[
                ("machine".into(), plan.state.machine.clone()),
                ("leader_pid".into(), leader),
            ],
        );
        Ok(TaskStarted {
            driver_state: serde_json::to_vec(&plan.state)
                .map_err(|e| DriverError::Fatal(format!("encoding task state: {e}")))?,
            main_process: Some(id),
            network_override: None,
        })
    }

    /// The host kills what is left after the kill timeout, so the timeout
    /// is not needed here.
    fn stop_task(
        _config: Vec<u8>,
        task: TaskRef,
        signal: String,
        _timeout_ms: u32,
    ) -> Result<(), DriverError> {
        let state = state_of(&task)?;
        match plan::stop_action(&state, &signal) {
            StopAction::Poweroff => {
                let out = probe("machinectl", &["poweroff", &state.machine])
                    .map_err(DriverError::Temporary)?;
                if out.status.code != 0 {
                    return Err(DriverError::Temporary(format!(
                        "machinectl poweroff {} failed: {}",
                        state.machine,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(())
            }
            StopAction::TermNspawn => match &task.main_process {
                Some(main) => process::signal(main, "SIGTERM").map_err(process_error),
                None => Ok(()),
            },
            StopAction::Payload(sig) => signal_container(&task, &state, &sig),
        }
    }

    fn signal_task(_config: Vec<u8>, task: TaskRef, signal: String) -> Result<(), DriverError> {
        let state = state_of(&task)?;
        signal_container(&task, &state, &signal)
    }

    fn exec_command(
        _config: Vec<u8>,
        task: TaskRef,
        command: Vec<String>,
    ) -> Result<Command, DriverError> {
        let mut state = state_of(&task)?;
        let program = match state.mode {
            Mode::Standalone => {
                state.leader = live_leader(&state);
                "nsenter"
            }
            Mode::Machined => "systemd-run",
        };
        let args = plan::exec_argv(&state, &command)?;
        let program = process::lookup_path(program).ok_or_else(|| {
            DriverError::Fatal(format!("exec: {program} was not found on the host's PATH"))
        })?;
        Ok(Command {
            program,
            args,
            env: state.env,
            cwd: None,
            user: None,
        })
    }

    /// Memory of every process in the container's pid namespace (`ps`).
    /// The host's own measure covers the process group of systemd-nspawn
    /// only, and the container runs in a session of its own. CPU is not
    /// measured here (`ps` has lifetime averages only), so it is reported
    /// as not measured.
    fn task_stats(_config: Vec<u8>, task: TaskRef) -> Result<Option<TaskUsage>, DriverError> {
        let state = state_of(&task)?;
        let Some(leader) = live_leader(&state) else {
            return Ok(Some(usage(None)));
        };
        let out = probe("ps", &["-o", "pidns=,rss=", "-e"]).map_err(DriverError::Temporary)?;
        let rss_kib = plan::sum_rss_in_pidns(&stdout_of(&out), &leader.pidns);
        Ok(Some(usage(Some(rss_kib * 1024))))
    }

    /// Kills what outlived systemd-nspawn: a SIGKILL to nspawn (the host's
    /// escalation) leaves the container's own session running, so its PID 1
    /// is killed here, which ends every process in its pid namespace.
    fn destroy_task(_config: Vec<u8>, task: TaskRef) -> Result<(), DriverError> {
        let state = state_of(&task)?;
        if state.mode == Mode::Machined {
            let _ = probe("machinectl", &["terminate", &state.machine]);
        }
        if let Some(l) = &state.leader
            && pidns_of(l.pid).as_deref() == Some(l.pidns.as_str())
        {
            kill(l.pid, "SIGKILL")?;
        }
        Ok(())
    }
}

// Exported only for wasm: a native build (for unit tests) has no host.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Nspawn);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
