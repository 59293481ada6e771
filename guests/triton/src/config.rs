//! The Triton driver's configuration: the task `config { }` block (the
//! seed driver's whole surface) and the agent's plugin config, as serde
//! types decoded from Nomad's cty-msgpack, their hclspec schemas, and the
//! checks hclspec cannot express. Every rejection names the field.

use std::collections::BTreeMap;

use nomad_driver_sdk::DriverError;
use nomad_driver_sdk::schema::Schema;
use serde::{Deserialize, Serialize};

/// `api_type = "cloud_api"`: a machine created through CloudAPI.
pub const CLOUD_API: &str = "cloud_api";
/// `api_type = "docker_api"`: a container created through sdc-docker.
pub const DOCKER_API: &str = "docker_api";

/// The default `Accept-Version` sent to CloudAPI (node-triton's).
pub const DEFAULT_ACCEPT_VERSION: &str = "~9||~8";

/// A task's `config { }` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConf {
    pub api_type: String,
    pub docker_api: Option<DockerApi>,
    pub cloud_api: Option<CloudApi>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub affinity: Vec<String>,
    pub deletion_protection: Option<bool>,
    pub fwenabled: Option<bool>,
    #[serde(default)]
    pub fwrules: BTreeMap<String, String>,
    #[serde(default)]
    pub cns: Vec<String>,
    #[serde(default)]
    pub package: Package,
    pub exit_strategy: Option<String>,
}

/// `package { }`: which Triton package (size) the instance gets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub version: Option<String>,
}

/// `docker_api { }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DockerApi {
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    pub openstdin: Option<bool>,
    pub stdinonce: Option<bool>,
    pub tty: Option<bool>,
    pub workingdir: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    pub user: Option<String>,
    pub domain_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub public_network: Option<String>,
    pub private_network: Option<String>,
    pub log_config: Option<LogConfig>,
    pub ports: Option<Ports>,
    #[serde(default)]
    pub image: DockerImage,
    pub restart_policy: Option<String>,
    pub auth: Option<RegistryAuth>,
}

/// `docker_api { log_config { } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// `docker_api { ports { } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
    pub publish_all: Option<bool>,
}

/// `docker_api { image { } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DockerImage {
    #[serde(default)]
    pub name: String,
    pub tag: Option<String>,
    pub auto_pull: Option<bool>,
}

/// `docker_api { auth { } }`: private registry credentials for the pull.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub email: Option<String>,
    pub server_address: Option<String>,
}

/// `cloud_api { }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudApi {
    #[serde(default)]
    pub image: CloudImage,
    #[serde(default)]
    pub networks: Vec<Network>,
    pub user_data: Option<String>,
    pub cloud_config: Option<String>,
    pub user_script: Option<String>,
}

/// `cloud_api { image { } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudImage {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub version: Option<String>,
    pub most_recent: Option<bool>,
}

/// One `cloud_api { networks { } }` block.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: Option<String>,
    pub uuid: Option<String>,
}

/// What the instance's end means (`exit_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStrategy {
    /// The task ends when the instance is stopped; destroy deletes it.
    Stopped,
    /// The task ends when the instance is deleted; stop deletes it too.
    Deleted,
}

fn required_block(nested: Schema) -> Schema {
    Schema::Block {
        name: String::new(),
        required: true,
        nested: Box::new(nested),
    }
}

