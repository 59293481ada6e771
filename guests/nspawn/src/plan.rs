//! The pure part of the driver: a task's config and what Nomad says about
//! the task, turned into the exact `systemd-nspawn` command line, the
//! environment it runs with, and what later calls need to remember.
//! Nothing here calls the host, so every rule is unit-tested natively.

use std::collections::BTreeMap;

use nomad_driver_sdk::{DriverError, TaskConfig};
use serde::{Deserialize, Serialize};

use crate::config::{PluginConfig, TaskConf};

/// Where Nomad's task directories appear inside the container, and the
/// `NOMAD_*` variables that point there.
pub const TASK_DIRS: [(&str, &str, &str); 3] = [
    ("alloc", "/alloc", "NOMAD_ALLOC_DIR"),
    ("local", "/local", "NOMAD_TASK_DIR"),
    ("secrets", "/secrets", "NOMAD_SECRETS_DIR"),
];

/// PATH inside the container when the task's environment has none.
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a container is run on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// systemd is PID 1: register with machined, which gives the container
    /// its own scope (limits via `--property`), `machinectl` and
    /// `systemd-run --machine` for exec.
    Machined,
    /// No machined (no systemd as PID 1): `--register=no --keep-unit`; the
    /// host's cgroup limits apply; exec and signals go through the
    /// container's leader process.
    Standalone,
}

/// Everything about a started container that later calls need. Stored as
/// the task's driver state (JSON), so it survives host restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub machine: String,
    pub mode: Mode,
    pub boot: bool,
    /// The command runs as PID 2 under nspawn's stub init.
    pub as_pid2: bool,
    /// The environment inside the container (for exec).
    pub env: Vec<(String, String)>,
    /// Working directory inside the container for exec.
    pub cwd: String,
    /// `--user` of the container's command, also used for exec.
    pub user: Option<String>,
    /// The container's PID 1 as the host sees it, found after start.
    pub leader: Option<Leader>,
}

/// The container's PID 1 (host pid) and the inode of its pid namespace,
/// which tells it apart from a later process that reuses the pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub pid: u32,
    pub pidns: String,
}

/// The resolved plan for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Arguments of `systemd-nspawn` (without the program itself).
    pub args: Vec<String>,
    /// The environment `systemd-nspawn` itself runs with: the values of the
    /// `--setenv=NAME` arguments, kept out of the command line (and `ps`).
    pub nspawn_env: Vec<(String, String)>,
    /// Memory limit for the host's cgroup, bytes (0: none).
    pub memory_limit: u64,
    pub cpu_shares: u64,
    pub state: State,
}

fn invalid(msg: String) -> DriverError {
    DriverError::InvalidConfig(msg)
}

/// A machine name for the task: `<task>-<alloc id>`, made valid for nspawn
/// (a hostname: letters, digits and '-', at most 64 characters, no leading
/// or trailing '-'). The alloc id is kept whole, so names stay unique; the
/// task part is shortened to fit.
pub fn machine_name(task: &str, alloc_id: &str) -> String {
    let clean = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            let c = if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            };
            if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
                out.push(c);
            }
        }
        out.trim_end_matches('-').to_owned()
    };
    let alloc = clean(alloc_id);
    let alloc = if alloc.is_empty() {
        "task".to_owned()
    } else {
        alloc
    };
    let room = 64usize.saturating_sub(alloc.len() + 1);
    let task: String = clean(task).chars().take(room).collect();
    let task = task.trim_end_matches('-');
    let name = if task.is_empty() {
        alloc
    } else {
        format!("{task}-{alloc}")
    };
    name.chars().take(64).collect::<String>()
}

/// What the host says is at an image path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Directory,
    /// A disk image file or block device.
    File,
    Missing,
    /// The host could not tell (no probe granted).
    Unknown,
}

