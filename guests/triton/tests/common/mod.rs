//! Setup shared by the Triton guest's integration tests that run against
//! the Triton simulator (`tests/triton-sim`): building and starting it,
//! Ed25519 keys from `ssh-keygen`, the simulator's admin API, and the
//! host's driver core over the built guest. Included with `mod common;`, so
//! it is no test binary of its own; not every binary uses every helper.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::caps::http::send;
use nomad_wasm_host::driver::Driver;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::bindings::nomad::driver::http::Request;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};
use serde_json::Value;
use triton::config::{DockerApi, DockerImage, PluginConf, TaskConf};

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd`, failing the test with its stderr unless it succeeded.
pub fn checked(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The built guest.
pub fn guest_wasm() -> PathBuf {
    repo().join("target/wasm32-wasip2/guest/triton.wasm")
}

/// Builds the simulator once per test binary, to
/// `target/triton-sim-for-<name>` (each binary its own file, so that test
/// binaries running at once never race one build).
pub fn sim_binary(name: &str) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = repo().join(format!("target/triton-sim-for-{name}"));
        checked(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(repo().join("tests/triton-sim"))
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env("GO111MODULE", "on")
                .env("GOCACHE", repo().join("target/triton-sim-gocache"))
                .env("GOPATH", repo().join("target/triton-sim-gopath")),
        );
        out
    })
}

/// A fresh passphrase-less Ed25519 key pair at `file` and `file.pub`.
pub fn ed25519_key(file: &Path) {
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(file),
    );
}

/// A running simulator, killed when dropped.
pub struct SimProcess {
    child: Child,
    /// Its base URL, as it printed it.
    pub url: String,
}

impl SimProcess {
    /// Starts the simulator built by [`sim_binary`] for `account`, knowing
    /// the public keys `keys` (`.pub` files), with its 100 ms provisioning
    /// delay.
    pub fn start(bin: &Path, account: &str, keys: &[PathBuf]) -> SimProcess {
        let mut cmd = Command::new(bin);
        cmd.args([
            "-listen",
            "127.0.0.1:0",
            "-account",
            account,
            "-delay",
            "100ms",
        ]);
        for k in keys {
            cmd.arg("-key").arg(k);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://"), "simulator printed {url:?}");
        SimProcess { child, url }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the simulator (as `target/triton-sim-for-<name>`), makes an
/// Ed25519 key at `dir/key` and starts the simulator for the account
/// `acct` with that key.
pub fn start_sim(name: &str, dir: &Path) -> SimProcess {
    let bin = sim_binary(name);
    ed25519_key(&dir.join("key"));
    SimProcess::start(bin, "acct", &[dir.join("key.pub")])
}

/// An unsigned request to the simulator (its admin API, or a read of what
/// it serves), its JSON answer (`Null` when the body is not JSON). Blocks:
/// the host's http capability does.
pub fn sim_request(url: &str, method: &str, path: &str, body: &str) -> Value {
    let grants = Grants::default().with_http_origin(url, None).unwrap();
    let headers = if body.is_empty() {
        vec![]
    } else {
        vec![("content-type".into(), "application/json".into())]
    };
    let r = send(
        &grants,
        Request {
            method: method.into(),
            url: format!("{url}{path}"),
            headers,
            body: body.as_bytes().to_vec(),
            timeout_ms: 10_000,
            sign: None,
            client_cert: None,
        },
    )
    .unwrap();
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// [`sim_request`] off the async runtime.
pub async fn sim_request_async(url: &str, method: &str, path: &str, body: &str) -> Value {
    let (url, method, path, body) = (
        url.to_owned(),
        method.to_owned(),
        path.to_owned(),
        body.to_owned(),
    );
    tokio::task::spawn_blocking(move || sim_request(&url, &method, &path, &body))
        .await
        .unwrap()
}

/// The id of the first container in the simulator's `/__sim/state`.
pub fn first_container(state: &Value) -> String {
    state["containers"][0]["Id"]
        .as_str()
        .or_else(|| state["containers"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("{state}"))
        .to_owned()
}

/// The host's driver core over the built guest, allowed to reach `url` and
/// holding `dir/key` as the secret `triton`; its state in `dir/state`.
pub fn driver(dir: &Path, url: &str) -> Arc<Driver> {
    let engine = runtime::engine().unwrap();
    let grants = Grants::default()
        .with_http_origin(url, None)
        .unwrap()
        .with_secret("triton", dir.join("key"), None)
        .unwrap();
    let host = HostContext::new("triton.wasm".into(), grants, dir.join("state"));
    let guest = Guest::load(&engine, &guest_wasm(), None, host, CallLimits::default()).unwrap();
    Arc::new(Driver::new(Arc::new(guest)).unwrap())
}

/// The plugin config for a simulator at `url` (CloudAPI and sdc-docker
/// both), account `acct`, signing with the secret `triton`, as Nomad would
/// send it: cty msgpack maps, which a named-field msgpack encoding of the
/// same values decodes as.
pub fn plugin_config(url: &str) -> Vec<u8> {
    let plugin = PluginConf {
        cloudapi_url: Some(url.to_owned()),
        account: Some("acct".into()),
        key: Some("triton".into()),
        docker_url: Some(url.to_owned()),
        ..PluginConf::default()
    };
    rmp_serde::to_vec_named(&plugin).unwrap()
}

/// A docker task config running busybox's `sleep 100`, nothing else set.
pub fn docker_sleep_conf() -> TaskConf {
    TaskConf {
        api_type: "docker_api".into(),
        docker_api: Some(DockerApi {
            cmd: vec!["sleep".into(), "100".into()],
            image: DockerImage {
                name: "busybox".into(),
                ..DockerImage::default()
            },
            ..DockerApi::default()
        }),
        ..TaskConf::default()
    }
}

/// A docker task `id` (task `web` of job `job`, group `group`, allocation
/// `alloc_id`) running busybox's `sleep 100`.
pub fn docker_sleep_task(id: &str, alloc_id: &str) -> nomad_plugin_proto::drivers::TaskConfig {
    let task_conf = docker_sleep_conf();
    nomad_plugin_proto::drivers::TaskConfig {
        id: id.into(),
        name: "web".into(),
        alloc_id: alloc_id.into(),
        job_name: "job".into(),
        task_group_name: "group".into(),
        msgpack_driver_config: rmp_serde::to_vec_named(&task_conf).unwrap(),
        ..Default::default()
    }
}