/// The hclspec of the task `config { }` block: the seed driver's schema,
/// plus `docker_api { auth { } }` (its registry-auth PR) and
/// `exit_strategy`.
pub fn task_schema() -> Schema {
    let docker = Schema::object([
        ("cmd", Schema::attr("list(string)")),
        ("entrypoint", Schema::attr("list(string)")),
        ("openstdin", Schema::attr("bool")),
        ("stdinonce", Schema::attr("bool")),
        ("tty", Schema::attr("bool")),
        ("workingdir", Schema::attr("string")),
        ("hostname", Schema::attr("string")),
        ("dns", Schema::attr("list(string)")),
        ("dns_search", Schema::attr("list(string)")),
        ("extra_hosts", Schema::attr("list(string)")),
        ("user", Schema::attr("string")),
        ("domain_name", Schema::attr("string")),
        ("labels", Schema::block_attrs("string")),
        ("public_network", Schema::attr("string")),
        ("private_network", Schema::attr("string")),
        (
            "log_config",
            Schema::block(Schema::object([
                ("type", Schema::attr("string")),
                ("config", Schema::block_attrs("string")),
            ])),
        ),
        (
            "ports",
            Schema::block(Schema::object([
                ("tcp", Schema::attr("list(number)")),
                ("udp", Schema::attr("list(number)")),
                ("publish_all", Schema::attr("bool")),
            ])),
        ),
        (
            "image",
            required_block(Schema::object([
                ("name", Schema::required("string")),
                ("tag", Schema::attr("string")),
                ("auto_pull", Schema::attr("bool")),
            ])),
        ),
        ("restart_policy", Schema::attr("string")),
        (
            "auth",
            Schema::block(Schema::object([
                ("username", Schema::attr("string")),
                ("password", Schema::attr("string")),
                ("email", Schema::attr("string")),
                ("server_address", Schema::attr("string")),
            ])),
        ),
    ]);
    let cloud = Schema::object([
        (
            "image",
            required_block(Schema::object([
                ("name", Schema::attr("string")),
                ("uuid", Schema::attr("string")),
                ("version", Schema::attr("string")),
                ("most_recent", Schema::attr("bool")),
            ])),
        ),
        (
            "networks",
            Schema::block_list(Schema::object([
                ("name", Schema::attr("string")),
                ("uuid", Schema::attr("string")),
            ])),
        ),
        ("user_data", Schema::attr("string")),
        ("cloud_config", Schema::attr("string")),
        ("user_script", Schema::attr("string")),
    ]);
    Schema::object([
        ("api_type", Schema::required("string")),
        ("docker_api", Schema::block(docker)),
        ("cloud_api", Schema::block(cloud)),
        ("tags", Schema::block_attrs("string")),
        ("affinity", Schema::attr("list(string)")),
        ("deletion_protection", Schema::attr("bool")),
        ("fwenabled", Schema::attr("bool")),
        ("fwrules", Schema::block_attrs("string")),
        ("cns", Schema::attr("list(string)")),
        (
            "package",
            required_block(Schema::object([
                ("name", Schema::attr("string")),
                ("uuid", Schema::attr("string")),
                ("version", Schema::attr("string")),
            ])),
        ),
        ("exit_strategy", Schema::attr("string")),
    ])
}

