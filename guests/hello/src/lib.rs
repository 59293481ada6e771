//! HashiCorp's skeleton "hello" driver as a WebAssembly guest.
//!
//! Plugin config: `shell` (`bash` or `fish`, default `bash`). Task config:
//! `greeting` (default `Hello, World!`), plus two optional fields the
//! skeleton does not have, for demos and tests of the lifecycle: `sleep`
//! (seconds to keep running after the greeting) and `exit_code`.
//!
//! Unlike the skeleton, the greeting is never spliced into shell source: it
//! is passed as a positional argument, so `"; rm -rf / #` prints as text.

use nomad_driver_sdk::host::process::{self, Command, Limits, Output, SpawnSpec};
use nomad_driver_sdk::schema::Schema;
use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, FingerprintReport,
    FsIsolation, Health, NomadConfig, PluginInfo, Spec, TaskConfig, TaskRef, TaskStarted,
    config_error, cty, process_error,
};
use serde::{Deserialize, Serialize};

/// The driver name jobs use: `driver = "hello-world-example"`.
pub const NAME: &str = "hello-world-example";

const SHELLS: [&str; 2] = ["bash", "fish"];

#[derive(Debug, Deserialize)]
struct PluginConfig {
    #[serde(default = "default_shell")]
    shell: String,
}

fn default_shell() -> String {
    "bash".into()
}

#[derive(Debug, Deserialize)]
struct TaskConf {
    #[serde(default = "default_greeting")]
    greeting: String,
    #[serde(default)]
    sleep: u32,
    #[serde(default)]
    exit_code: u8,
}

fn default_greeting() -> String {
    "Hello, World!".into()
}

/// What a running task needs remembered: how to exec inside it.
#[derive(Debug, Serialize, Deserialize)]
struct TaskState {
    shell: String,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<String>,
}

/// The hello driver.
#[derive(Debug)]
pub struct Hello;

impl Hello {
    fn plugin_config(bytes: &[u8]) -> Result<PluginConfig, DriverError> {
        let cfg: PluginConfig = cty::from_slice(bytes).map_err(config_error)?;
        if !SHELLS.contains(&cfg.shell.as_str()) {
            return Err(DriverError::InvalidConfig(format!(
                "field \"shell\": unsupported shell {:?}; expected one of \"bash\", \"fish\"",
                cfg.shell
            )));
        }
        Ok(cfg)
    }

    fn shell_path(shell: &str) -> Result<String, DriverError> {
        process::lookup_path(shell).ok_or_else(|| {
            DriverError::Fatal(format!("shell {shell:?} was not found on the host's PATH"))
        })
    }
}

/// The argv that prints `greeting`, sleeps and exits, with every value
/// passed as a positional parameter, never as shell source.
pub fn task_argv(
    shell: &str,
    shell_path: &str,
    greeting: &str,
    sleep: u32,
    exit_code: u8,
) -> Vec<String> {
    let fish = shell == "fish";
    let arg = |i: u8| {
        if fish {
            format!("$argv[{i}]")
        } else {
            format!("\"${i}\"")
        }
    };
    let mut script = format!("printf '%s\\n' {}", arg(1));
    if sleep > 0 {
        script.push_str(&format!("; sleep {}", arg(2)));
    }
    if exit_code != 0 {
        script.push_str(&format!("; exit {}", arg(3)));
    }
    let mut argv = vec![shell_path.to_owned(), "-c".into(), script];
    if shell != "fish" {
        argv.push(NAME.into()); // $0
    }
    argv.extend([
        greeting.to_owned(),
        sleep.to_string(),
        exit_code.to_string(),
    ]);
    argv
}

