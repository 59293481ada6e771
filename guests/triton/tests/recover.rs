//! A Triton task outlives the host's driver: started by one `Driver` (the
//! host's Nomad-facing driver core, the same code the plugin runs), the
//! driver is dropped as a plugin restart drops it, and a new one recovers
//! the task from its handle alone and follows it to its real exit, against
//! `tests/triton-sim`. This is a restart in one process, not a SIGKILL of
//! the plugin process (the conformance harness would be needed for that).
//! Needs the built guest and `go` (the simulator).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::caps::http::send;
use nomad_wasm_host::driver::Driver;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::bindings::nomad::driver::http::Request;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};
use triton::config::{DockerApi, DockerImage, PluginConf, TaskConf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn checked(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Sim(Child, String);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim(dir: &Path) -> Sim {
    let bin = repo().join("target/triton-sim-for-triton-recover");
    checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(repo().join("tests/triton-sim"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GO111MODULE", "on")
            .env("GOCACHE", repo().join("target/triton-sim-gocache"))
            .env("GOPATH", repo().join("target/triton-sim-gopath")),
    );
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("key")),
    );
    let mut child = Command::new(bin)
        .args([
            "-listen",
            "127.0.0.1:0",
            "-account",
            "acct",
            "-delay",
            "100ms",
            "-key",
        ])
        .arg(dir.join("key.pub"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    Sim(child, url.trim().to_owned())
}

fn admin(url: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    let grants = Grants::default().with_http_origin(url, None).unwrap();
    let r = send(
        &grants,
        Request {
            method: method.into(),
            url: format!("{url}{path}"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            timeout_ms: 10_000,
            sign: None,
            client_cert: None,
        },
    )
    .unwrap();
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

fn driver(dir: &Path, url: &str) -> Arc<Driver> {
    let engine = runtime::engine().unwrap();
    let grants = Grants::default()
        .with_http_origin(url, None)
        .unwrap()
        .with_secret("triton", dir.join("key"), None)
        .unwrap();
    let host = HostContext::new("triton.wasm".into(), grants, dir.join("state"));
    let wasm = repo().join("target/wasm32-wasip2/guest/triton.wasm");
    let guest = Guest::load(&engine, &wasm, None, host, CallLimits::default()).unwrap();
    Arc::new(Driver::new(Arc::new(guest)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_task_is_followed_to_its_real_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let url = sim.1.clone();
    let plugin = PluginConf {
        cloudapi_url: Some(url.clone()),
        account: Some("acct".into()),
        key: Some("triton".into()),
        docker_url: Some(url.clone()),
        ..PluginConf::default()
    };
    // The bytes Nomad would send are cty msgpack maps; a named-field
    // msgpack encoding of the same values decodes the same way.
    let plugin_bytes = rmp_serde::to_vec_named(&plugin).unwrap();
    let task_conf = TaskConf {
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
    };
    let pb = nomad_plugin_proto::drivers::TaskConfig {
        id: "alloc1/web/1".into(),
        name: "web".into(),
        alloc_id: "0b6c7e2a-0000-4000-8000-000000000001".into(),
        job_name: "job".into(),
        task_group_name: "group".into(),
        msgpack_driver_config: rmp_serde::to_vec_named(&task_conf).unwrap(),
        ..Default::default()
    };

    let first = driver(dir.path(), &url);
    first.set_config(plugin_bytes.clone(), None).await.unwrap();
    let started = first
        .start_task(
            nomad_wasm_host::nomad::convert::task_config(&pb),
            pb.clone(),
        )
        .await
        .unwrap();
    drop(first);

    let second = driver(dir.path(), &url);
    second.set_config(plugin_bytes, None).await.unwrap();
    second
        .recover_task(pb.clone(), &started.driver_state)
        .await
        .unwrap();
    // The container still runs; end it with a code only it could report.
    // The host's http capability blocks: call it off the async runtime.
    let u = url.clone();
    let state = tokio::task::spawn_blocking(move || admin(&u, "GET", "/__sim/state", ""))
        .await
        .unwrap();
    let id = state["containers"][0]["Id"]
        .as_str()
        .or_else(|| state["containers"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("{state}"))
        .to_owned();
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        admin(
            &u,
            "POST",
            &format!("/__sim/containers/{id}/exit"),
            r#"{"code":42}"#,
        )
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), second.wait_task("alloc1/web/1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.exit_code, r.err), (42, None));
    second.destroy_task("alloc1/web/1", true).await.unwrap();
}