/// The API a task uses, with its block.
#[derive(Debug, Clone, PartialEq)]
pub enum Api<'a> {
    Cloud(&'a CloudApi),
    Docker(&'a DockerApi),
}

fn invalid(msg: impl Into<String>) -> DriverError {
    DriverError::InvalidConfig(msg.into())
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The restart policies Docker knows: `no`, `always`, `unless-stopped`,
/// `on-failure` or `on-failure:N`.
pub fn restart_policy(v: &str) -> Result<(String, Option<u32>), DriverError> {
    let bad = || {
        invalid(format!(
            "docker_api.restart_policy: expected \"no\", \"always\", \"unless-stopped\", \
             \"on-failure\" or \"on-failure:<max retries>\", found {v:?}"
        ))
    };
    match v.split_once(':') {
        None if ["no", "always", "unless-stopped", "on-failure"].contains(&v) => {
            Ok((v.to_owned(), None))
        }
        Some(("on-failure", n)) => n
            .parse::<u32>()
            .map(|n| ("on-failure".into(), Some(n)))
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

impl TaskConf {
    /// Decodes and checks a task config.
    pub fn decode(bytes: &[u8]) -> Result<TaskConf, DriverError> {
        let conf: TaskConf =
            nomad_driver_sdk::cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)?;
        conf.validate()?;
        Ok(conf)
    }

    /// The exit strategy (default `stopped`).
    pub fn exit_strategy(&self) -> ExitStrategy {
        match self.exit_strategy.as_deref() {
            Some("deleted") => ExitStrategy::Deleted,
            _ => ExitStrategy::Stopped,
        }
    }

    /// The block that `api_type` selects.
    pub fn api(&self) -> Result<Api<'_>, DriverError> {
        match self.api_type.as_str() {
            CLOUD_API => self.cloud_api.as_ref().map(Api::Cloud).ok_or_else(|| {
                invalid("cloud_api: api_type = \"cloud_api\" needs a cloud_api { } block")
            }),
            DOCKER_API => self.docker_api.as_ref().map(Api::Docker).ok_or_else(|| {
                invalid("docker_api: api_type = \"docker_api\" needs a docker_api { } block")
            }),
            other => Err(invalid(format!(
                "api_type: expected \"cloud_api\" or \"docker_api\", found {other:?}"
            ))),
        }
    }

    /// Everything hclspec cannot check.
    pub fn validate(&self) -> Result<(), DriverError> {
        match self.exit_strategy.as_deref() {
            None | Some("stopped") | Some("deleted") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "exit_strategy: expected \"stopped\" or \"deleted\", found {other:?}"
                )));
            }
        }
        match self.api()? {
            Api::Cloud(c) => {
                if self.docker_api.is_some() {
                    return Err(invalid(
                        "docker_api: not used with api_type = \"cloud_api\"; remove the block",
                    ));
                }
                if set(&c.image.name).is_none() && set(&c.image.uuid).is_none() {
                    return Err(invalid("cloud_api.image: set name or uuid"));
                }
                if set(&self.package.name).is_none() && set(&self.package.uuid).is_none() {
                    return Err(invalid("package: set name or uuid"));
                }
                for (i, n) in c.networks.iter().enumerate() {
                    if set(&n.name).is_none() && set(&n.uuid).is_none() {
                        return Err(invalid(format!(
                            "cloud_api.networks[{i}]: set name or uuid"
                        )));
                    }
                }
            }
            Api::Docker(d) => {
                if self.cloud_api.is_some() {
                    return Err(invalid(
                        "cloud_api: not used with api_type = \"docker_api\"; remove the block",
                    ));
                }
                if d.image.name.trim().is_empty() {
                    return Err(invalid("docker_api.image.name: must not be empty"));
                }
                if let Some(p) = &d.restart_policy {
                    restart_policy(p)?;
                }
                if let Some(ports) = &d.ports {
                    for (proto, list) in [("tcp", &ports.tcp), ("udp", &ports.udp)] {
                        if list.contains(&0) {
                            return Err(invalid(format!(
                                "docker_api.ports.{proto}: ports are 1 to 65535, found 0"
                            )));
                        }
                    }
                }
                for (i, h) in d.extra_hosts.iter().enumerate() {
                    if !h.contains(':') {
                        return Err(invalid(format!(
                            "docker_api.extra_hosts[{i}]: expected \"hostname:IP\", found {h:?}"
                        )));
                    }
                }
            }
        }
        for (k, rule) in &self.fwrules {
            if rule.trim().is_empty() {
                return Err(invalid(format!("fwrules.{k}: the rule text is empty")));
            }
        }
        for k in self.tags.keys() {
            if k.starts_with("triton.") {
                return Err(invalid(format!(
                    "tags.{k}: the triton. prefix is reserved (use cns for triton.cns.services)"
                )));
            }
        }
        for (i, a) in self.affinity.iter().enumerate() {
            if !["==", "!="].iter().any(|op| a.contains(op)) {
                return Err(invalid(format!(
                    "affinity[{i}]: expected a rule such as \"instance!=db*\" (operators ==, !=, ==~, !=~), found {a:?}"
                )));
            }
        }
        for (i, s) in self.cns.iter().enumerate() {
            if s.trim().is_empty() || s.contains(',') {
                return Err(invalid(format!(
                    "cns[{i}]: expected one service name (name[:port]), found {s:?}"
                )));
            }
        }
        Ok(())
    }
}

/// The agent's `plugin "..." { config { } }` block. The fields of
/// [`ENV_FALLBACKS`] that it leaves unset are taken from the agent's
/// environment in `set-config` (see [`PluginConf::decode_with_env`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConf {
    /// CloudAPI base URL, e.g. `https://us-central-1.api.mnx.io`. Unset:
    /// `TRITON_URL`, else `SDC_URL`, if granted.
    pub cloudapi_url: Option<String>,
    /// The account login. Unset: `TRITON_ACCOUNT`, else `SDC_ACCOUNT`.
    pub account: Option<String>,
    /// An RBAC sub-user of the account. Unset: `TRITON_USER`, else
    /// `SDC_USER`.
    pub user: Option<String>,
    /// The `secret` grant holding the private key that signs requests.
    /// Unset while anything came from the environment: `"triton"`.
    pub key: Option<String>,
    /// keyId override; by default the host derives it from the key's MD5
    /// fingerprint. Unset: from `TRITON_KEY_ID`, else `SDC_KEY_ID` (a
    /// fingerprint there becomes `/<account>[/users/<user>]/keys/<fp>`).
    pub key_id: Option<String>,
    /// Signature algorithm (e.g. `rsa-sha256`); default: the key's own.
    pub algorithm: Option<String>,
    /// `Accept-Version` sent to CloudAPI.
    pub accept_version: Option<String>,
    /// sdc-docker base URL, e.g. `https://us-central-1.docker.mnx.io:2376`.
    pub docker_url: Option<String>,
    /// The `secret` grant (with a `cert`) presented to sdc-docker.
    pub docker_cert: Option<String>,
    /// Docker Remote API version used in paths (sdc-docker: 1.20 to 1.24).
    pub docker_api_version: Option<String>,
}