/// `GNU bash, version 5.2.15(1)-release (...)` -> `5.2.15(1)-release`;
/// `fish, version 3.6.0` -> `3.6.0`.
pub fn parse_version(output: &str) -> Option<String> {
    let line = output.lines().next()?;
    let rest = line.split("version ").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

impl Driver for Hello {
    fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn config_schema() -> Option<Spec> {
        Some(Schema::object([("shell", Schema::attr("string").or_default("\"bash\""))]).build())
    }

    fn task_config_schema() -> Spec {
        Schema::object([
            (
                "greeting",
                Schema::attr("string").or_default("\"Hello, World!\""),
            ),
            ("sleep", Schema::attr("number")),
            ("exit_code", Schema::attr("number")),
        ])
        .build()
    }

    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            send_signals: true,
            exec: true,
            fs_isolation: FsIsolation::None,
            network_modes: vec![],
            must_create_network: false,
            mounts: false,
            remote_tasks: false,
            disable_log_collection: false,
        }
    }

    fn set_config(msgpack: Vec<u8>, _nomad: Option<NomadConfig>) -> Result<Vec<u8>, DriverError> {
        let cfg = Self::plugin_config(&msgpack)?;
        Ok(cfg.shell.into_bytes())
    }

    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        let shell = String::from_utf8(config).unwrap_or_else(|_| default_shell());
        let report = |health, description: String, attributes| FingerprintReport {
            health,
            description,
            attributes,
        };
        let Some(path) = process::lookup_path(&shell) else {
            return report(
                Health::Undetected,
                format!("shell {shell} not found"),
                vec![],
            );
        };
        let cmd = Command {
            program: path,
            args: vec!["--version".into()],
            env: vec![],
            cwd: None,
            user: None,
        };
        match process::run(&cmd, 5_000) {
            Ok(out) if out.status.code == 0 => {
                let version =
                    parse_version(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default();
                let text = |key: &str, v: &str| Attribute {
                    key: key.into(),
                    value: AttributeValue::Text(v.into()),
                    unit: String::new(),
                };
                report(
                    Health::Healthy,
                    "ready".into(),
                    vec![
                        text("driver.hello.shell", &shell),
                        text("driver.hello.shell_version", &version),
                    ],
                )
            }
            Ok(out) => report(
                Health::Unhealthy,
                format!("{shell} --version exited with {}", out.status.code),
                vec![],
            ),
            Err(e) => report(
                Health::Unhealthy,
                format!("cannot run {shell}: {}", process_error(e)),
                vec![],
            ),
        }
    }

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let shell = String::from_utf8(config).unwrap_or_else(|_| default_shell());
        let conf: TaskConf = cty::from_slice(&task.driver_config).map_err(config_error)?;
        let path = Self::shell_path(&shell)?;
        let task_dir = format!("{}/{}", task.alloc_dir, task.name);
        let state = TaskState {
            shell,
            env: task.env,
            cwd: (!task.alloc_dir.is_empty()).then_some(task_dir),
            user: (!task.user.is_empty()).then_some(task.user),
        };
        let spec = SpawnSpec {
            command: Command {
                program: path.clone(),
                args: task_argv(
                    &state.shell,
                    &path,
                    &conf.greeting,
                    conf.sleep,
                    conf.exit_code,
                )
                .into_iter()
                .skip(1)
                .collect(),
                env: state.env.clone(),
                cwd: state.cwd.clone(),
                user: state.user.clone(),
            },
            stdout: Output::TaskStdout,
            stderr: Output::TaskStderr,
            limits: Some(Limits {
                memory_max_bytes: task.resources.memory_limit_bytes.max(0) as u64,
                cpu_shares: task.resources.cpu_shares.max(0) as u64,
            }),
        };
        let id = process::spawn(&spec).map_err(process_error)?;
        Ok(TaskStarted {
            driver_state: serde_json::to_vec(&state)
                .map_err(|e| DriverError::Fatal(format!("encoding task state: {e}")))?,
            main_process: Some(id),
            network_override: None,
        })
    }

    /// Runs the command on the host in the task's environment, directory
    /// and user, like raw_exec (hello has no filesystem isolation).
    fn exec_command(
        _config: Vec<u8>,
        task: TaskRef,
        command: Vec<String>,
    ) -> Result<Command, DriverError> {
        let state: TaskState = serde_json::from_slice(&task.driver_state)
            .map_err(|e| DriverError::Fatal(format!("task state is unreadable: {e}")))?;
        let Some((program, args)) = command.split_first() else {
            return Err(DriverError::InvalidConfig(
                "exec: the command is empty".into(),
            ));
        };
        let program = process::lookup_path(program).ok_or_else(|| {
            DriverError::InvalidConfig(format!("exec: {program:?} was not found"))
        })?;
        Ok(Command {
            program,
            args: args.to_vec(),
            env: state.env,
            cwd: state.cwd,
            user: state.user,
        })
    }
}

// Exported only for wasm: a native build (for unit tests) has no host to
// call it, and export names like `nomad:driver/driver@0.1.0#info` do not
// link as native symbols.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Hello);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn greeting_is_an_argument_not_shell_source() {
        let evil = "\"; rm -rf / #";
        let argv = task_argv("bash", "/usr/bin/bash", evil, 0, 0);
        assert_eq!(
            argv,
            vec![
                "/usr/bin/bash",
                "-c",
                "printf '%s\\n' \"$1\"",
                NAME,
                evil,
                "0",
                "0"
            ]
        );
        assert!(!argv[2].contains(evil));
    }

    #[test]
    fn sleep_and_exit_code_extend_the_script() {
        let argv = task_argv("bash", "/bin/bash", "hi", 5, 3);
        assert_eq!(argv[2], "printf '%s\\n' \"$1\"; sleep \"$2\"; exit \"$3\"");
        assert_eq!(&argv[4..], ["hi", "5", "3"]);
        let fish = task_argv("fish", "/usr/bin/fish", "hi", 5, 3);
        assert_eq!(
            fish[2],
            "printf '%s\\n' $argv[1]; sleep $argv[2]; exit $argv[3]"
        );
        assert_eq!(&fish[3..], ["hi", "5", "3"]);
    }

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n...")
                .as_deref(),
            Some("5.2.15(1)-release")
        );
        assert_eq!(
            parse_version("fish, version 3.6.0").as_deref(),
            Some("3.6.0")
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn unsupported_shell_names_the_field() {
        // {"shell": "zsh"} as cty-msgpack
        let bytes = [
            0x81, 0xa5, b's', b'h', b'e', b'l', b'l', 0xa3, b'z', b's', b'h',
        ];
        let err = Hello::plugin_config(&bytes).unwrap_err();
        let DriverError::InvalidConfig(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("\"shell\"") && msg.contains("zsh"), "{msg}");
        // Empty config (no agent block) defaults to bash.
        assert_eq!(Hello::plugin_config(&[]).unwrap().shell, "bash");
    }
}
