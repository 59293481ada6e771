//! The pot driver's plan: a task's `config { }` plus what Nomad says about
//! the task, turned into the exact `pot` command lines, with no side effects.
//!
//! Every function here is pure, so the whole command sequence is unit-tested
//! natively. The order and flags follow the maintained Go driver
//! (bsdpot/nomad-pot-driver) and pot's own `getopts` strings; see
//! `/work/shared/REFERENCE.md` section A.2 and the guest's README.
//!
//! Arguments are argv elements, never shell source, on the host side. Two
//! values do end up in a shell *inside the jail*, because that is how pot
//! works: the jail command line (`pot prepare -c`, run by the jail's
//! `/tmp/tinirc`) and each `set-env` value (written by pot as
//! `export "K=V"` into the same script). The command line keeps the Go
//! driver's meaning (command and args joined with spaces, so the user's own
//! quoting such as `'daemon off;'` works); environment values are escaped
//! so they arrive in the jail exactly as Nomad gave them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nomad_driver_sdk::{DriverError, TaskConfig, TaskUsage, cty};
use serde::Deserialize;

/// The network modes this driver accepts (`pot prepare -N`).
pub const NETWORK_MODES: [&str; 2] = ["public-bridge", "host"];

/// The environment `pot` itself runs with: only a PATH (pot is a shell
/// script that calls FreeBSD tools), never the host's environment.
pub const POT_PATH_ENV: &str = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/sbin:/bin";

/// How long `pot prepare` may take (it may download and import an image).
pub const PREPARE_TIMEOUT_MS: u32 = 15 * 60 * 1000;
/// How long every other short pot command may take.
pub const STEP_TIMEOUT_MS: u32 = 2 * 60 * 1000;

/// The agent's `plugin "..." { config { } }` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PluginConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig { enabled: true }
    }
}

/// A task's `config { }` block.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskConf {
    pub image: String,
    pub pot: String,
    pub tag: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub network_mode: Option<String>,
    /// `port_map = { http = "80" }` or the block form `port_map { ... }`
    /// (a list of maps); typed `any` in the schema to take both.
    #[serde(default)]
    pub port_map: Option<serde_json::Value>,
    #[serde(default)]
    pub copy: Vec<String>,
    #[serde(default)]
    pub mount: Vec<String>,
    #[serde(default)]
    pub mount_read_only: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
}

/// Decodes the task's cty-msgpack config.
pub fn decode_task(bytes: &[u8]) -> Result<TaskConf, DriverError> {
    cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)
}

/// Decodes the agent's cty-msgpack plugin config (empty = defaults).
pub fn decode_plugin(bytes: &[u8]) -> Result<PluginConfig, DriverError> {
    cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)
}

/// The command sequence that prepares and starts one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The pot this task runs as (`<task>_<8hex>_<alloc id>`).
    pub pot_name: String,
    /// pot's arguments for every step before `start`, in order.
    pub setup: Vec<Vec<String>>,
    /// pot's arguments for the long-lived `pot start`.
    pub start: Vec<String>,
    /// Things the operator should know that did not stop the task
    /// (reported as task events).
    pub warnings: Vec<String>,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> DriverError {
    DriverError::InvalidConfig(format!("field \"{field}\": {msg}"))
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The short id Nomad puts at the end of a task id
/// (`<alloc id>/<task name>/<8 hex>`).
pub fn task_suffix(task_id: &str) -> Result<&str, DriverError> {
    match task_id.rsplit('/').next() {
        Some(last) if !last.is_empty() && last != task_id => Ok(last),
        _ => Err(DriverError::Fatal(format!(
            "task id {task_id:?} is not of Nomad's form <alloc id>/<task name>/<suffix>"
        ))),
    }
}

/// `pot prepare -a` value: `<8hex>_<alloc id>`.
pub fn allocation_tag(task: &TaskConfig) -> Result<String, DriverError> {
    Ok(format!("{}_{}", task_suffix(&task.id)?, task.alloc_id))
}

/// The pot name `pot prepare -n <task> -a <tag>` creates: pot joins them
/// with `_` and turns every `.` into `_`.
pub fn pot_name(task: &TaskConfig) -> Result<String, DriverError> {
    Ok(format!("{}_{}", task.name, allocation_tag(task)?).replace('.', "_"))
}

/// The jail's command line as `pot prepare -c` takes it: command and args
/// joined with spaces, wrapped in double quotes (pot strips them).
pub fn jail_command_line(command: &str, args: &[String]) -> String {
    let mut line = command.to_owned();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    format!("\"{line}\"")
}

/// Escapes an environment value for the double-quoted `export "K=V"` line
/// pot writes into the jail's start script. pot escapes `"` itself; the
/// characters that stay special inside double quotes are escaped here, so
/// `$(...)`, backquotes and backslashes reach the task literally.
pub fn escape_env_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A name the jail's `export` accepts.
fn is_shell_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Splits `"a:b"` at the first colon into two non-empty parts.
fn split_pair<'a>(v: &'a str, field: &str, form: &str) -> Result<(&'a str, &'a str), DriverError> {
    match v.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err(invalid(field, format!("expected \"{form}\", got {v:?}"))),
    }
}