/// Resolves `image` against the agent's `image_root` and decides between
/// `-D` (a directory tree) and `-i` (a disk image file or block device) by
/// what `kind` says is there; when it cannot tell, by the name (paths under
/// `/dev/` or ending in `.raw` or `.img` are images).
pub fn image_arg(
    image: &str,
    plugin: &PluginConfig,
    kind: &dyn Fn(&str) -> ImageKind,
) -> Result<(String, String), DriverError> {
    let path = if image.starts_with('/') {
        image.to_owned()
    } else {
        let Some(root) = &plugin.image_root else {
            return Err(invalid(format!(
                "field \"image\": {image:?} is relative, but the agent's plugin config sets no \"image_root\" to resolve it against; use an absolute path or set image_root"
            )));
        };
        if image.split('/').any(|c| c == "..") {
            return Err(invalid(format!(
                "field \"image\": {image:?} must stay inside the image root (no \"..\")"
            )));
        }
        format!(
            "{}/{}",
            root.trim_end_matches('/'),
            image.trim_start_matches("./")
        )
    };
    let path = if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path
    };
    let file = match kind(&path) {
        ImageKind::Directory => false,
        ImageKind::File => true,
        ImageKind::Missing => {
            return Err(invalid(format!(
                "field \"image\": {path} does not exist on this client"
            )));
        }
        ImageKind::Unknown => {
            path.starts_with("/dev/") || path.ends_with(".raw") || path.ends_with(".img")
        }
    };
    Ok((if file { "-i" } else { "-D" }.to_owned(), path))
}

/// Whether nspawn itself reads a variable of this name: such values are
/// given on the command line, never in nspawn's own environment.
fn read_by_nspawn(name: &str) -> bool {
    name.starts_with("SYSTEMD_")
        || name.starts_with("LISTEN_")
        || name == "NOTIFY_SOCKET"
        || name == "container"
}

/// Builds the plan without looking at the image on the host (its kind
/// is told by its name). `mode` comes from the machined probe.
pub fn plan(
    conf: &TaskConf,
    plugin: &PluginConfig,
    task: &TaskConfig,
    mode: Mode,
) -> Result<Plan, DriverError> {
    plan_with(conf, plugin, task, mode, &|_| ImageKind::Unknown)
}

