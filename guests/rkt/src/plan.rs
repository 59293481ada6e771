//! The rkt driver's plan: a task's `config { }` plus what Nomad says about
//! the task, turned into the exact `rkt` command lines, with no side
//! effects. Flags and their order follow hashicorp/nomad-driver-rkt
//! (`rkt/driver.go`, StartTask); see `/work/shared/REFERENCE.md` A.4.
//!
//! Every value is one argv element (`--set-env=K=V` carries any bytes,
//! newlines included: rkt stores it in the pod manifest, no shell is
//! involved).

use std::collections::BTreeMap;
use std::net::IpAddr;

use nomad_driver_sdk::{DriverError, TaskConfig, cty};
use serde::Deserialize;

/// The oldest rkt the driver accepts (CPU and memory isolators).
pub const MIN_VERSION: (u64, u64, u64) = (1, 27, 0);

/// The environment `rkt` itself runs with: a PATH (it runs iptables and
/// its stage1 tools), never the host's environment.
pub const RKT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long `rkt trust` / `rkt prepare` may take (prepare fetches images).
pub const PREPARE_TIMEOUT_MS: u32 = 15 * 60 * 1000;

/// What `--insecure-options` accepts (rkt 1.x).
pub const INSECURE_OPTIONS: [&str; 12] = [
    "none",
    "image",
    "tls",
    "ondisk",
    "http",
    "pubkey",
    "capabilities",
    "paths",
    "seccomp",
    "all-fetch",
    "all-run",
    "all",
];

/// The agent's `plugin "..." { config { } }` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PluginConfig {
    #[serde(default = "default_true")]
    pub volumes_enabled: bool,
}

fn default_true() -> bool {
    true
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            volumes_enabled: true,
        }
    }
}

/// A task's `config { }` block.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskConf {
    pub image: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub trust_prefix: Option<String>,
    #[serde(default)]
    pub dns_servers: Vec<String>,
    #[serde(default)]
    pub dns_search_domains: Vec<String>,
    #[serde(default)]
    pub net: Vec<String>,
    /// `port_map = { app = "8080-tcp" }` or the block form (a list of
    /// maps): Nomad port label to the port *name* in the image manifest.
    #[serde(default)]
    pub port_map: Option<serde_json::Value>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub insecure_options: Vec<String>,
    #[serde(default)]
    pub no_overlay: bool,
    #[serde(default)]
    pub debug: bool,
    #[serde(default)]
    pub group: Option<String>,
}

/// Decodes the task's cty-msgpack config.
pub fn decode_task(bytes: &[u8]) -> Result<TaskConf, DriverError> {
    cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)
}

/// Decodes the agent's cty-msgpack plugin config (empty = defaults).
pub fn decode_plugin(bytes: &[u8]) -> Result<PluginConfig, DriverError> {
    cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)
}

/// The commands that start one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `rkt trust ...` when `trust_prefix` is set.
    pub trust: Option<Vec<String>>,
    /// `rkt ... prepare ...`: prints the pod UUID.
    pub prepare: Vec<String>,
    /// `rkt ... run-prepared ...` without the UUID (appended once known).
    pub run_prepared: Vec<String>,
}

impl Plan {
    /// The run-prepared argv for the pod `uuid`.
    pub fn run_prepared_for(&self, uuid: &str) -> Vec<String> {
        let mut v = self.run_prepared.clone();
        v.push(uuid.to_owned());
        v
    }
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> DriverError {
    DriverError::InvalidConfig(format!("field \"{field}\": {msg}"))
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// `port_map` as (Nomad port label, manifest port name), label order.
pub fn port_map(conf: &TaskConf) -> Result<BTreeMap<String, String>, DriverError> {
    let Some(value) = &conf.port_map else {
        return Ok(BTreeMap::new());
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
                        format!("expected a map of port label to manifest port name, got {v}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(invalid(
                "port_map",
                format!(
                    "expected a map of port label to manifest port name, e.g. {{ app = \"8080-tcp\" }}, got {other}"
                ),
            ));
        }
    };
    let mut out = BTreeMap::new();
    for m in maps {
        for (label, v) in m {
            let field = format!("port_map.{label}");
            let name = match v {
                serde_json::Value::String(t) => t.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(invalid(
                        &field,
                        format!("expected a port name, got {other}"),
                    ));
                }
            };
            if name.is_empty() || name.contains([':', ',', ' ']) {
                return Err(invalid(
                    &field,
                    format!("{name:?} is not a manifest port name"),
                ));
            }
            out.insert(label.clone(), name);
        }
    }
    Ok(out)
}