/// `"host path:jail path"`, both absolute, exactly one colon.
fn path_pair<'a>(v: &'a str, field: &str) -> Result<(&'a str, &'a str), DriverError> {
    let form = "host path:jail path";
    if v.matches(':').count() != 1 {
        return Err(invalid(
            field,
            format!("expected \"{form}\" with exactly one colon, got {v:?}"),
        ));
    }
    let (src, dst) = split_pair(v, field, form)?;
    if !src.starts_with('/') || !dst.starts_with('/') {
        return Err(invalid(
            field,
            format!("both paths must be absolute (\"{form}\"), got {v:?}"),
        ));
    }
    Ok((src, dst))
}

/// `port_map` as (label, container port) pairs, in label order.
pub fn port_map(conf: &TaskConf) -> Result<Vec<(String, u16)>, DriverError> {
    let Some(value) = &conf.port_map else {
        return Ok(vec![]);
    };
    let maps: Vec<&serde_json::Map<String, serde_json::Value>> = match value {
        serde_json::Value::Null => vec![],
        serde_json::Value::Object(m) => vec![m],
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_object().ok_or_else(|| {
                    invalid(
                        &format!("port_map[{i}]"),
                        format!("expected a map of port label to port, got {v}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(invalid(
                "port_map",
                format!(
                    "expected a map of port label to port, e.g. {{ http = \"80\" }}, got {other}"
                ),
            ));
        }
    };
    let mut out = BTreeMap::new();
    for m in maps {
        for (label, v) in m {
            let field = format!("port_map.{label}");
            let text = match v {
                serde_json::Value::String(t) => t.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(invalid(
                        &field,
                        format!("expected a port number, got {other}"),
                    ));
                }
            };
            let port: u16 = text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                invalid(
                    &field,
                    format!("expected a port number 1-65535, got {text:?}"),
                )
            })?;
            out.insert(label.clone(), port);
        }
    }
    Ok(out.into_iter().collect())
}