/// Builds the plan; `image_kind` says what is at the image path.
pub fn plan_with(
    conf: &TaskConf,
    plugin: &PluginConfig,
    task: &TaskConfig,
    mode: Mode,
    image_kind: &dyn Fn(&str) -> ImageKind,
) -> Result<Plan, DriverError> {
    conf.validate()?;
    if !plugin.volumes && (!conf.bind.is_empty() || !conf.bind_read_only.is_empty()) {
        return Err(invalid(
            "fields \"bind\"/\"bind_read_only\": the agent's plugin config sets volumes = false, so this client allows no bind mounts".into(),
        ));
    }
    let boot = conf.boot();
    let as_pid2 = conf.process_two();
    let machine = machine_name(&task.name, &task.alloc_id);
    let (image_flag, image) = image_arg(&conf.image, plugin, image_kind)?;
    if image == "/"
        && !conf.ephemeral()
        && !matches!(conf.volatile.as_deref(), Some("yes" | "state" | "true"))
    {
        return Err(invalid(
            "field \"image\": the host's root directory can only be used with ephemeral = true or volatile = \"yes\"/\"state\"".into(),
        ));
    }
    let user = conf
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| (!task.user.is_empty()).then(|| task.user.clone()));
    if boot && user.is_some() && conf.user.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(format!(
            "the task's \"user\" ({}) and field \"boot\" cannot be combined: a booted container runs init as root; set boot = false",
            task.user
        )));
    }

    let mut a: Vec<String> = vec![image_flag, image, "--quiet".into()];
    a.push(format!("--machine={machine}"));
    if let Some(uuid) = machine_uuid(&task.alloc_id) {
        a.push(format!("--uuid={uuid}"));
    }
    match mode {
        Mode::Standalone => {
            a.push("--register=no".into());
            a.push("--keep-unit".into());
        }
        Mode::Machined => a.push("--register=yes".into()),
    }
    if boot {
        a.push("--boot".into());
    }
    if as_pid2 {
        a.push("--as-pid2".into());
    }
    if conf.ephemeral() {
        a.push("--ephemeral".into());
    }
    if conf.read_only() {
        a.push("--read-only".into());
    }
    if let Some(v) = conf.volatile.as_deref().filter(|s| !s.is_empty()) {
        a.push(format!("--volatile={v}"));
    }

    // Networking: the group's namespace (Nomad's bridge/CNI modes), or a
    // private network of nspawn's own.
    let zone = conf.network_zone.as_deref().filter(|s| !s.is_empty());
    let bridge = conf.network_bridge.as_deref().filter(|s| !s.is_empty());
    let private_net;
    let mut idmap = "";
    if let Some(ns) = task.network_namespace.as_deref().filter(|s| !s.is_empty()) {
        for (field, v) in [("network_zone", zone), ("network_bridge", bridge)] {
            if v.is_some() {
                return Err(invalid(format!(
                    "field \"{field}\" cannot be used in group network mode: the task joins the group's network namespace {ns}"
                )));
            }
        }
        if !conf.ports.is_empty() || !conf.port_map.is_empty() {
            return Err(invalid(
                "fields \"ports\"/\"port_map\" cannot be used in group network mode: the group's network block publishes the ports".into(),
            ));
        }
        a.push(format!("--network-namespace-path={ns}"));
        private_net = false;
    } else {
        // User namespacing is only combined with a network nspawn owns
        // (joining a namespace owned by the host's user namespace fails).
        if conf.user_namespacing() {
            let users = conf
                .private_users
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("pick");
            // Binds keep host ownership under a private user range only
            // when idmapped: without it the container's root cannot write
            // to the task's own directories.
            if !matches!(users, "no" | "false") {
                idmap = ":idmap";
            }
            a.push(format!("--private-users={users}"));
            a.push(format!(
                "--private-users-ownership={}",
                conf.private_users_ownership
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("auto")
            ));
        }
        if let Some(z) = zone {
            a.push(format!("--network-zone={z}"));
        } else if let Some(b) = bridge {
            a.push(format!("--network-bridge={b}"));
        } else if conf.network_veth() {
            a.push("--network-veth".into());
        }
        private_net = zone.is_some() || bridge.is_some() || conf.network_veth();
    }
    for spec in port_args(conf, task)? {
        if !private_net {
            return Err(invalid(
                "fields \"ports\"/\"port_map\" need a private network: set network_veth = true, network_zone or network_bridge".into(),
            ));
        }
        a.push(format!("--port={spec}"));
    }

    let console = match conf.console.as_deref().filter(|s| !s.is_empty()) {
        Some(c) => Some(c),
        // Plain pipes keep stdout and stderr apart and unmodified for
        // Nomad's log FIFOs (a pty would merge them and add CRs).
        None if !boot => Some("pipe"),
        None => None,
    };
    if let Some(c) = console {
        a.push(format!("--console={c}"));
    }
    if let Some(p) = conf.pivot_root.as_deref().filter(|s| !s.is_empty()) {
        a.push(format!("--pivot-root={p}"));
    }
    if let Some(r) = conf.resolv_conf.as_deref().filter(|s| !s.is_empty()) {
        a.push(format!("--resolv-conf={r}"));
    }
    if let Some(u) = &user {
        a.push(format!("--user={u}"));
    }
    let cwd = conf
        .working_directory
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/".into());
    if let Some(d) = conf.working_directory.as_deref().filter(|s| !s.is_empty()) {
        a.push(format!("--chdir={d}"));
    }
    if !conf.capability.is_empty() {
        a.push(format!("--capability={}", conf.capability.join(",")));
    }

    // Binds: Nomad's task directories, Nomad's volume mounts, the job's.
    if !task.alloc_dir.is_empty() {
        let alloc_dir = task.alloc_dir.trim_end_matches('/');
        for (dir, inside, _) in TASK_DIRS {
            let host = if dir == "alloc" {
                format!("{alloc_dir}/alloc")
            } else {
                format!("{alloc_dir}/{}/{dir}", task.name)
            };
            bind_ok("the task directory", &host)?;
            a.push(format!("--bind={host}:{inside}{idmap}"));
        }
    }
    for m in &task.mounts {
        for p in [&m.host_path, &m.task_path] {
            if !p.starts_with('/') || p.contains(':') {
                return Err(invalid(format!(
                    "volume mount {} -> {}: paths must be absolute and contain no ':'",
                    m.host_path, m.task_path
                )));
            }
        }
        let flag = if m.readonly { "--bind-ro" } else { "--bind" };
        a.push(format!("{flag}={}:{}{idmap}", m.host_path, m.task_path));
    }
    for (host, inside) in &conf.bind {
        a.push(format!("--bind={host}:{inside}{idmap}"));
    }
    for (host, inside) in &conf.bind_read_only {
        a.push(format!("--bind-ro={host}:{inside}{idmap}"));
    }

    // Environment: Nomad's task env with the task directories as the
    // container sees them, then the job's `environment`.
    let mut env: BTreeMap<String, String> = task.env.iter().cloned().collect();
    for (_, inside, var) in TASK_DIRS {
        env.insert(var.into(), inside.into());
    }
    for (k, v) in &conf.environment {
        env.insert(k.clone(), v.clone());
    }
    env.entry("PATH".into())
        .or_insert_with(|| CONTAINER_PATH.into());
    let mut nspawn_env = Vec::new();
    for (k, v) in &env {
        if read_by_nspawn(k) {
            a.push(format!("--setenv={k}={v}"));
        } else {
            a.push(format!("--setenv={k}"));
            nspawn_env.push((k.clone(), v.clone()));
        }
    }

    let res = &task.resources;
    let limit = res.memory_limit_bytes.max(0) as u64;
    if mode == Mode::Machined && limit > 0 {
        a.push(format!("--property=MemoryMax={limit}"));
        if res.memory_max_mb > res.memory_mb && res.memory_mb > 0 {
            a.push(format!(
                "--property=MemoryHigh={}",
                (res.memory_mb as u64) * 1024 * 1024
            ));
        }
    }

    if !conf.command.is_empty() {
        a.push("--".into());
        a.extend(conf.command.iter().cloned());
    }

    Ok(Plan {
        args: a,
        nspawn_env,
        memory_limit: limit,
        cpu_shares: res.cpu_shares.max(0) as u64,
        state: State {
            machine,
            mode,
            boot,
            as_pid2,
            env: env.into_iter().collect(),
            cwd,
            user,
            leader: None,
        },
    })
}

