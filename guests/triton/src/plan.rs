//! Pure request planning: a decoded task config to the exact CloudAPI and
//! sdc-docker requests (method, path with query, JSON body), the choice of
//! package/image/networks from list answers, and the meaning of instance
//! states. No I/O here; `lib.rs` sends what this plans.

use std::collections::BTreeMap;

use base64::Engine;
use nomad_driver_sdk::DriverError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::config::{CloudApi, CloudImage, DockerApi, ExitStrategy, Network, Package, TaskConf};

/// Characters left as they are in a query value or path segment.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one query value or path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// One planned HTTP request, relative to the API's base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub method: &'static str,
    /// Path and query, e.g. `/acct/machines?name=x`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// How long the whole exchange may take; none: the client's default.
    pub timeout_ms: Option<u32>,
}

impl Req {
    fn new(method: &'static str, path: String) -> Req {
        Req {
            method,
            path,
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        }
    }

    fn json(mut self, body: Value) -> Req {
        self.body = Some(body);
        self
    }
}

/// The instance name: `<job>-<group>-<task>-<first 8 of the alloc id>`,
/// as the seed driver named them.
pub fn instance_name(job: &str, group: &str, task: &str, alloc_id: &str) -> String {
    let short: String = alloc_id.chars().take(8).collect();
    format!("{job}-{group}-{task}-{short}")
}

// ---------------------------------------------------------------- CloudAPI

/// The package lookup: by uuid directly, else the list filtered by name
/// (and version).
pub fn package_lookup(account: &str, p: &Package) -> Req {
    if let Some(id) = p.uuid.as_deref().filter(|s| !s.is_empty()) {
        return Req::new("GET", format!("/{}/packages/{}", enc(account), enc(id)));
    }
    let mut q = format!("name={}", enc(p.name.as_deref().unwrap_or_default()));
    if let Some(v) = &p.version {
        q.push_str(&format!("&version={}", enc(v)));
    }
    Req::new("GET", format!("/{}/packages?{q}", enc(account)))
}

/// The image lookup: by uuid directly, else the list by name (and
/// version).
pub fn image_lookup(account: &str, i: &CloudImage) -> Req {
    if let Some(id) = i.uuid.as_deref().filter(|s| !s.is_empty()) {
        return Req::new("GET", format!("/{}/images/{}", enc(account), enc(id)));
    }
    let mut q = format!("name={}", enc(i.name.as_deref().unwrap_or_default()));
    if let Some(v) = &i.version {
        q.push_str(&format!("&version={}", enc(v)));
    }
    Req::new("GET", format!("/{}/images?{q}", enc(account)))
}

/// The network list (names are resolved against it).
pub fn networks_lookup(account: &str) -> Req {
    Req::new("GET", format!("/{}/networks", enc(account)))
}

fn items(answer: &Value) -> Vec<&Value> {
    match answer {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![answer],
        _ => vec![],
    }
}

