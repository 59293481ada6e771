//! The nspawn driver's configuration: the agent's `plugin { config { } }`
//! block and a task's `config { }` block, their hclspec schemas, and the
//! checks Nomad's schema cannot express (allowed values, paths, and
//! combinations of fields that `systemd-nspawn` refuses).
//!
//! The task surface is the one users know from JanMa/nomad-driver-nspawn
//! (see the seed document): every argument keeps its name, type and
//! default there.

use std::collections::BTreeMap;

use nomad_driver_sdk::DriverError;
use nomad_driver_sdk::schema::Schema;
use serde::{Deserialize, Serialize};

/// How the driver talks to systemd-machined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machined {
    /// Use machined when `machinectl list` answers (systemd is PID 1).
    Auto,
    /// Always register with machined; fail the task if it is missing.
    Always,
    /// Never: `--register=no --keep-unit`, exec through `nsenter`.
    Never,
}

/// The agent's plugin config, validated. Also what `set-config` returns and
/// every later call gets back (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginConfig {
    /// `enabled = false` makes the fingerprint report the driver undetected.
    pub enabled: bool,
    /// `volumes = false` refuses `bind` and `bind_read_only` in jobs.
    pub volumes: bool,
    /// Relative `image` paths in jobs are resolved against this directory.
    pub image_root: Option<String>,
    pub machined: Machined,
}

#[derive(Debug, Deserialize)]
struct RawPluginConfig {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "yes")]
    volumes: bool,
    #[serde(default)]
    image_root: Option<String>,
    #[serde(default)]
    machined: Option<String>,
}

fn yes() -> bool {
    true
}

fn invalid(msg: String) -> DriverError {
    DriverError::InvalidConfig(msg)
}

impl PluginConfig {
    pub fn schema() -> Schema {
        Schema::object([
            ("enabled", Schema::attr("bool").or_default("true")),
            ("volumes", Schema::attr("bool").or_default("true")),
            ("image_root", Schema::attr("string")),
            ("machined", Schema::attr("string").or_default("\"auto\"")),
        ])
    }

    /// Decodes and checks the agent's cty-msgpack plugin config.
    pub fn decode(bytes: &[u8]) -> Result<PluginConfig, DriverError> {
        let raw: RawPluginConfig =
            nomad_driver_sdk::cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)?;
        let machined = match raw.machined.as_deref().unwrap_or("auto") {
            "auto" => Machined::Auto,
            "always" => Machined::Always,
            "never" => Machined::Never,
            other => {
                return Err(invalid(format!(
                    "plugin config field \"machined\": {other:?} is not one of \"auto\", \"always\", \"never\""
                )));
            }
        };
        let image_root = raw.image_root.filter(|r| !r.is_empty());
        if let Some(root) = &image_root
            && !root.starts_with('/')
        {
            return Err(invalid(format!(
                "plugin config field \"image_root\": {root:?} must be an absolute path"
            )));
        }
        Ok(PluginConfig {
            enabled: raw.enabled,
            volumes: raw.volumes,
            image_root,
            machined,
        })
    }

    /// The config bytes `set-config` hands back (read by [`PluginConfig::load`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The config from `set-config`'s bytes; the defaults if there are none
    /// (a call before any `set-config`).
    pub fn load(bytes: &[u8]) -> Result<PluginConfig, DriverError> {
        if bytes.is_empty() {
            return PluginConfig::decode(&[]);
        }
        serde_json::from_slice(bytes)
            .map_err(|e| DriverError::Fatal(format!("the stored plugin config is unreadable: {e}")))
    }
}

/// A task's `config { }` block as Nomad decodes it against [`TaskConf::schema`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TaskConf {
    pub image: String,
    #[serde(default)]
    pub boot: Option<bool>,
    #[serde(default)]
    pub ephemeral: Option<bool>,
    #[serde(default)]
    pub process_two: Option<bool>,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub user_namespacing: Option<bool>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub console: Option<String>,
    #[serde(default)]
    pub pivot_root: Option<String>,
    #[serde(default)]
    pub resolv_conf: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub volatile: Option<String>,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default)]
    pub bind: BTreeMap<String, String>,
    #[serde(default)]
    pub bind_read_only: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub port_map: BTreeMap<String, i64>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub capability: Vec<String>,
    #[serde(default)]
    pub network_veth: Option<bool>,
    #[serde(default)]
    pub network_zone: Option<String>,
    #[serde(default)]
    pub network_bridge: Option<String>,
    #[serde(default)]
    pub private_users: Option<String>,
    #[serde(default)]
    pub private_users_ownership: Option<String>,
}