fn bind_ok(what: &str, p: &str) -> Result<(), DriverError> {
    if p.contains(':') {
        Err(DriverError::Fatal(format!(
            "{what} {p} contains ':', which systemd-nspawn cannot bind"
        )))
    } else {
        Ok(())
    }
}

/// `--port` specs: `ports` names the group's port labels (host value ->
/// `to`, or the same port when `to` is unset); `port_map` maps every
/// allocated port, by label, to a container port (1:1 when unmapped).
pub fn port_args(conf: &TaskConf, task: &TaskConfig) -> Result<Vec<String>, DriverError> {
    let ports = &task.resources.ports;
    let mut out = Vec::new();
    for label in &conf.ports {
        let Some(p) = ports.iter().find(|p| &p.label == label) else {
            return Err(invalid(format!(
                "field \"ports\": no port labelled {label:?} in the group's network block"
            )));
        };
        let to = if p.to > 0 { p.to } else { p.value };
        out.push(format!("tcp:{}:{to}", p.value));
    }
    if !conf.port_map.is_empty() {
        for label in conf.port_map.keys() {
            if !ports.iter().any(|p| &p.label == label) {
                return Err(invalid(format!(
                    "field \"port_map\": no port labelled {label:?} is allocated to this task"
                )));
            }
        }
        for p in ports {
            let inside = conf
                .port_map
                .get(&p.label)
                .copied()
                .unwrap_or(i64::from(p.value));
            out.push(format!("tcp:{}:{inside}", p.value));
        }
    }
    Ok(out)
}

/// The alloc id as a machine UUID (32 hex digits), when it is one.
pub fn machine_uuid(alloc_id: &str) -> Option<String> {
    let hex: String = alloc_id.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// `systemd 252 (252.39-1~deb12u2)` -> `252`; the full version string is
/// kept as `driver.nspawn.full_version`.
pub fn parse_version(out: &str) -> Option<(String, String)> {
    let line = out.lines().next()?.trim();
    let rest = line.strip_prefix("systemd ")?;
    let major = rest.split_whitespace().next()?;
    if major.is_empty() || !major.chars().next()?.is_ascii_digit() {
        return None;
    }
    let full = rest
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| major.to_owned());
    Some((major.to_owned(), full))
}