/// The plugin config schema.
pub fn plugin_schema() -> Schema {
    Schema::object([
        ("cloudapi_url", Schema::attr("string")),
        ("account", Schema::attr("string")),
        ("user", Schema::attr("string")),
        ("key", Schema::attr("string")),
        ("key_id", Schema::attr("string")),
        ("algorithm", Schema::attr("string")),
        ("accept_version", Schema::attr("string")),
        ("docker_url", Schema::attr("string")),
        ("docker_cert", Schema::attr("string")),
        ("docker_api_version", Schema::attr("string")),
    ])
}

fn check_url(field: &str, v: &Option<String>) -> Result<(), DriverError> {
    if let Some(u) = v
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(invalid(format!(
            "{field}: expected an http:// or https:// URL, found {u:?}"
        )));
    }
    Ok(())
}

/// The plugin config fields with a standard environment form (triton-go's
/// and node-triton's), each with its variables in order of precedence.
/// The environment is the fallback: a field set in the plugin config wins.
pub const ENV_FALLBACKS: [(&str, [&str; 2]); 4] = [
    ("cloudapi_url", ["TRITON_URL", "SDC_URL"]),
    ("account", ["TRITON_ACCOUNT", "SDC_ACCOUNT"]),
    ("user", ["TRITON_USER", "SDC_USER"]),
    ("key_id", ["TRITON_KEY_ID", "SDC_KEY_ID"]),
];

/// The `secret` grant `key` names when the plugin config takes anything
/// from the environment and names no key itself.
pub const ENV_DEFAULT_KEY: &str = "triton";

/// What reading one environment variable through the host gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Set(String),
    Unset,
    /// The operator did not grant it (the host's text says how to).
    NotGranted(String),
    /// Set, but not UTF-8.
    NotUnicode(String),
}

/// Where the environment-backed fields came from, for messages.
#[derive(Debug, Default)]
struct Provenance {
    /// field -> the variable that supplied it.
    from: BTreeMap<&'static str, &'static str>,
    /// Variables the guest may not read.
    not_granted: Vec<&'static str>,
}

impl Provenance {
    /// `field` as messages name it: `cloudapi_url (from TRITON_URL)`.
    fn name(&self, field: &str) -> String {
        match self.from.get(field) {
            Some(var) => format!("{field} (from {var})"),
            None => field.to_owned(),
        }
    }

    /// How `field` could be set: the config or its variables.
    fn missing(&self, field: &str, what: &str) -> DriverError {
        let vars = ENV_FALLBACKS
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let mut msg = format!(
            "{field}: {what}: set {field} in the plugin config, or {} in the Nomad agent's \
             environment",
            vars.join(" or ")
        );
        let refused: Vec<&str> = vars
            .iter()
            .copied()
            .filter(|v| self.not_granted.contains(v))
            .collect();
        if !refused.is_empty() {
            msg.push_str(&format!(
                " ({} not granted to the plugin: add `env \"{}\" {{}}` to its grants file)",
                refused.join(", "),
                refused[0]
            ));
        }
        invalid(msg)
    }
}

/// `key_id` from TRITON_KEY_ID/SDC_KEY_ID: as there (triton-go,
/// node-triton) usually the key's fingerprint rather than a whole keyId.
/// A value starting with `/` is a keyId and kept; an MD5 fingerprint
/// (`MD5:` optional) or a key name becomes `/<account>[/users/<user>]/keys/
/// <it>`; a SHA256 fingerprint cannot appear in a keyId, so it is dropped
/// (the host then derives the keyId from the key itself).
fn env_key_id(
    var: &str,
    value: Option<String>,
    c: &PluginConf,
    debug: &mut impl FnMut(String),
) -> Option<String> {
    let v = value?;
    if v.starts_with('/') {
        return Some(v);
    }
    if v.starts_with("SHA256:") {
        debug(format!(
            "plugin config: {var} is a SHA256 fingerprint, which a CloudAPI keyId cannot \
             carry; the keyId is derived from the key instead"
        ));
        return None;
    }
    let fp = v.strip_prefix("MD5:").unwrap_or(&v);
    // Without an account the config is refused below, naming account.
    let account = set(&c.account)?;
    Some(match set(&c.user) {
        Some(user) => format!("/{account}/users/{user}/keys/{fp}"),
        None => format!("/{account}/keys/{fp}"),
    })
}