/// The values of `console`, as `systemd-nspawn --console=` takes them.
pub const CONSOLE_MODES: [&str; 5] = ["interactive", "read-only", "passive", "pipe", "autopipe"];

/// The values of `resolv_conf` (`systemd-nspawn --resolv-conf=`).
pub const RESOLV_CONF_MODES: [&str; 15] = [
    "off",
    "copy-host",
    "copy-static",
    "copy-uplink",
    "copy-stub",
    "replace-host",
    "replace-static",
    "replace-uplink",
    "replace-stub",
    "bind-host",
    "bind-static",
    "bind-uplink",
    "bind-stub",
    "delete",
    "auto",
];

/// The values of `volatile` (`systemd-nspawn --volatile=`).
pub const VOLATILE_MODES: [&str; 6] = ["yes", "no", "true", "false", "state", "overlay"];

/// The values of `private_users_ownership`.
pub const OWNERSHIP_MODES: [&str; 5] = ["off", "chown", "map", "auto", "yes"];

impl TaskConf {
    /// The task config schema. Defaults are the seed's: `boot` and
    /// `user_namespacing` true, `network_veth` true (the maintained
    /// upstream's default), `private_users` "pick",
    /// `private_users_ownership` "auto". `bind`, `bind_read_only` and
    /// `port_map` are blocks of attributes; `environment` is a map
    /// attribute, exactly as the seed's examples write them.
    pub fn schema() -> Schema {
        Schema::object([
            ("image", Schema::required("string")),
            ("boot", Schema::attr("bool").or_default("true")),
            ("ephemeral", Schema::attr("bool").or_default("false")),
            ("process_two", Schema::attr("bool").or_default("false")),
            ("read_only", Schema::attr("bool").or_default("false")),
            ("user_namespacing", Schema::attr("bool").or_default("true")),
            ("command", Schema::attr("list(string)")),
            ("console", Schema::attr("string")),
            ("pivot_root", Schema::attr("string")),
            ("resolv_conf", Schema::attr("string")),
            ("user", Schema::attr("string")),
            ("volatile", Schema::attr("string")),
            ("working_directory", Schema::attr("string")),
            ("bind", Schema::block_attrs("string")),
            ("bind_read_only", Schema::block_attrs("string")),
            ("environment", Schema::attr("map(string)")),
            ("port_map", Schema::block_attrs("number")),
            ("ports", Schema::attr("list(string)")),
            ("capability", Schema::attr("list(string)")),
            ("network_veth", Schema::attr("bool").or_default("true")),
            ("network_zone", Schema::attr("string")),
            ("network_bridge", Schema::attr("string")),
            ("private_users", Schema::attr("string")),
            ("private_users_ownership", Schema::attr("string")),
        ])
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskConf, DriverError> {
        nomad_driver_sdk::cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)
    }

    pub fn boot(&self) -> bool {
        self.boot.unwrap_or(true)
    }
    pub fn ephemeral(&self) -> bool {
        self.ephemeral.unwrap_or(false)
    }
    pub fn process_two(&self) -> bool {
        self.process_two.unwrap_or(false)
    }
    pub fn read_only(&self) -> bool {
        self.read_only.unwrap_or(false)
    }
    pub fn user_namespacing(&self) -> bool {
        self.user_namespacing.unwrap_or(true)
    }
    pub fn network_veth(&self) -> bool {
        self.network_veth.unwrap_or(true)
    }

