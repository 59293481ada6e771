//! The Triton task driver (CloudAPI machines and sdc-docker containers) as
//! a WebAssembly guest.
//!
//! [`config`] holds the configuration surface (schemas, decoding, every
//! rejection), [`plan`] turns it into the exact CloudAPI/sdc-docker
//! requests. This module sends them through the host's `http` capability:
//! CloudAPI requests are signed by the host with the key of the `secret`
//! grant the plugin config names (the key never enters the guest), and
//! sdc-docker requests present the grant's client certificate.
//!
//! A task has no host process: `start-task` creates the instance and
//! returns at once with its id in the driver state; the host then calls
//! `poll-task`, which reads the instance's state and reports provisioning,
//! readiness and the real exit (docker: the container's exit code; cloud:
//! `failed` is non-zero, stopped/deleted per `exit_strategy`). Throttling
//! (420/429/503) is answered by polling later; network errors are
//! temporary errors the host retries.

pub mod config;
pub mod plan;

use nomad_driver_sdk::host::http::{self, HttpError, Request, Signing};
use nomad_driver_sdk::host::log;
use nomad_driver_sdk::{
    Attribute, AttributeValue, Driver, DriverCapabilities, DriverError, ExitResult,
    FingerprintReport, FsIsolation, Health, NetworkOverride, NomadConfig, PluginInfo, Spec,
    TaskConfig, TaskPoll, TaskRef, TaskStarted, TaskUsage, running,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use config::{Api, ExitStrategy};
use plan::{MachinePhase, Req};

use config::{PluginConf, TaskConf};

/// The driver name jobs use: `driver = "triton"`.
pub const NAME: &str = "triton";

/// The Triton driver.
#[derive(Debug)]
pub struct Triton;

/// How long a poll waits while an instance provisions, runs, or when
/// Triton asks us to slow down.
const POLL_PENDING_MS: u32 = 2_000;
const POLL_RUNNING_MS: u32 = 5_000;
const POLL_BACKOFF_MS: u32 = 15_000;
/// Per-request timeout (unless the request sets its own).
const REQUEST_TIMEOUT_MS: u32 = 60_000;

/// Which API a task's instance lives behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    CloudApi,
    DockerApi,
}

/// What a running task needs remembered (the driver state).
#[derive(Debug, Serialize, Deserialize)]
struct TaskState {
    kind: Kind,
    /// CloudAPI machine uuid, or the Docker container id.
    id: String,
    /// The Triton instance uuid (for docker: derived from the id).
    instance: Option<String>,
    name: String,
    exit_strategy: ExitStrategy,
    /// Firewall rules this task created (deleted on destroy).
    #[serde(default)]
    fwrules: Vec<String>,
}

fn state(task: &TaskRef) -> Result<TaskState, DriverError> {
    serde_json::from_slice(&task.driver_state)
        .map_err(|e| DriverError::Fatal(format!("the task's driver state is unreadable: {e}")))
}

/// One variable of the agent's environment through the host's `env`
/// capability (deny by default).
fn read_env(name: &str) -> config::EnvValue {
    use nomad_driver_sdk::host::env::{self, EnvError};
    match env::get(name) {
        Ok(Some(v)) => config::EnvValue::Set(v),
        Ok(None) => config::EnvValue::Unset,
        Err(EnvError::NotGranted(why)) => config::EnvValue::NotGranted(why),
        Err(EnvError::NotUnicode(why)) => config::EnvValue::NotUnicode(why),
    }
}

fn plugin_conf(config: &[u8]) -> Result<PluginConf, DriverError> {
    if config.is_empty() {
        return Ok(PluginConf::default());
    }
    serde_json::from_slice(config)
        .map_err(|e| DriverError::Fatal(format!("the plugin config is unreadable: {e}")))
}