/// The host port Nomad allocated for `label`: from the task's port
/// mappings, else from `NOMAD_HOST_PORT_<label>`.
fn host_port(task: &TaskConfig, label: &str) -> Option<i64> {
    if let Some(p) = task.resources.ports.iter().find(|p| p.label == label) {
        return Some(p.value.into());
    }
    let key = format!("NOMAD_HOST_PORT_{label}");
    task.env
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Validates `conf` against `task` and builds the whole start sequence.
pub fn plan(conf: &TaskConf, task: &TaskConfig) -> Result<Plan, DriverError> {
    for (field, v) in [
        ("image", &conf.image),
        ("pot", &conf.pot),
        ("tag", &conf.tag),
    ] {
        if v.trim().is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
    }
    let command = conf.command.as_deref().filter(|c| !c.is_empty());
    if command.is_none() && !conf.args.is_empty() {
        return Err(invalid(
            "args",
            "needs \"command\": args are appended to the command",
        ));
    }
    if let Some(c) = command
        && c.contains(['\n', '\r'])
    {
        return Err(invalid(
            "command",
            "must not contain a line break (pot keeps the command on one line of its config)",
        ));
    }
    for (i, a) in conf.args.iter().enumerate() {
        if a.contains(['\n', '\r']) {
            return Err(invalid(
                &format!("args[{i}]"),
                "must not contain a line break (pot keeps the command on one line of its config)",
            ));
        }
    }
    if let Some(mode) = &conf.network_mode
        && !NETWORK_MODES.contains(&mode.as_str())
    {
        return Err(invalid(
            "network_mode",
            format!("unsupported mode {mode:?}; expected one of \"public-bridge\", \"host\""),
        ));
    }
    let ports = port_map(conf)?;

    let name = pot_name(task)?;
    let mut prepare = vec![
        s("prepare"),
        s("-U"),
        conf.image.clone(),
        s("-p"),
        conf.pot.clone(),
        s("-t"),
        conf.tag.clone(),
    ];
    if let Some(c) = command {
        prepare.extend([s("-c"), jail_command_line(c, &conf.args)]);
    }
    match conf.network_mode.as_deref() {
        Some(mode) => prepare.extend([s("-N"), s(mode)]),
        None if !ports.is_empty() => {
            prepare.extend([s("-N"), s("public-bridge"), s("-i"), s("auto")])
        }
        None => {}
    }
    let mut warnings = vec![];
    if conf.network_mode.as_deref() == Some("host") {
        if !ports.is_empty() {
            warnings.push(
                "port_map is ignored with network_mode = \"host\": the jail uses the host's ports directly"
                    .to_owned(),
            );
        }
    } else {
        for (label, container) in &ports {
            let host = host_port(task, label).ok_or_else(|| {
                invalid(
                    &format!("port_map.{label}"),
                    format!(
                        "the task has no port labelled {label:?}; add `port \"{label}\" {{}}` to the group's network block"
                    ),
                )
            })?;
            // pot export-ports: `-e <port inside the pot>:<port on the host>`.
            prepare.extend([s("-e"), format!("{container}:{host}")]);
        }
    }
    prepare.extend([
        s("-a"),
        allocation_tag(task)?,
        s("-n"),
        task.name.clone(),
        s("-v"),
    ]);

    let mut setup = vec![prepare];
    for (i, a) in conf.attributes.iter().enumerate() {
        let field = format!("attributes[{i}]");
        let (attr, value) = split_pair(a, &field, "attribute:value")?;
        if !attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                &field,
                format!("{attr:?} is not a pot attribute name"),
            ));
        }
        setup.push(vec![
            s("set-attribute"),
            s("-p"),
            name.clone(),
            s("-A"),
            s(attr),
            s("-V"),
            s(value),
        ]);
    }
    for (i, c) in conf.copy.iter().enumerate() {
        let (src, dst) = path_pair(c, &format!("copy[{i}]"))?;
        setup.push(vec![
            s("copy-in"),
            s("-p"),
            name.clone(),
            s("-s"),
            s(src),
            s("-d"),
            s(dst),
        ]);
    }
    let task_dir = format!("{}/{}", task.alloc_dir.trim_end_matches('/'), task.name);
    for (dir, mnt) in [("local", "/local"), ("secrets", "/secrets")] {
        setup.push(vec![
            s("mount-in"),
            s("-p"),
            name.clone(),
            s("-d"),
            format!("{task_dir}/{dir}"),
            s("-m"),
            s(mnt),
        ]);
    }
    for (list, field, ro) in [
        (&conf.mount, "mount", false),
        (&conf.mount_read_only, "mount_read_only", true),
    ] {
        for (i, m) in list.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let (src, dst) = path_pair(m, &field)?;
            if dst.trim_end_matches('/').is_empty() {
                return Err(invalid(
                    &field,
                    "/ is not a valid mount point inside the jail",
                ));
            }
            let mut step = vec![
                s("mount-in"),
                s("-p"),
                name.clone(),
                s("-d"),
                s(src),
                s("-m"),
                s(dst),
            ];
            if ro {
                step.push(s("-r"));
            }
            setup.push(step);
        }
    }

    let mut env: Vec<&(String, String)> = task.env.iter().collect();
    env.sort();
    let mut set_env = vec![s("set-env"), s("-p"), name.clone()];
    for (k, v) in env {
        if !is_shell_name(k) {
            warnings.push(format!(
                "environment variable {k:?} is not passed into the jail: it is not a valid shell variable name"
            ));
            continue;
        }
        if v.contains(['\n', '\r']) {
            return Err(DriverError::InvalidConfig(format!(
                "environment variable {k:?}: its value contains a line break, which pot cannot store \
                 (pot keeps one variable per line of its config)"
            )));
        }
        set_env.extend([s("-E"), format!("{k}={}", escape_env_value(v))]);
    }
    if set_env.len() > 3 {
        setup.push(set_env);
    }

    if !conf.extra_hosts.is_empty() {
        let mut hosts = vec![s("set-hosts"), s("-p"), name.clone()];
        for (i, h) in conf.extra_hosts.iter().enumerate() {
            let field = format!("extra_hosts[{i}]");
            let (host, ip) = split_pair(h, &field, "hostname:IP")?;
            if host.contains(char::is_whitespace) {
                return Err(invalid(&field, format!("{host:?} is not a host name")));
            }
            if ip.parse::<IpAddr>().is_err() {
                return Err(invalid(&field, format!("{ip:?} is not an IP address")));
            }
            hosts.extend([s("-H"), format!("{host}:{ip}")]);
        }
        setup.push(hosts);
    }

    let memory_mb = task.resources.memory_mb;
    if memory_mb > 0 {
        setup.push(vec![
            s("set-rss"),
            s("-M"),
            format!("{memory_mb}M"),
            s("-p"),
            name.clone(),
        ]);
    }

    Ok(Plan {
        start: vec![s("start"), name.clone()],
        pot_name: name,
        setup,
        warnings,
    })
}

