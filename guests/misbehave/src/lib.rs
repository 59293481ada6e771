//! A driver guest that misbehaves on purpose, for the host's fault tests.
//! The task config's `mode` picks the fault: `loop` (never returns),
//! `trap` (panics), `oom` (allocates without bound), `bad-main` (names a
//! main process it never spawned) or `ok` (starts a task with no process).
//! Tasks without a process, followed through `poll-task`: `remote` runs for
//! 300 ms (a "provisioning" task event on each poll), then exits with 7;
//! `remote-flaky` fails its polls for the first 500 ms, then exits with 5;
//! `remote-fatal` fails every poll fatally; `remote-ip` starts with a
//! network override of port `http` -> 8080 and no address, polls report
//! the address 192.0.2.10 (auto-advertised) between 500 and 1000 ms and no
//! override after that, and it exits with 0 at 1.5 s.
//! Every `stop-task` reports its signal and timeout as a task event
//! (`stop-task signal=<s> timeout-ms=<n>`) before the SDK's default stop.
//! `fs-probe` uses the fs capability and reports what each attempt gave, as
//! its driver state (a task nobody follows).

use nomad_driver_sdk::schema::Schema;
use nomad_driver_sdk::{
    Driver, DriverCapabilities, DriverError, FingerprintReport, FsIsolation, Health,
    NetworkOverride, NomadConfig, PluginInfo, Spec, TaskConfig, TaskPoll, TaskRef, TaskStarted,
    config_error, cty, host, running,
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
            "remote" | "remote-flaky" | "remote-fatal" | "remote-ip" => {
                let network_override = (conf.mode == "remote-ip").then(|| NetworkOverride {
                    port_map: vec![("http".into(), 8080)],
                    addr: String::new(),
                    auto_advertise: false,
                });
                // The state: the mode, then the start time in ns.
                let mut state = conf.mode.into_bytes();
                state.push(0);
                state.extend_from_slice(&now_ns().to_le_bytes());
                Ok(TaskStarted {
                    driver_state: state,
                    main_process: None,
                    network_override,
                })
            }
            "fs-probe" => Ok(TaskStarted {
                driver_state: fs_probe(&task.alloc_dir).into_bytes(),
                main_process: None,
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

    fn poll_task(_config: Vec<u8>, task: TaskRef) -> Result<TaskPoll, DriverError> {
        Self::poll(&task)
    }

    fn stop_task(
        config: Vec<u8>,
        task: TaskRef,
        signal: String,
        timeout_ms: u32,
    ) -> Result<(), DriverError> {
        host::log::task_event(
            &format!("stop-task signal={signal} timeout-ms={timeout_ms}"),
            &[],
        );
        let signal = if signal.is_empty() {
            nomad_driver_sdk::DEFAULT_STOP_SIGNAL.to_owned()
        } else {
            signal
        };
        Self::signal_task(config, task, signal)
    }
}

/// Each attempt's outcome, `;`-separated.
fn fs_probe(alloc_dir: &str) -> String {
    use host::fs;
    fn outcome<T>(r: Result<T, fs::FsError>, ok: impl FnOnce(T) -> String) -> String {
        match r {
            Ok(v) => ok(v),
            Err(fs::FsError::NotGranted(_)) => "not-granted".into(),
            Err(fs::FsError::NotFound(_)) => "not-found".into(),
            Err(fs::FsError::Failed(m)) => format!("failed({m})"),
        }
    }
    let dir = format!("{alloc_dir}/probe");
    let file = format!("{dir}/x.txt");
    [
        outcome(fs::create_dir(&dir), |()| "mkdir".into()),
        outcome(fs::write_file(&file, b"hello", 0o644), |()| "write".into()),
        outcome(fs::read_file(&file), |b| {
            String::from_utf8_lossy(&b).into_owned()
        }),
        outcome(fs::list_dir(&dir), |l| {
            l.iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        outcome(fs::read_file("/etc/hostname"), |_| "read-outside".into()),
        outcome(
            fs::read_file(&format!("{alloc_dir}/../../../../etc/passwd")),
            |_| "escaped".into(),
        ),
    ]
    .join(";")
}

fn now_ns() -> u64 {
    let t = host::clock::now();
    (t.seconds as u64) * 1_000_000_000 + u64::from(t.nanoseconds)
}

impl Misbehave {
    fn poll(task: &TaskRef) -> Result<TaskPoll, DriverError> {
        if task.driver_state.is_empty() {
            // Mode `ok`: a task nobody follows.
            return Err(DriverError::Unsupported("mode ok is not polled".into()));
        }
        let split = task.driver_state.iter().position(|b| *b == 0);
        let (mode, started) = match split {
            Some(i) if task.driver_state.len() == i + 9 => {
                let mut ns = [0u8; 8];
                ns.copy_from_slice(&task.driver_state[i + 1..]);
                (&task.driver_state[..i], u64::from_le_bytes(ns))
            }
            _ => return Err(DriverError::Fatal("corrupt driver state".into())),
        };
        let elapsed_ms = now_ns().saturating_sub(started) / 1_000_000;
        let exited = |code| {
            Ok(TaskPoll::Exited(nomad_driver_sdk::ExitResult {
                exit_code: code,
                signal: 0,
                oom_killed: false,
                err: None,
            }))
        };
        match mode {
            b"remote" if elapsed_ms < 300 => {
                host::log::task_event("provisioning", &[]);
                Ok(running(50, None))
            }
            b"remote" => exited(7),
            b"remote-ip" if elapsed_ms < 500 => Ok(running(50, None)),
            b"remote-ip" if elapsed_ms < 1000 => Ok(running(
                50,
                Some(NetworkOverride {
                    port_map: vec![("http".into(), 8080)],
                    addr: "192.0.2.10".into(),
                    auto_advertise: true,
                }),
            )),
            b"remote-ip" if elapsed_ms < 1500 => Ok(running(50, None)),
            b"remote-ip" => exited(0),
            b"remote-flaky" if elapsed_ms < 500 => {
                Err(DriverError::Temporary("the API is busy".into()))
            }
            b"remote-flaky" => exited(5),
            _ => Err(DriverError::Fatal("the machine failed".into())),
        }
    }
}

#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Misbehave);