/// rkt volume names may not contain `_` (nomad#2358).
fn sanitized(name: &str) -> String {
    name.replace('_', "-")
}

/// Validates `conf` against `task` and the agent config and builds the
/// command lines.
pub fn plan(
    conf: &TaskConf,
    task: &TaskConfig,
    plugin: &PluginConfig,
) -> Result<Plan, DriverError> {
    if conf.image.trim().is_empty() {
        return Err(invalid("image", "must not be empty"));
    }
    for (i, o) in conf.insecure_options.iter().enumerate() {
        if !INSECURE_OPTIONS.contains(&o.as_str()) {
            return Err(invalid(
                &format!("insecure_options[{i}]"),
                format!(
                    "unknown option {o:?}; expected one of {}",
                    INSECURE_OPTIONS.join(", ")
                ),
            ));
        }
    }
    let debug = format!("--debug={}", conf.debug);
    let trust_prefix = conf.trust_prefix.as_deref().filter(|p| !p.is_empty());
    let trust = trust_prefix.map(|p| {
        vec![
            s("trust"),
            s("--skip-fingerprint-review=true"),
            format!("--prefix={p}"),
            debug.clone(),
        ]
    });
    let mut global = vec![];
    if !conf.insecure_options.is_empty() {
        global.push(format!(
            "--insecure-options={}",
            conf.insecure_options.join(",")
        ));
    } else if trust.is_none() {
        // Without a trust prefix the image signature is not checked.
        global.push(s("--insecure-options=all"));
    }
    global.push(debug);

    let mut prepare = global.clone();
    prepare.push(s("prepare"));
    let mut run = global;
    run.push(s("run-prepared"));

    if conf.no_overlay {
        prepare.push(s("--no-overlay=true"));
    }
    let task_name = sanitized(&task.name);
    let alloc_dir = task.alloc_dir.trim_end_matches('/');
    let task_dir = format!("{alloc_dir}/{}", task.name);
    for (suffix, source, target) in [
        ("alloc", format!("{alloc_dir}/alloc"), "/alloc"),
        ("local", format!("{task_dir}/local"), "/local"),
        ("secrets", format!("{task_dir}/secrets"), "/secrets"),
    ] {
        let vol = format!("{}-{task_name}-{suffix}", task.alloc_id);
        prepare.push(format!("--volume={vol},kind=host,source={source}"));
        prepare.push(format!("--mount=volume={vol},target={target}"));
    }
    if !conf.volumes.is_empty() && !plugin.volumes_enabled {
        return Err(invalid(
            "volumes",
            "volumes_enabled is false in the agent's plugin config; host volumes are not allowed",
        ));
    }
    for (i, raw) in conf.volumes.iter().enumerate() {
        let field = format!("volumes[{i}]");
        let parts: Vec<&str> = raw.split(':').collect();
        let read_only = match parts.as_slice() {
            [_, _] => false,
            [_, _, "readOnly"] => true,
            _ => {
                return Err(invalid(
                    &field,
                    format!("expected \"/host/path:/path/in/container[:readOnly]\", got {raw:?}"),
                ));
            }
        };
        let (src, dst) = (parts[0], parts[1]);
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(invalid(
                &field,
                format!("both paths must be absolute, got {raw:?}"),
            ));
        }
        if src.contains(',') {
            return Err(invalid(
                &field,
                format!("a comma cannot be part of a rkt volume source: {src:?}"),
            ));
        }
        let vol = format!("{}-{task_name}-{i}", task.alloc_id);
        prepare.push(format!(
            "--volume={vol},kind=host,source={src},readOnly={read_only}"
        ));
        prepare.push(format!("--mount=volume={vol},target={dst}"));
    }
    for (i, m) in task.mounts.iter().enumerate() {
        let vol = format!("{}-{task_name}-taskmounts-{i}", task.alloc_id);
        prepare.push(format!(
            "--volume={vol},kind=host,source={},readOnly={}",
            m.host_path, m.readonly
        ));
        prepare.push(format!("--mount=volume={vol},target={}", m.task_path));
    }
    let mut env: Vec<&(String, String)> = task.env.iter().collect();
    env.sort();
    for (k, v) in env {
        prepare.push(format!("--set-env={k}={v}"));
    }
    prepare.push(conf.image.clone());
    if let Some(c) = conf.command.as_deref().filter(|c| !c.is_empty()) {
        prepare.push(format!("--exec={c}"));
    }
    prepare.push(format!("--memory={}", task.resources.memory_limit_bytes));
    prepare.push(format!("--cpu={}", task.resources.cpu_shares));

    if conf.dns_servers.len() == 1 && matches!(conf.dns_servers[0].as_str(), "host" | "none") {
        run.push(format!("--dns={}", conf.dns_servers[0]));
    } else {
        for (i, ip) in conf.dns_servers.iter().enumerate() {
            if ip.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    &format!("dns_servers[{i}]"),
                    format!(
                        "{ip:?} is not an IP address (or the single value \"host\" / \"none\")"
                    ),
                ));
            }
            run.push(format!("--dns={ip}"));
        }
    }
    for (i, d) in conf.dns_search_domains.iter().enumerate() {
        if d.is_empty() || d.contains(char::is_whitespace) {
            return Err(invalid(
                &format!("dns_search_domains[{i}]"),
                format!("{d:?} is not a domain"),
            ));
        }
        run.push(format!("--dns-search={d}"));
    }
    let network = conf.net.join(",");
    if !network.is_empty() {
        run.push(format!("--net={network}"));
    }

    let ports = port_map(conf)?;
    if task.resources.ports.is_empty() {
        if !ports.is_empty() {
            return Err(invalid(
                "port_map",
                "the task has no ports to map; add them to the group's network block",
            ));
        }
    } else if network != "host" {
        for p in &task.resources.ports {
            let name = ports.get(&p.label).ok_or_else(|| {
                invalid(
                    "port_map",
                    format!(
                        "the task has a port labelled {:?} but port_map does not say which manifest port it is",
                        p.label
                    ),
                )
            })?;
            prepare.push(format!("--port={name}:{}", p.value));
        }
        for label in ports.keys() {
            if !task.resources.ports.iter().any(|p| &p.label == label) {
                return Err(invalid(
                    &format!("port_map.{label}"),
                    format!("the task has no port labelled {label:?}"),
                ));
            }
        }
    }
    if !task.user.is_empty() {
        prepare.push(format!("--user={}", task.user));
    }
    if let Some(g) = conf.group.as_deref().filter(|g| !g.is_empty()) {
        prepare.push(format!("--group={g}"));
    }
    if !conf.args.is_empty() {
        prepare.push(s("--"));
        prepare.extend(conf.args.iter().cloned());
    }
    Ok(Plan {
        trust,
        prepare,
        run_prepared: run,
    })
}