/// `pot destroy -p <pot> -F`: stops the jail (ending `pot start`) and
/// removes the pot.
pub fn destroy_args(name: &str) -> Vec<String> {
    vec![s("destroy"), s("-p"), s(name), s("-F")]
}

/// `pot signal -s <SIGNAME> -p <pot>`: to the jail's main process.
pub fn signal_args(name: &str, signal: &str) -> Vec<String> {
    vec![s("signal"), s("-s"), s(signal), s("-p"), s(name)]
}

/// `pot exec -p <pot> <command...>`.
pub fn exec_args(name: &str, command: &[String]) -> Vec<String> {
    let mut v = vec![s("exec"), s("-p"), s(name)];
    v.extend(command.iter().cloned());
    v
}

/// `pot last-run-stats -p <pot>`.
pub fn last_run_stats_args(name: &str) -> Vec<String> {
    vec![s("last-run-stats"), s("-p"), s(name)]
}

/// `pot get-rss -p <pot> -J`.
pub fn get_rss_args(name: &str) -> Vec<String> {
    vec![s("get-rss"), s("-p"), s(name), s("-J")]
}

/// `pot ls -q`: one pot name per line.
pub fn list_args() -> Vec<String> {
    vec![s("ls"), s("-q")]
}

/// Whether `pot ls -q` output lists `name` (whole-line match).
pub fn pot_listed(output: &str, name: &str) -> bool {
    output.lines().any(|l| l.trim() == name)
}

/// The jail's exit code from `pot last-run-stats` (`{"ExitCode": n}`).
pub fn parse_last_run_stats(output: &str) -> Result<i32, String> {
    #[derive(Deserialize)]
    struct Stats {
        #[serde(rename = "ExitCode")]
        exit_code: Option<i64>,
    }
    let stats: Stats = serde_json::from_str(output.trim()).map_err(|e| {
        format!(
            "pot last-run-stats printed {:?}, not JSON: {e}",
            output.trim()
        )
    })?;
    let code = stats
        .exit_code
        .ok_or_else(|| format!("pot last-run-stats has no ExitCode: {}", output.trim()))?;
    i32::try_from(code).map_err(|_| format!("pot last-run-stats ExitCode {code} is out of range"))
}

/// Usage from `pot get-rss -J`:
/// `{"ResourceUsage": {"MemoryStats": {"RSS": n, "Swap": n}, "CpuStats": {"TotalTicks": x, "Percent": y}}}`.
pub fn parse_rss(output: &str) -> Result<TaskUsage, String> {
    let v: serde_json::Value = serde_json::from_str(output.trim())
        .map_err(|e| format!("pot get-rss printed {:?}, not JSON: {e}", output.trim()))?;
    let usage = v
        .get("ResourceUsage")
        .ok_or_else(|| format!("pot get-rss output has no ResourceUsage: {}", output.trim()))?;
    let num = |section: &str, key: &str| {
        usage
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|n| n.as_f64())
    };
    let bytes =
        |section: &str, key: &str| num(section, key).filter(|n| *n >= 0.0).map(|n| n as u64);
    let rss = bytes("MemoryStats", "RSS");
    let ticks = num("CpuStats", "TotalTicks");
    let percent = num("CpuStats", "Percent");
    if rss.is_none() && ticks.is_none() && percent.is_none() {
        return Err(format!(
            "pot get-rss output has no usage numbers: {}",
            output.trim()
        ));
    }
    Ok(TaskUsage {
        memory_rss_bytes: rss,
        memory_cache_bytes: None,
        memory_swap_bytes: bytes("MemoryStats", "Swap"),
        memory_usage_bytes: None,
        memory_max_usage_bytes: None,
        cpu_percent: percent,
        cpu_user_percent: None,
        cpu_system_percent: None,
        cpu_total_ticks: ticks,
    })
}

/// `pot version: 0.16.0` (or `-q`'s bare `0.16.0`) -> `0.16.0`.
pub fn parse_version(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    let rest = match line.find("version") {
        Some(i) => line[i + "version".len()..].trim_start_matches(':').trim(),
        None => line,
    };
    let v = rest.split_whitespace().next()?;
    v.chars()
        .next()
        .filter(char::is_ascii_digit)
        .map(|_| v.to_owned())
}

/// A command line for messages, with `set-env` values left out (they may
/// be secrets).
pub fn display_args(args: &[String]) -> String {
    let mut out = vec![s("pot")];
    let mut after_e = false;
    for a in args {
        if after_e && args.first().map(String::as_str) == Some("set-env") {
            let key = a.split_once('=').map_or(a.as_str(), |(k, _)| k);
            out.push(format!("{key}=…"));
        } else {
            out.push(a.clone());
        }
        after_e = a == "-E";
    }
    out.join(" ")
}