/// One answer: status and parsed JSON body (null when empty or not JSON).
struct Answer {
    status: u16,
    /// `Retry-After` in seconds, if the answer carried one.
    retry_after: Option<u32>,
    body: Vec<u8>,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn http_error(what: &str, e: HttpError) -> DriverError {
    match e {
        HttpError::NotGranted(m) => DriverError::Fatal(format!("{what}: not granted: {m}")),
        HttpError::InvalidRequest(m) => DriverError::Fatal(format!("{what}: {m}")),
        HttpError::Key(m) => DriverError::Fatal(format!("{what}: the signing key: {m}")),
        HttpError::TooLarge(m) => DriverError::Fatal(format!("{what}: {m}")),
        HttpError::Timeout(m) | HttpError::Network(m) => {
            DriverError::Temporary(format!("{what}: {m}"))
        }
    }
}

/// The two endpoints, with what each needs to authenticate.
struct Client<'a> {
    conf: &'a PluginConf,
}

impl Client<'_> {
    fn account(&self) -> Result<&str, DriverError> {
        self.conf.account.as_deref().ok_or_else(|| {
            DriverError::InvalidConfig("account: the plugin config names no Triton account".into())
        })
    }

    /// Sends one CloudAPI request, signed by the host.
    fn cloud(&self, what: &str, req: &Req) -> Result<Answer, DriverError> {
        let base = self.conf.cloudapi_url.as_deref().ok_or_else(|| {
            DriverError::InvalidConfig(format!(
                "cloudapi_url: {what} needs CloudAPI, and neither the plugin config's cloudapi_url \
                 nor the agent's TRITON_URL or SDC_URL (a granted env) gives its URL"
            ))
        })?;
        let sign = Signing {
            key: self.conf.key.clone().unwrap_or_default(),
            key_id: self.conf.key_id.clone(),
            account: self.account()?.to_owned(),
            user: self.conf.user.clone(),
            algorithm: self.conf.algorithm.clone(),
        };
        let mut headers = vec![
            ("accept".to_owned(), "application/json".to_owned()),
            (
                "accept-version".to_owned(),
                self.conf.accept_version().to_owned(),
            ),
        ];
        self.send(what, base, req, &mut headers, Some(sign), None)
    }

    /// Sends one sdc-docker request with the TLS client certificate.
    fn docker(&self, what: &str, req: &Req) -> Result<Answer, DriverError> {
        let base = self.conf.docker_url.as_deref().ok_or_else(|| {
            DriverError::InvalidConfig(format!(
                "docker_url: {what} needs sdc-docker, and the plugin config has no docker_url"
            ))
        })?;
        let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
        self.send(
            what,
            base,
            req,
            &mut headers,
            None,
            self.conf.docker_cert.clone(),
        )
    }

    fn send(
        &self,
        what: &str,
        base: &str,
        req: &Req,
        headers: &mut Vec<(String, String)>,
        sign: Option<Signing>,
        client_cert: Option<String>,
    ) -> Result<Answer, DriverError> {
        headers.extend(req.headers.iter().cloned());
        let body = match &req.body {
            Some(b) => {
                headers.push(("content-type".into(), "application/json".into()));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let r = http::send(&Request {
            method: req.method.to_owned(),
            url: format!("{base}{}", req.path),
            headers: headers.clone(),
            body,
            timeout_ms: req.timeout_ms.unwrap_or(REQUEST_TIMEOUT_MS),
            sign,
            client_cert,
        })
        .map_err(|e| http_error(what, e))?;
        Ok(Answer {
            status: r.status,
            retry_after: r
                .headers
                .iter()
                .find(|(k, _)| k == "retry-after")
                .and_then(|(_, v)| v.trim().parse().ok()),
            body: r.body,
        })
    }
}

/// An error answer as a driver error: throttling and unavailability are
/// temporary, a refused config is invalid, the rest fatal.
fn refused(what: &str, a: &Answer) -> DriverError {
    let msg = plan::error_message(what, a.status, &a.body);
    if plan::retryable(a.status) {
        DriverError::Temporary(msg)
    } else if matches!(a.status, 400 | 404 | 409 | 422) {
        DriverError::InvalidConfig(msg)
    } else {
        DriverError::Fatal(msg)
    }
}

/// Sends and requires a 2xx answer.
fn expect(a: Result<Answer, DriverError>, what: &str) -> Result<Value, DriverError> {
    let a = a?;
    if a.ok() {
        Ok(a.json())
    } else {
        Err(refused(what, &a))
    }
}

fn event(message: &str, id: &str) {
    log::task_event(message, &[("instance".into(), id.to_owned())]);
}

fn start_cloud(
    client: &Client,
    conf: &TaskConf,
    cloud: &config::CloudApi,
    task: &TaskConfig,
) -> Result<TaskStarted, DriverError> {
    let account = client.account()?.to_owned();
    let name = plan::instance_name(&task.job_name, &task.task_group, &task.name, &task.alloc_id);
    let pkg = expect(
        client.cloud(
            "looking up the package",
            &plan::package_lookup(&account, &conf.package),
        ),
        "looking up the package",
    )?;
    let package = plan::pick_package(&conf.package, &pkg)?;
    let img = expect(
        client.cloud(
            "looking up the image",
            &plan::image_lookup(&account, &cloud.image),
        ),
        "looking up the image",
    )?;
    let image = plan::pick_image(&cloud.image, &img)?;
    let networks = if cloud.networks.iter().any(|n| n.uuid.is_none()) {
        let nets = expect(
            client.cloud("listing networks", &plan::networks_lookup(&account)),
            "listing networks",
        )?;
        plan::pick_networks(&cloud.networks, &nets)?
    } else {
        plan::pick_networks(&cloud.networks, &Value::Null)?
    };
    let mut fwrules = Vec::new();
    for (key, rule) in &conf.fwrules {
        let what = format!("creating firewall rule fwrules.{key}");
        let made = expect(
            client.cloud(&what, &plan::create_fwrule(&account, key, rule)),
            &what,
        )
        .inspect_err(|_| undo_fwrules(client, &account, &fwrules))?;
        if let Some(id) = made.get("id").and_then(Value::as_str) {
            fwrules.push(id.to_owned());
        }
    }
    let spec = plan::MachineSpec {
        name: &name,
        package: &package,
        image: &image,
        networks: &networks,
        env: &task.env,
    };
    // A failed start leaves nothing behind: the rules it made go again.
    let id = expect(
        client.cloud(
            "creating the machine",
            &plan::create_machine(&account, conf, cloud, &spec),
        ),
        "creating the machine",
    )
    .and_then(|made| {
        made.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DriverError::Fatal("creating the machine: the answer has no id".into()))
    })
    .inspect_err(|_| undo_fwrules(client, &account, &fwrules))?;
    event(
        &format!("Triton machine {name} created ({id}), provisioning"),
        &id,
    );
    finish(TaskState {
        kind: Kind::CloudApi,
        instance: Some(id.clone()),
        id,
        name,
        exit_strategy: conf.exit_strategy(),
        fwrules,
    })
}