fn field_mut<'a>(c: &'a mut PluginConf, field: &str) -> Option<&'a mut Option<String>> {
    match field {
        "cloudapi_url" => Some(&mut c.cloudapi_url),
        "account" => Some(&mut c.account),
        "user" => Some(&mut c.user),
        "key_id" => Some(&mut c.key_id),
        _ => None,
    }
}

impl PluginConf {
    /// Decodes and checks the plugin config, without the environment.
    /// Empty bytes: all unset (the driver then reports itself unhealthy
    /// until configured).
    pub fn decode(bytes: &[u8]) -> Result<PluginConf, DriverError> {
        Self::decode_with_env(bytes, |_| EnvValue::Unset, |_| {})
    }

    /// Decodes the plugin config, fills each field of [`ENV_FALLBACKS`]
    /// that it leaves unset from the first of its variables that `env` has
    /// (TRITON_* before SDC_*), and checks the result. A variable the guest
    /// may not read counts as unset; `debug` is told so. When anything came
    /// from the environment and `key` is unset, `key` is
    /// [`ENV_DEFAULT_KEY`].
    pub fn decode_with_env(
        bytes: &[u8],
        mut env: impl FnMut(&str) -> EnvValue,
        mut debug: impl FnMut(String),
    ) -> Result<PluginConf, DriverError> {
        let mut c: PluginConf =
            nomad_driver_sdk::cty::from_slice(bytes).map_err(nomad_driver_sdk::config_error)?;
        let mut prov = Provenance::default();
        for (field, vars) in ENV_FALLBACKS {
            let Some(slot) = field_mut(&mut c, field) else {
                continue;
            };
            if set(slot).is_some() {
                continue;
            }
            for var in vars {
                match env(var) {
                    EnvValue::Set(v) if !v.trim().is_empty() => {
                        debug(format!("plugin config: {field} taken from {var}"));
                        *slot = Some(v.trim().to_owned());
                        prov.from.insert(field, var);
                        break;
                    }
                    EnvValue::Set(_) | EnvValue::Unset => {}
                    EnvValue::NotGranted(why) => {
                        debug(format!(
                            "plugin config: {field} is not set and {var} is treated as unset: {why}"
                        ));
                        prov.not_granted.push(var);
                    }
                    EnvValue::NotUnicode(why) => {
                        return Err(invalid(format!("{field}: {why}")));
                    }
                }
            }
        }
        if let Some(var) = prov.from.get("key_id") {
            c.key_id = env_key_id(var, c.key_id.take(), &c, &mut debug);
        }
        if !prov.from.is_empty() && set(&c.key).is_none() {
            debug(format!(
                "plugin config: key taken as {ENV_DEFAULT_KEY:?} (the secret grant signing for \
                 the environment's credentials)"
            ));
            c.key = Some(ENV_DEFAULT_KEY.to_owned());
        }
        for u in [&mut c.cloudapi_url, &mut c.docker_url]
            .into_iter()
            .flatten()
        {
            while u.ends_with('/') {
                u.pop();
            }
        }
        check_url(&prov.name("cloudapi_url"), &c.cloudapi_url)?;
        check_url("docker_url", &c.docker_url)?;
        if c.cloudapi_url.is_some() {
            if set(&c.account).is_none() {
                return Err(prov.missing("account", "required with cloudapi_url"));
            }
            if set(&c.key).is_none() {
                return Err(invalid(
                    "key: required with cloudapi_url (the name of the host's secret grant that signs)",
                ));
            }
        }
        if let Some(a) = &c.account
            && (a == "my" || a.contains('/'))
        {
            return Err(invalid(format!(
                "{}: expected the account login (not \"my\", no '/'), found {a:?}",
                prov.name("account")
            )));
        }
        if let Some(v) = &c.docker_api_version
            && !v.starts_with("1.")
        {
            return Err(invalid(format!(
                "docker_api_version: expected 1.20 to 1.24, found {v:?}"
            )));
        }
        Ok(c)
    }

    pub fn accept_version(&self) -> &str {
        self.accept_version
            .as_deref()
            .unwrap_or(DEFAULT_ACCEPT_VERSION)
    }

    pub fn docker_version(&self) -> &str {
        self.docker_api_version.as_deref().unwrap_or("1.24")
    }
}