fn id_of(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// The package's uuid from the lookup's answer: exactly one must match.
pub fn pick_package(p: &Package, answer: &Value) -> Result<String, DriverError> {
    let found: Vec<&Value> = items(answer)
        .into_iter()
        .filter(|v| match (&p.uuid, &p.name) {
            (Some(u), _) if !u.is_empty() => id_of(v) == Some(u.as_str()),
            (_, Some(n)) => v.get("name").and_then(Value::as_str) == Some(n.as_str()),
            _ => false,
        })
        .filter(|v| match &p.version {
            Some(want) => v.get("version").and_then(Value::as_str) == Some(want.as_str()),
            None => true,
        })
        .collect();
    let what = describe(&p.name, &p.uuid, &p.version);
    match found.as_slice() {
        [one] => id_of(one)
            .map(str::to_owned)
            .ok_or_else(|| DriverError::Fatal(format!("package {what}: the answer has no id"))),
        [] => Err(DriverError::InvalidConfig(format!(
            "package: no package matches {what}"
        ))),
        many => Err(DriverError::InvalidConfig(format!(
            "package: {} packages match {what} (versions {}); set package.version or package.uuid",
            many.len(),
            versions(many)
        ))),
    }
}

fn describe(name: &Option<String>, uuid: &Option<String>, version: &Option<String>) -> String {
    let mut s = match (uuid, name) {
        (Some(u), _) if !u.is_empty() => format!("uuid {u:?}"),
        (_, Some(n)) => format!("name {n:?}"),
        _ => "nothing".into(),
    };
    if let Some(v) = version {
        s.push_str(&format!(" version {v:?}"));
    }
    s
}

fn versions(vs: &[&Value]) -> String {
    vs.iter()
        .map(|v| v.get("version").and_then(Value::as_str).unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Orders image versions the way the seed driver did for `most_recent`:
/// by `published_at`, then by the digits of the version.
fn recency(v: &Value) -> (String, u128) {
    let published = v
        .get("published_at")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let digits: String = v
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .take(38)
        .collect();
    (published, digits.parse().unwrap_or(0))
}

/// The image's uuid from the lookup's answer: exactly one must match,
/// unless `most_recent` picks the newest.
pub fn pick_image(i: &CloudImage, answer: &Value) -> Result<String, DriverError> {
    let mut found: Vec<&Value> = items(answer)
        .into_iter()
        .filter(|v| match (&i.uuid, &i.name) {
            (Some(u), _) if !u.is_empty() => id_of(v) == Some(u.as_str()),
            (_, Some(n)) => v.get("name").and_then(Value::as_str) == Some(n.as_str()),
            _ => false,
        })
        .filter(|v| match &i.version {
            Some(want) => v.get("version").and_then(Value::as_str) == Some(want.as_str()),
            None => true,
        })
        .collect();
    let what = describe(&i.name, &i.uuid, &i.version);
    if found.len() > 1 && i.most_recent == Some(true) {
        found.sort_by_key(|v| recency(v));
        found.drain(..found.len() - 1);
    }
    match found.as_slice() {
        [one] => id_of(one).map(str::to_owned).ok_or_else(|| {
            DriverError::Fatal(format!("cloud_api.image {what}: the answer has no id"))
        }),
        [] => Err(DriverError::InvalidConfig(format!(
            "cloud_api.image: no active image matches {what}"
        ))),
        many => Err(DriverError::InvalidConfig(format!(
            "cloud_api.image: {} images match {what} (versions {}); set version, uuid or most_recent = true",
            many.len(),
            versions(many)
        ))),
    }
}

/// The network uuids, in the order the job lists them.
pub fn pick_networks(nets: &[Network], answer: &Value) -> Result<Vec<String>, DriverError> {
    let all = items(answer);
    nets.iter()
        .enumerate()
        .map(|(i, n)| {
            if let Some(u) = n.uuid.as_deref().filter(|s| !s.is_empty()) {
                return Ok(u.to_owned());
            }
            let name = n.name.as_deref().unwrap_or_default();
            let m: Vec<&&Value> = all
                .iter()
                .filter(|v| v.get("name").and_then(Value::as_str) == Some(name))
                .collect();
            match m.as_slice() {
                [one] => id_of(one).map(str::to_owned).ok_or_else(|| {
                    DriverError::Fatal(format!("network {name:?}: the answer has no id"))
                }),
                [] => Err(DriverError::InvalidConfig(format!(
                    "cloud_api.networks[{i}].name: no network named {name:?} in this account"
                ))),
                _ => Err(DriverError::InvalidConfig(format!(
                    "cloud_api.networks[{i}].name: several networks are named {name:?}; use uuid"
                ))),
            }
        })
        .collect()
}

/// The firewall rule to create for `fwrules.<key> = rule`.
pub fn create_fwrule(account: &str, key: &str, rule: &str) -> Req {
    Req::new("POST", format!("/{}/fwrules", enc(account))).json(json!({
        "enabled": true,
        "rule": rule,
        "description": format!("Nomad FWRule for service: {key}"),
    }))
}

/// Deleting a firewall rule this driver created.
pub fn delete_fwrule(account: &str, id: &str) -> Req {
    Req::new("DELETE", format!("/{}/fwrules/{}", enc(account), enc(id)))
}

/// The CNS services tag value, if any services are named.
fn cns_tag(conf: &TaskConf) -> Option<String> {
    (!conf.cns.is_empty()).then(|| conf.cns.join(","))
}

/// The metadata a cloud_api instance gets: `env-vars` (the task's
/// environment as JSON), and the image-facing keys: `user-data`,
/// `user-script`, and `cloud_config` as `cloud-init:user-data` (the key
/// cloud-init's SmartOS datasource reads).
pub fn cloud_metadata(c: &CloudApi, env: &[(String, String)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if !env.is_empty() {
        let obj: Map<String, Value> = env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        m.insert("env-vars".to_owned(), Value::Object(obj).to_string());
    }
    for (key, v) in [
        ("user-data", &c.user_data),
        ("user-script", &c.user_script),
        ("cloud-init:user-data", &c.cloud_config),
    ] {
        if let Some(v) = v {
            m.insert(key.to_owned(), v.clone());
        }
    }
    m
}

/// CreateMachine.
#[derive(Debug)]
pub struct MachineSpec<'a> {
    pub name: &'a str,
    pub package: &'a str,
    pub image: &'a str,
    pub networks: &'a [String],
    pub env: &'a [(String, String)],
}

/// `POST /:login/machines` with its exact body.
pub fn create_machine(account: &str, conf: &TaskConf, c: &CloudApi, spec: &MachineSpec) -> Req {
    let mut body = Map::new();
    body.insert("name".into(), json!(spec.name));
    body.insert("package".into(), json!(spec.package));
    body.insert("image".into(), json!(spec.image));
    if !spec.networks.is_empty() {
        body.insert("networks".into(), json!(spec.networks));
    }
    if !conf.affinity.is_empty() {
        body.insert("affinity".into(), json!(conf.affinity));
    }
    if let Some(fw) = conf.fwenabled {
        body.insert("firewall_enabled".into(), json!(fw));
    }
    if let Some(dp) = conf.deletion_protection {
        body.insert("deletion_protection".into(), json!(dp));
    }
    for (k, v) in &conf.tags {
        body.insert(format!("tag.{k}"), json!(v));
    }
    if let Some(s) = cns_tag(conf) {
        body.insert("tag.triton.cns.services".into(), json!(s));
    }
    for (k, v) in cloud_metadata(c, spec.env) {
        body.insert(format!("metadata.{k}"), json!(v));
    }
    Req::new("POST", format!("/{}/machines", enc(account))).json(Value::Object(body))
}

/// GetMachine.
pub fn get_machine(account: &str, id: &str) -> Req {
    Req::new("GET", format!("/{}/machines/{}", enc(account), enc(id)))
}

/// A machine action (`stop`, `start`, `enable_deletion_protection`, ...).
pub fn machine_action(account: &str, id: &str, action: &str) -> Req {
    Req::new(
        "POST",
        format!(
            "/{}/machines/{}?action={}",
            enc(account),
            enc(id),
            enc(action)
        ),
    )
}

/// DeleteMachine.
pub fn delete_machine(account: &str, id: &str) -> Req {
    Req::new("DELETE", format!("/{}/machines/{}", enc(account), enc(id)))
}

/// Tags added to a docker_api instance through CloudAPI (sdc-docker has no
/// tags of its own).
pub fn add_tags(account: &str, id: &str, tags: &BTreeMap<String, String>) -> Req {
    Req::new(
        "POST",
        format!("/{}/machines/{}/tags", enc(account), enc(id)),
    )
    .json(json!(tags))
}

/// What a machine's public state means for the task.
#[derive(Debug, Clone, PartialEq)]
pub enum MachinePhase {
    /// provisioning/ready: not up yet.
    Pending,
    Running,
    /// stopping: on its way down (soon stopped or gone).
    Stopping,
    /// stopped under `exit_strategy = "deleted"`: waited past until the
    /// machine is deleted, however long that takes.
    Stopped,
    /// The task is over, with this exit code and, if failed, a message.
    Exited {
        code: i32,
        err: Option<String>,
    },
    /// offline/unknown (or anything new): keep watching, kill nothing.
    Unknown,
}

/// The task event for what a poll saw (`what` is "machine" or
/// "container"), or none once the task is over (the host reports the
/// exit). Sent on every poll: the host passes on only changes.
pub fn progress(what: &str, name: &str, phase: &MachinePhase, ip: Option<&str>) -> Option<String> {
    let state = match phase {
        MachinePhase::Pending => "is being provisioned".to_owned(),
        MachinePhase::Running => match ip {
            Some(ip) => format!("is running at {ip}"),
            None => "is running".to_owned(),
        },
        MachinePhase::Stopping => "is stopping".to_owned(),
        MachinePhase::Stopped => {
            "is stopped; the task ends when it is deleted (exit_strategy \"deleted\")".to_owned()
        }
        MachinePhase::Unknown => "is offline or in an unknown state; still watching it".to_owned(),
        MachinePhase::Exited { .. } => return None,
    };
    Some(format!("Triton {what} {name} {state}"))
}

/// The meaning of CloudAPI's `state` under an exit strategy: `failed` is a
/// non-zero exit; `stopped` ends the task under `stopped` (exit 0) and is
/// waited past under `deleted`; `deleted` always ends it.
pub fn machine_phase(state: &str, strategy: ExitStrategy) -> MachinePhase {
    match state {
        "provisioning" | "ready" => MachinePhase::Pending,
        "running" => MachinePhase::Running,
        "stopping" => MachinePhase::Stopping,
        "stopped" if strategy == ExitStrategy::Stopped => {
            MachinePhase::Exited { code: 0, err: None }
        }
        "stopped" => MachinePhase::Stopped,
        "deleted" => MachinePhase::Exited { code: 0, err: None },
        "failed" => MachinePhase::Exited {
            code: 1,
            err: Some("the Triton instance failed (state \"failed\")".into()),
        },
        _ => MachinePhase::Unknown,
    }
}

// ------------------------------------------------------------- sdc-docker

/// The Triton instance UUID of a Docker container id: its first 32 hex
/// digits, dashed 8-4-4-4-12.
pub fn docker_instance_uuid(docker_id: &str) -> Option<String> {
    let hex: String = docker_id.chars().take(32).collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn image_ref(d: &DockerApi) -> (String, String) {
    (
        d.image.name.clone(),
        d.image.tag.clone().unwrap_or_else(|| "latest".into()),
    )
}

/// `POST /images/create` (pull), with `X-Registry-Auth` when `auth` is set.
pub fn pull_image(version: &str, d: &DockerApi) -> Req {
    let (name, tag) = image_ref(d);
    let mut r = Req::new(
        "POST",
        format!(
            "/v{version}/images/create?fromImage={}&tag={}",
            enc(&name),
            enc(&tag)
        ),
    );
    if let Some(a) = &d.auth {
        let mut o = Map::new();
        for (k, v) in [
            ("username", &a.username),
            ("password", &a.password),
            ("email", &a.email),
            ("serveraddress", &a.server_address),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        }
        let header = base64::engine::general_purpose::URL_SAFE.encode(Value::Object(o).to_string());
        r.headers.push(("X-Registry-Auth".into(), header));
    }
    r
}

/// `POST /containers/create?name=` with its exact body.
pub fn create_container(
    version: &str,
    conf: &TaskConf,
    d: &DockerApi,
    name: &str,
    package: &str,
    env: &[(String, String)],
) -> Result<Req, DriverError> {
    let (image, tag) = image_ref(d);
    let mut body = Map::new();
    body.insert("Image".into(), json!(format!("{image}:{tag}")));
    if !d.cmd.is_empty() {
        body.insert("Cmd".into(), json!(d.cmd));
    }
    if !d.entrypoint.is_empty() {
        body.insert("Entrypoint".into(), json!(d.entrypoint));
    }
    for (k, v) in [
        ("OpenStdin", d.openstdin),
        ("StdinOnce", d.stdinonce),
        ("Tty", d.tty),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [
        ("WorkingDir", &d.workingdir),
        ("Hostname", &d.hostname),
        ("Domainname", &d.domain_name),
        ("User", &d.user),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    let mut envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    envs.extend(conf.affinity.iter().map(|a| format!("affinity:{a}")));
    if !envs.is_empty() {
        body.insert("Env".into(), json!(envs));
    }
    let mut labels: BTreeMap<String, String> = d.labels.clone();
    // No package named: sdc-docker picks its default (or by memory).
    if !package.is_empty() {
        labels.insert("com.joyent.package".into(), package.to_owned());
    }
    if let Some(p) = &d.public_network {
        labels.insert("triton.network.public".into(), p.clone());
    }
    if let Some(s) = cns_tag(conf) {
        labels.insert("triton.cns.services".into(), s);
    }
    body.insert("Labels".into(), json!(labels));

    let mut host = Map::new();
    if !d.dns.is_empty() {
        host.insert("Dns".into(), json!(d.dns));
    }
    if !d.dns_search.is_empty() {
        host.insert("DnsSearch".into(), json!(d.dns_search));
    }
    if !d.extra_hosts.is_empty() {
        host.insert("ExtraHosts".into(), json!(d.extra_hosts));
    }
    if let Some(n) = &d.private_network {
        host.insert("NetworkMode".into(), json!(n));
    }
    if let Some(p) = &d.ports {
        let mut exposed = Map::new();
        let mut bindings = Map::new();
        for (proto, list) in [("tcp", &p.tcp), ("udp", &p.udp)] {
            for port in list {
                let key = format!("{port}/{proto}");
                exposed.insert(key.clone(), json!({}));
                bindings.insert(key, json!([{"HostPort": port.to_string()}]));
            }
        }
        if !exposed.is_empty() {
            body.insert("ExposedPorts".into(), Value::Object(exposed));
            host.insert("PortBindings".into(), Value::Object(bindings));
        }
        if let Some(all) = p.publish_all {
            host.insert("PublishAllPorts".into(), json!(all));
        }
    }
    if let Some(rp) = &d.restart_policy {
        let (name, max) = crate::config::restart_policy(rp)?;
        host.insert(
            "RestartPolicy".into(),
            json!({"Name": name, "MaximumRetryCount": max.unwrap_or(0)}),
        );
    }
    if let Some(lc) = &d.log_config {
        let mut l = Map::new();
        if let Some(t) = &lc.kind {
            l.insert("Type".into(), json!(t));
        }
        l.insert("Config".into(), json!(lc.config));
        host.insert("LogConfig".into(), Value::Object(l));
    }
    body.insert("HostConfig".into(), Value::Object(host));
    Ok(Req::new(
        "POST",
        format!("/v{version}/containers/create?name={}", enc(name)),
    )
    .json(Value::Object(body)))
}

/// Start, inspect, stop with a grace period, kill, delete.
pub fn start_container(version: &str, id: &str) -> Req {
    Req::new("POST", format!("/v{version}/containers/{}/start", enc(id)))
}

pub fn inspect_container(version: &str, id: &str) -> Req {
    Req::new("GET", format!("/v{version}/containers/{}/json", enc(id)))
}

/// The `t` of `stop?t=` for a kill timeout: whole seconds, rounded up, at
/// least 1 (0 would be an immediate SIGKILL).
pub fn stop_timeout_secs(timeout_ms: u32) -> u64 {
    u64::from(timeout_ms).div_ceil(1000).max(1)
}

/// `stop?t=<seconds>`: Docker sends SIGTERM, then SIGKILL after `t`, and
/// answers once the container has ended, so the request may take `t`
/// seconds plus a minute (at most the host's 10 minutes).
pub fn stop_container(version: &str, id: &str, timeout_secs: u64) -> Req {
    let mut r = Req::new(
        "POST",
        format!("/v{version}/containers/{}/stop?t={timeout_secs}", enc(id)),
    );
    let wait_ms = timeout_secs.saturating_mul(1000).saturating_add(60_000);
    r.timeout_ms = Some(u32::try_from(wait_ms.min(600_000)).unwrap_or(600_000));
    r
}

pub fn kill_container(version: &str, id: &str, signal: &str) -> Req {
    Req::new(
        "POST",
        format!(
            "/v{version}/containers/{}/kill?signal={}",
            enc(id),
            enc(signal)
        ),
    )
}

pub fn delete_container(version: &str, id: &str) -> Req {
    Req::new(
        "DELETE",
        format!("/v{version}/containers/{}?force=1", enc(id)),
    )
}

/// One stats sample (`stream=0`): sdc-docker reports a container's
/// memory; Triton has no stats for CloudAPI machines here.
pub fn container_stats(version: &str, id: &str) -> Req {
    Req::new(
        "GET",
        format!("/v{version}/containers/{}/stats?stream=0", enc(id)),
    )
}

/// Memory usage and its peak, in bytes, from a stats sample.
pub fn stats_memory(sample: &Value) -> (Option<u64>, Option<u64>) {
    let m = &sample["memory_stats"];
    (m["usage"].as_u64(), m["max_usage"].as_u64())
}

/// CPU use from one stats sample, as `docker stats` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuPercent {
    /// Percent of one core, summed over cores.
    pub total: Option<f64>,
    pub user: Option<f64>,
    pub system: Option<f64>,
}

/// Docker's formula over the sample's `cpu_stats` and `precpu_stats`: the
/// container's CPU time delta over the host's (`system_cpu_usage`) delta,
/// times the CPUs (`online_cpus`, else the length of `percpu_usage`, as
/// API versions before 1.27 have no `online_cpus`), times 100. User and
/// system use `usage_in_usermode` / `usage_in_kernelmode` the same way.
/// A value is none when its counters are missing, there is no previous
/// reading (`precpu_stats.system_cpu_usage` absent or 0), the system delta
/// is zero, or a counter went backwards: nothing is made up. A container
/// that used no CPU between the readings is 0 %.
pub fn stats_cpu(sample: &Value) -> CpuPercent {
    let (cur, pre) = (&sample["cpu_stats"], &sample["precpu_stats"]);
    let at = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).as_u64();
    let delta = |path: &[&str]| at(cur, path)?.checked_sub(at(pre, path)?);
    // A first sample's precpu_stats is zeros: no earlier reading, no rate.
    if at(pre, &["system_cpu_usage"]).unwrap_or(0) == 0 {
        return CpuPercent::default();
    }
    let Some(system) = delta(&["system_cpu_usage"]).filter(|d| *d > 0) else {
        return CpuPercent::default();
    };
    let cpus = cur["online_cpus"].as_u64().filter(|n| *n > 0).or_else(|| {
        cur["cpu_usage"]["percpu_usage"]
            .as_array()
            .map(|a| a.len() as u64)
            .filter(|n| *n > 0)
    });
    let Some(cpus) = cpus else {
        return CpuPercent::default();
    };
    let percent = |d: u64| d as f64 / system as f64 * cpus as f64 * 100.0;
    CpuPercent {
        total: delta(&["cpu_usage", "total_usage"]).map(percent),
        user: delta(&["cpu_usage", "usage_in_usermode"]).map(percent),
        system: delta(&["cpu_usage", "usage_in_kernelmode"]).map(percent),
    }
}

/// A CloudAPI machine's primary IP (`primaryIp` of GetMachine), if it has
/// one yet.
pub fn machine_ip(machine: &Value) -> Option<String> {
    machine["primaryIp"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned)
}

/// A container's IP from its inspect (`NetworkSettings.IPAddress`; on
/// Triton the instance's primary IP), if it has one yet.
pub fn container_ip(inspect: &Value) -> Option<String> {
    inspect["NetworkSettings"]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned)
}

/// What a container inspect says: running, or exited with a code.
pub fn container_phase(inspect: &Value) -> MachinePhase {
    let state = &inspect["State"];
    if state["Running"].as_bool() == Some(true) || state["Restarting"].as_bool() == Some(true) {
        return MachinePhase::Running;
    }
    match state["ExitCode"].as_i64() {
        Some(code) if state["Status"].as_str() != Some("created") => MachinePhase::Exited {
            code: i32::try_from(code).unwrap_or(i32::MAX),
            err: state["Error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
        },
        _ => MachinePhase::Pending,
    }
}

// ------------------------------------------------------------- errors

/// Whether an answer's status should be retried after a pause: CloudAPI's
/// 420 (slow down), 429 and 503 (no capacity / maintenance).
pub fn retryable(status: u16) -> bool {
    matches!(status, 420 | 429 | 502 | 503 | 504)
}

/// How long to wait after a throttled answer: its `Retry-After` (seconds,
/// kept between 1 s and 60 s), else `default_ms`.
pub fn backoff_ms(retry_after: Option<u32>, default_ms: u32) -> u32 {
    match retry_after {
        Some(s) => s.clamp(1, 60) * 1000,
        None => default_ms,
    }
}

/// A clear message for an error answer: CloudAPI's `{code, message}` or
/// Docker's `{message}`, with what the code means.
pub fn error_message(what: &str, status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v.get("code").and_then(Value::as_str).unwrap_or_default();
    let msg = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        });
    let hint = match (status, code) {
        (_, "InvalidCredentials") => {
            " (check account, key and keyId: the key must be on the account)"
        }
        (_, "NotAuthorized") => " (the account or RBAC user lacks permission for this)",
        (_, "ResourceNotFound") => " (no such resource in this datacenter)",
        (_, "InvalidArgument" | "MissingParameter" | "BadRequest") => {
            " (the request was refused as malformed)"
        }
        (_, "InvalidState") => " (the instance is not in a state that allows this)",
        (_, "CannotDestroyMachine") => " (deletion protection is on)",
        (_, "RequestThrottled") | (420 | 429, _) => " (rate limited; retrying later)",
        (503, _) => " (no capacity or maintenance; retrying later)",
        (_, "InvalidHeader" | "InvalidVersion") => " (the API refused a header or version)",
        (_, "InternalError" | "UnknownError") => " (a fault inside Triton)",
        _ => "",
    };
    let code = if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    };
    format!("{what}: HTTP {status}{code}: {msg}{hint}")
}