/// The pod UUID `rkt prepare` printed (its last non-empty stdout line).
pub fn parse_uuid(stdout: &str) -> Result<String, String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| "rkt prepare printed no pod UUID".to_owned())?;
    if line.len() >= 8 && line.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Ok(line.to_owned())
    } else {
        Err(format!("rkt prepare printed {line:?}, not a pod UUID"))
    }
}

/// `rkt enter <uuid> <command...>`.
pub fn enter_args(uuid: &str, command: &[String]) -> Vec<String> {
    let mut v = vec![s("enter"), s(uuid)];
    v.extend(command.iter().cloned());
    v
}

/// rkt's and appc's versions from `rkt version`
/// (`rkt Version: 1.30.0` / `appc Version: 0.8.11`).
pub fn parse_versions(output: &str) -> Option<(String, String)> {
    let find = |prefix: &str| {
        output.lines().find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(prefix)?.trim_start();
            let rest = rest
                .strip_prefix("Version")
                .or_else(|| rest.strip_prefix("version"))?;
            let v = rest.trim_start_matches(':').split_whitespace().next()?;
            v.starts_with(|c: char| c.is_ascii_digit())
                .then(|| v.to_owned())
        })
    };
    Some((find("rkt")?, find("appc")?))
}

/// `1.30.0` -> (1, 30, 0); missing parts are 0, a suffix (`-rc1`) is
/// ignored.
pub fn semver(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// A command line for messages, with `--set-env` values left out.
pub fn display_args(args: &[String]) -> String {
    let mut out = vec![s("rkt")];
    for a in args {
        match a.strip_prefix("--set-env=") {
            Some(kv) => {
                let key = kv.split_once('=').map_or(kv, |(k, _)| k);
                out.push(format!("--set-env={key}=…"));
            }
            None => out.push(a.clone()),
        }
    }
    out.join(" ")
}