/// The first pid in `pgrep` output.
pub fn parse_pid(out: &str) -> Option<u32> {
    out.lines().find_map(|l| l.trim().parse::<u32>().ok())
}

/// Sums the RSS column (KiB) of `ps -o pidns=,rss= -e` lines in `pidns`.
pub fn sum_rss_in_pidns(out: &str, pidns: &str) -> u64 {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == pidns).then(|| f.next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// The regular expression `pgrep -f` uses to find the nspawn process of
/// `machine`: a command line that starts with systemd-nspawn and has the
/// machine's `--machine=` argument (the name has only [a-z0-9-], nothing
/// to escape).
pub fn machine_pattern(machine: &str) -> String {
    format!("^[^ ]*systemd-nspawn .*--machine={machine}( |$)")
}

/// The host command that runs `command` inside the container.
///
/// Standalone: `nsenter` into every namespace of the leader, its root and
/// the working directory. Machined: `systemd-run --machine` (as upstream
/// does), which starts the command as a transient unit in the container.
pub fn exec_argv(state: &State, command: &[String]) -> Result<Vec<String>, DriverError> {
    if command.is_empty() {
        return Err(invalid("exec: the command is empty".into()));
    }
    let mut argv = Vec::new();
    match state.mode {
        Mode::Standalone => {
            let Some(leader) = &state.leader else {
                return Err(DriverError::Temporary(format!(
                    "exec: container {} has no running leader process",
                    state.machine
                )));
            };
            argv.push(format!("--target={}", leader.pid));
            // `--wd` without a value: the leader's working directory, which
            // is the container's (`--wd=DIR` would open DIR on the host).
            argv.extend(["--all".into(), "--root".into(), "--wd".into()]);
            if let Some(u) = &state.user {
                if let Some((uid, gid)) = numeric_user(u) {
                    argv.push(format!("--setuid={uid}"));
                    argv.push(format!("--setgid={gid}"));
                } else {
                    return Err(DriverError::Unsupported(format!(
                        "exec: the container runs as user {u:?}; without machined exec can only switch to a numeric uid (\"uid\" or \"uid:gid\")"
                    )));
                }
            }
            argv.push("--".into());
        }
        Mode::Machined => {
            argv.extend([
                "--wait".into(),
                "--collect".into(),
                "--quiet".into(),
                "--pipe".into(),
                "--service-type=exec".into(),
                format!("--machine={}", state.machine),
                format!("--working-directory={}", state.cwd),
            ]);
            if let Some(u) = &state.user {
                argv.push(format!("--uid={u}"));
            }
            for (k, v) in &state.env {
                argv.push(format!("--setenv={k}={v}"));
            }
            argv.push("--".into());
        }
    }
    argv.extend(command.iter().cloned());
    Ok(argv)
}

fn numeric_user(u: &str) -> Option<(u32, u32)> {
    let (a, b) = u.split_once(':').unwrap_or((u, u));
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Which signal a stop sends, and to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAction {
    /// `machinectl poweroff <machine>` (machined, booted).
    Poweroff,
    /// SIGTERM to systemd-nspawn, which turns it into SIGRTMIN+3 for the
    /// container's init: an orderly shutdown (standalone, booted).
    TermNspawn,
    /// The signal to the container's command (not booted).
    Payload(String),
}

pub fn stop_action(state: &State, signal: &str) -> StopAction {
    if state.boot {
        match state.mode {
            Mode::Machined => StopAction::Poweroff,
            Mode::Standalone => StopAction::TermNspawn,
        }
    } else {
        let sig = if signal.is_empty() {
            nomad_driver_sdk::DEFAULT_STOP_SIGNAL
        } else {
            signal
        };
        StopAction::Payload(sig.to_owned())
    }
}

/// `SIGTERM`/`term`/`RTMIN+3` -> the name `kill -s` takes (`TERM`,
/// `RTMIN+3`), refusing anything that is not a signal name.
pub fn kill_signal_name(signal: &str) -> Result<String, DriverError> {
    let s = signal.trim().to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s).to_owned();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
    if ok && !s.chars().all(|c| c.is_ascii_digit()) {
        Ok(s)
    } else {
        Err(invalid(format!(
            "{signal:?} is not a signal name such as SIGTERM or SIGRTMIN+3"
        )))
    }
}