/// Deletes the firewall rules a start created before it failed (best
/// effort: the start's own error is the one reported).
fn undo_fwrules(client: &Client, account: &str, ids: &[String]) {
    for id in ids {
        let what = format!("deleting firewall rule {id} after the failed start");
        match client.cloud(&what, &plan::delete_fwrule(account, id)) {
            Ok(a) if a.ok() || gone(a.status) => {}
            Ok(a) => log::log(
                log::Level::Warn,
                &plan::error_message(&what, a.status, &a.body),
                &[],
            ),
            Err(e) => log::log(log::Level::Warn, &format!("{what}: {e:?}"), &[]),
        }
    }
}

fn start_docker(
    client: &Client,
    conf: &TaskConf,
    d: &config::DockerApi,
    task: &TaskConfig,
) -> Result<TaskStarted, DriverError> {
    let v = client.conf.docker_version().to_owned();
    let name = plan::instance_name(&task.job_name, &task.task_group, &task.name, &task.alloc_id);
    // sdc-docker's com.joyent.package label takes a name or a uuid.
    let package = conf
        .package
        .uuid
        .clone()
        .or_else(|| conf.package.name.clone())
        .unwrap_or_default();
    if d.image.auto_pull == Some(true) {
        expect(
            client.docker("pulling the image", &plan::pull_image(&v, d)),
            "pulling the image",
        )?;
    }
    let create = plan::create_container(&v, conf, d, &name, &package, &task.env)?;
    let made = expect(
        client.docker("creating the container", &create),
        "creating the container",
    )?;
    let id = made
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| DriverError::Fatal("creating the container: the answer has no Id".into()))?
        .to_owned();
    let instance = plan::docker_instance_uuid(&id);
    let tag_and_start = || -> Result<(), DriverError> {
        if let (false, Some(uuid)) = (conf.tags.is_empty(), &instance) {
            let account = client.account()?.to_owned();
            expect(
                client.cloud(
                    "tagging the instance",
                    &plan::add_tags(&account, uuid, &conf.tags),
                ),
                "tagging the instance",
            )?;
        }
        expect(
            client.docker("starting the container", &plan::start_container(&v, &id)),
            "starting the container",
        )?;
        Ok(())
    };
    // A failed start leaves nothing behind: the container it made goes again.
    if let Err(e) = tag_and_start() {
        let what = format!("removing container {id} after the failed start");
        match client.docker(&what, &plan::delete_container(&v, &id)) {
            Ok(a) if a.ok() || gone(a.status) => {}
            Ok(a) => log::log(
                log::Level::Warn,
                &plan::error_message(&what, a.status, &a.body),
                &[],
            ),
            Err(de) => log::log(log::Level::Warn, &format!("{what}: {de:?}"), &[]),
        }
        return Err(e);
    }
    event(
        &format!("Triton container {name} created and started ({id})"),
        &id,
    );
    finish(TaskState {
        kind: Kind::DockerApi,
        id,
        instance,
        name,
        exit_strategy: conf.exit_strategy(),
        fwrules: Vec::new(),
    })
}