    /// Checks values and combinations. Errors name every field involved.
    pub fn validate(&self) -> Result<(), DriverError> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if self.image.trim().is_empty() {
            return Err(invalid(
                "field \"image\": must name an image directory or file".into(),
            ));
        }
        if self.boot() && self.process_two() {
            return Err(invalid(
                "fields \"boot\" and \"process_two\" cannot both be true: a booted container runs its init as PID 1, process_two runs the command as PID 2 under a stub init".into(),
            ));
        }
        if self.boot() && set(&self.user) {
            return Err(invalid(
                "fields \"boot\" and \"user\" cannot be combined: systemd-nspawn runs init as root when booting; set boot = false to run the command as a user".into(),
            ));
        }
        if self.user_namespacing() && self.read_only() {
            return Err(invalid(
                "fields \"read_only\" and \"user_namespacing\" cannot both be true: set user_namespacing = false for a read-only image".into(),
            ));
        }
        if self.user_namespacing() && set(&self.volatile) {
            return Err(invalid(
                "fields \"volatile\" and \"user_namespacing\" cannot be combined: set user_namespacing = false for a volatile container".into(),
            ));
        }
        if !self.user_namespacing() {
            for (field, v) in [
                ("private_users", &self.private_users),
                ("private_users_ownership", &self.private_users_ownership),
            ] {
                if set(v) {
                    return Err(invalid(format!(
                        "fields \"{field}\" and \"user_namespacing\": {field} has no effect with user_namespacing = false"
                    )));
                }
            }
        }
        one_of("console", &self.console, &CONSOLE_MODES)?;
        one_of("resolv_conf", &self.resolv_conf, &RESOLV_CONF_MODES)?;
        one_of("volatile", &self.volatile, &VOLATILE_MODES)?;
        one_of(
            "private_users_ownership",
            &self.private_users_ownership,
            &OWNERSHIP_MODES,
        )?;
        if let Some(pu) = self.private_users.as_deref().filter(|s| !s.is_empty()) {
            check_private_users(pu)?;
        }
        if let Some(wd) = self.working_directory.as_deref().filter(|s| !s.is_empty()) {
            absolute("working_directory", wd)?;
        }
        if let Some(pr) = self.pivot_root.as_deref().filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = pr.split(':').collect();
            if parts.len() > 2 {
                return Err(invalid(format!(
                    "field \"pivot_root\": {pr:?} must be PATH or PATH:MOUNTPOINT"
                )));
            }
            for p in parts {
                absolute("pivot_root", p)?;
            }
        }
        if let Some(user) = self.user.as_deref().filter(|s| !s.is_empty())
            && !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(format!(
                "field \"user\": {user:?} is not a user name or numeric uid"
            )));
        }
        for (field, map) in [
            ("bind", &self.bind),
            ("bind_read_only", &self.bind_read_only),
        ] {
            for (host, inside) in map {
                bind_path(field, host, "host path")?;
                bind_path(field, inside, "container path")?;
            }
        }
        for name in self.environment.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(invalid(format!(
                    "field \"environment\": {name:?} is not a valid variable name"
                )));
            }
        }
        for (label, port) in &self.port_map {
            if !(1..=65535).contains(port) {
                return Err(invalid(format!(
                    "field \"port_map\": {label} = {port} is not a port number (1-65535)"
                )));
            }
        }
        if !self.port_map.is_empty() && !self.ports.is_empty() {
            return Err(invalid(
                "fields \"port_map\" and \"ports\" cannot be combined: use ports (labels of the group's network ports)".into(),
            ));
        }
        for cap in &self.capability {
            let ok = !cap.is_empty()
                && cap
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(invalid(format!(
                    "field \"capability\": {cap:?} is not a capability name such as CAP_NET_ADMIN"
                )));
            }
        }
        if set(&self.network_zone) && set(&self.network_bridge) {
            return Err(invalid(
                "fields \"network_zone\" and \"network_bridge\" cannot be combined: a container's veth joins one bridge".into(),
            ));
        }
        for (field, v) in [
            ("network_zone", &self.network_zone),
            ("network_bridge", &self.network_bridge),
        ] {
            if let Some(name) = v.as_deref().filter(|s| !s.is_empty())
                && (name.len() > 15
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
            {
                return Err(invalid(format!(
                    "field \"{field}\": {name:?} is not a network interface name (at most 15 letters, digits, '_', '-', '.')"
                )));
            }
        }
        Ok(())
    }
}

fn one_of(field: &str, v: &Option<String>, allowed: &[&str]) -> Result<(), DriverError> {
    match v.as_deref() {
        None | Some("") => Ok(()),
        Some(s) if allowed.contains(&s) => Ok(()),
        Some(s) => Err(invalid(format!(
            "field \"{field}\": {s:?} is not one of {}",
            allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn absolute(field: &str, p: &str) -> Result<(), DriverError> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(format!(
            "field \"{field}\": {p:?} must be an absolute path"
        )))
    }
}

fn bind_path(field: &str, p: &str, what: &str) -> Result<(), DriverError> {
    if !p.starts_with('/') {
        return Err(invalid(format!(
            "field \"{field}\": {what} {p:?} must be an absolute path"
        )));
    }
    if p.contains(':') || p.contains('\0') {
        return Err(invalid(format!(
            "field \"{field}\": {what} {p:?} must not contain ':' (systemd-nspawn's separator)"
        )));
    }
    Ok(())
}

/// `private_users`: "pick", "yes", "no", "identity", a base UID, or
/// "UID:RANGE".
fn check_private_users(v: &str) -> Result<(), DriverError> {
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let ok = matches!(v, "pick" | "yes" | "no" | "true" | "false" | "identity")
        || numeric(v)
        || v.split_once(':')
            .is_some_and(|(a, b)| numeric(a) && numeric(b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "field \"private_users\": {v:?} is not \"pick\", \"yes\", \"no\", \"identity\", a UID or UID:RANGE"
        )))
    }
}