fn finish(st: TaskState) -> Result<TaskStarted, DriverError> {
    Ok(TaskStarted {
        driver_state: serde_json::to_vec(&st)
            .map_err(|e| DriverError::Fatal(format!("cannot keep the task state: {e}")))?,
        main_process: None,
        network_override: None,
    })
}

fn exited(code: i32, err: Option<String>) -> TaskPoll {
    TaskPoll::Exited(ExitResult {
        exit_code: code,
        signal: 0,
        oom_killed: false,
        err,
    })
}

/// The network override for an instance reachable at `ip`.
fn address(ip: String) -> NetworkOverride {
    NetworkOverride {
        port_map: Vec::new(),
        addr: ip,
        auto_advertise: true,
    }
}

fn gone(status: u16) -> bool {
    matches!(status, 404 | 410)
}

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
        let conf = PluginConf::decode_with_env(&msgpack, read_env, |m| {
            log::log(log::Level::Debug, &m, &[])
        })?;
        serde_json::to_vec(&conf)
            .map_err(|e| DriverError::Fatal(format!("cannot keep the plugin config: {e}")))
    }

    fn fingerprint(config: Vec<u8>) -> FingerprintReport {
        let conf = plugin_conf(&config).unwrap_or_default();
        let (health, description) = if conf.cloudapi_url.is_some() || conf.docker_url.is_some() {
            (Health::Healthy, "healthy".to_owned())
        } else {
            (
                Health::Undetected,
                "no cloudapi_url or docker_url in the plugin config, and no TRITON_URL or \
                 SDC_URL granted in the agent's environment"
                    .to_owned(),
            )
        };
        FingerprintReport {
            health,
            description,
            attributes: vec![Attribute {
                key: format!("driver.{NAME}"),
                value: AttributeValue::Boolean(true),
                unit: String::new(),
            }],
        }
    }

    fn start_task(config: Vec<u8>, task: TaskConfig) -> Result<TaskStarted, DriverError> {
        let conf = TaskConf::decode(&task.driver_config)?;
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        match conf.api()? {
            Api::Cloud(c) => start_cloud(&client, &conf, c, &task),
            Api::Docker(d) => start_docker(&client, &conf, d, &task),
        }
    }

    fn poll_task(config: Vec<u8>, task: TaskRef) -> Result<TaskPoll, DriverError> {
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        let st = state(&task)?;
        type Read = fn(&Value, ExitStrategy) -> (MachinePhase, Option<String>);
        let (answer, read): (Answer, Read) = match st.kind {
            Kind::CloudApi => (
                client.cloud(
                    "reading the machine",
                    &plan::get_machine(client.account()?, &st.id),
                )?,
                |v, s| {
                    let phase = plan::machine_phase(v["state"].as_str().unwrap_or_default(), s);
                    (phase, plan::machine_ip(v))
                },
            ),
            Kind::DockerApi => (
                client.docker(
                    "inspecting the container",
                    &plan::inspect_container(plugin.docker_version(), &st.id),
                )?,
                |v, _| (plan::container_phase(v), plan::container_ip(v)),
            ),
        };
        if plan::retryable(answer.status) {
            log::log(
                log::Level::Warn,
                &plan::error_message("polling the instance", answer.status, &answer.body),
                &[],
            );
            return Ok(running(
                plan::backoff_ms(answer.retry_after, POLL_BACKOFF_MS),
                None,
            ));
        }
        if gone(answer.status) {
            return Ok(match st.exit_strategy {
                ExitStrategy::Deleted => exited(0, None),
                ExitStrategy::Stopped => exited(
                    1,
                    Some(format!("the Triton instance {} no longer exists", st.id)),
                ),
            });
        }
        if !answer.ok() {
            return Err(refused("polling the instance", &answer));
        }
        let (phase, ip) = read(&answer.json(), st.exit_strategy);
        let what = match st.kind {
            Kind::CloudApi => "machine",
            Kind::DockerApi => "container",
        };
        if let Some(message) = plan::progress(what, &st.name, &phase, ip.as_deref()) {
            event(&message, &st.id);
        }
        Ok(match phase {
            // Provisioning, or on its way down (a stop just asked for it):
            // the change comes soon.
            MachinePhase::Pending | MachinePhase::Stopping => running(POLL_PENDING_MS, None),
            // Once it runs, its IP is the task's address (Triton maps no
            // ports: services are reached on the instance's own IP).
            MachinePhase::Running => running(POLL_RUNNING_MS, ip.map(address)),
            MachinePhase::Stopped | MachinePhase::Unknown => running(POLL_RUNNING_MS, None),
            MachinePhase::Exited { code, err } => exited(code, err),
        })
    }

    /// CloudAPI: the stop action, or deleting the machine. Docker: the
    /// default or SIGTERM is sdc-docker's `stop?t=` with the kill timeout
    /// (SIGTERM, then SIGKILL after `t`), which answers once the container
    /// ended; any other signal is sent with `kill?signal=`, and the host
    /// escalates after the timeout.
    fn stop_task(
        config: Vec<u8>,
        task: TaskRef,
        signal: String,
        timeout_ms: u32,
    ) -> Result<(), DriverError> {
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        let st = state(&task)?;
        let a = match (st.kind, st.exit_strategy) {
            (Kind::CloudApi, ExitStrategy::Stopped) => client.cloud(
                "stopping the machine",
                &plan::machine_action(client.account()?, &st.id, "stop"),
            )?,
            (Kind::CloudApi, ExitStrategy::Deleted) => client.cloud(
                "deleting the machine",
                &plan::delete_machine(client.account()?, &st.id),
            )?,
            (Kind::DockerApi, _) if signal.is_empty() || signal == "SIGTERM" => {
                let t = plan::stop_timeout_secs(timeout_ms);
                client.docker(
                    "stopping the container",
                    &plan::stop_container(plugin.docker_version(), &st.id, t),
                )?
            }
            (Kind::DockerApi, _) => client.docker(
                "signalling the container",
                &plan::kill_container(plugin.docker_version(), &st.id, &signal),
            )?,
        };
        // Already stopped (304 from stop, 409 from kill) or gone is what a
        // stop wants.
        if a.ok() || gone(a.status) || matches!(a.status, 304 | 409) {
            Ok(())
        } else {
            Err(refused("stopping the instance", &a))
        }
    }

    fn signal_task(config: Vec<u8>, task: TaskRef, signal: String) -> Result<(), DriverError> {
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        let st = state(&task)?;
        match st.kind {
            Kind::DockerApi => {
                let a = client.docker(
                    "signalling the container",
                    &plan::kill_container(plugin.docker_version(), &st.id, &signal),
                )?;
                if a.ok() || gone(a.status) || a.status == 409 {
                    Ok(())
                } else {
                    Err(refused("signalling the container", &a))
                }
            }
            // CloudAPI has no signals; the escalation of a stop (SIGKILL)
            // repeats the stop, the strongest thing it can ask for.
            Kind::CloudApi if signal == "SIGKILL" => Self::stop_task(config, task, signal, 0),
            Kind::CloudApi => Err(DriverError::Unsupported(
                "CloudAPI machines take no signals".into(),
            )),
        }
    }

    /// Docker containers: memory and CPU from one sdc-docker stats sample
    /// (its `cpu_stats` against its `precpu_stats`, the previous reading;
    /// CPU is unreported when the sample has no usable previous reading).
    /// CloudAPI machines: none.
    fn task_stats(config: Vec<u8>, task: TaskRef) -> Result<Option<TaskUsage>, DriverError> {
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        let st = state(&task)?;
        if st.kind != Kind::DockerApi {
            return Ok(None);
        }
        let sample = expect(
            client.docker(
                "reading container stats",
                &plan::container_stats(plugin.docker_version(), &st.id),
            ),
            "reading container stats",
        )?;
        let (usage, max) = plan::stats_memory(&sample);
        let cpu = plan::stats_cpu(&sample);
        Ok(Some(TaskUsage {
            memory_rss_bytes: None,
            memory_cache_bytes: None,
            memory_swap_bytes: None,
            memory_usage_bytes: usage,
            memory_max_usage_bytes: max,
            cpu_percent: cpu.total,
            cpu_user_percent: cpu.user,
            cpu_system_percent: cpu.system,
            cpu_total_ticks: None,
        }))
    }

    fn destroy_task(config: Vec<u8>, task: TaskRef) -> Result<(), DriverError> {
        let plugin = plugin_conf(&config)?;
        let client = Client { conf: &plugin };
        let st = state(&task)?;
        if st.exit_strategy == ExitStrategy::Deleted {
            let a = match st.kind {
                Kind::CloudApi => client.cloud(
                    "deleting the machine",
                    &plan::delete_machine(client.account()?, &st.id),
                )?,
                Kind::DockerApi => client.docker(
                    "deleting the container",
                    &plan::delete_container(plugin.docker_version(), &st.id),
                )?,
            };
            if !(a.ok() || gone(a.status)) {
                return Err(refused("deleting the instance", &a));
            }
        }
        for id in &st.fwrules {
            let what = format!("deleting firewall rule {id}");
            let a = client.cloud(&what, &plan::delete_fwrule(client.account()?, id))?;
            if !(a.ok() || gone(a.status)) {
                return Err(refused(&what, &a));
            }
        }
        Ok(())
    }
}

// Exported only for wasm: a native build (for tests) has no host.
#[cfg(target_arch = "wasm32")]
nomad_driver_sdk::export_driver!(Triton);
