//! The Triton guest under the host's Nomad-facing driver core (the code the
//! plugin runs), against `tests/triton-sim`: a docker task's InspectTask
//! address is the container's IP once a poll saw it running, its stats
//! carry CPU percent by Docker's formula over the simulator's
//! `cpu_stats`/`precpu_stats`, and a stop is sdc-docker's `stop?t=` with
//! the kill timeout. Needs the built guest, `go` (the simulator) and
//! `ssh-keygen`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let bin = repo().join("target/triton-sim-for-triton-driver-core");
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

/// An unsigned request to the simulator, off the async runtime (the host's
/// http capability blocks).
async fn get(url: &str, path: &str) -> serde_json::Value {
    let (url, path) = (url.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let grants = Grants::default().with_http_origin(&url, None).unwrap();
        let r = send(
            &grants,
            Request {
                method: "GET".into(),
                url: format!("{url}{path}"),
                headers: vec![],
                body: vec![],
                timeout_ms: 10_000,
                sign: None,
                client_cert: None,
            },
        )
        .unwrap();
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    })
    .await
    .unwrap()
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
async fn a_docker_task_reports_its_ip_and_cpu_and_stops_with_stop_t() {
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
    let id = "alloc2/web/1";
    let pb = nomad_plugin_proto::drivers::TaskConfig {
        id: id.into(),
        name: "web".into(),
        alloc_id: "0b6c7e2a-0000-4000-8000-000000000002".into(),
        job_name: "job".into(),
        task_group_name: "group".into(),
        msgpack_driver_config: rmp_serde::to_vec_named(&task_conf).unwrap(),
        ..Default::default()
    };
    let d = driver(dir.path(), &url);
    // Named-field msgpack of the same values decodes as Nomad's cty bytes do.
    d.set_config(rmp_serde::to_vec_named(&plugin).unwrap(), None)
        .await
        .unwrap();
    let started = d
        .start_task(nomad_wasm_host::nomad::convert::task_config(&pb), pb)
        .await
        .unwrap();
    let t0 = Instant::now();
    assert!(started.network_override.is_none());

    // The container's IP, as sdc-docker's inspect gives it.
    let state = get(&url, "/__sim/state").await;
    let container = state["containers"][0]["Id"]
        .as_str()
        .or_else(|| state["containers"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("{state}"))
        .to_owned();
    let inspect = get(&url, &format!("/v1.24/containers/{container}/json")).await;
    let ip = inspect["NetworkSettings"]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| panic!("{inspect}"))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let over = loop {
        if let Some(n) = d.inspect_task(id).unwrap().network_override() {
            break n;
        }
        assert!(Instant::now() < deadline, "no poll reported an address");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (over.addr.as_str(), over.auto_advertise, over.port_map.len()),
        (ip.as_str(), true, 0)
    );

    // The simulator's container uses a quarter of its one CPU, three
    // quarters of that in user mode; its precpu reading is a second old.
    if let Some(wait) = Duration::from_millis(1_200).checked_sub(t0.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    let u = d.task_stats(id).await.unwrap().unwrap();
    let near = |got: Option<f64>, want: f64| {
        let got = got.unwrap_or_else(|| panic!("no CPU figure: {u:?}"));
        assert!((got - want).abs() < 0.5, "{got} != {want}: {u:?}");
    };
    near(u.cpu_percent, 25.0);
    near(u.cpu_user_percent, 18.75);
    near(u.cpu_system_percent, 6.25);
    assert!(u.memory_usage_bytes.is_some_and(|b| b > 0), "{u:?}");

    // `sleep` ends on SIGTERM: sdc-docker's stop answers at once, 143.
    let before = get(&url, "/__sim/requests").await;
    let seen = before.as_array().map_or(0, Vec::len);
    let t1 = Instant::now();
    d.stop_task(id, Duration::from_millis(2_500), String::new())
        .await
        .unwrap();
    let r = d.wait_task(id).await.unwrap();
    assert_eq!((r.exit_code, r.err), (143, None));
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
    let after = get(&url, "/__sim/requests").await;
    let stops: Vec<(String, String)> = after
        .as_array()
        .unwrap()
        .iter()
        .skip(seen)
        .filter_map(|r| {
            let path = r["path"].as_str()?;
            let op = path.rsplit('/').next()?;
            (path.contains(&container) && (op == "stop" || op == "kill"))
                .then(|| (op.to_owned(), r["query"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    // 2.5 s rounds up to 3.
    assert_eq!(stops, vec![("stop".to_owned(), "t=3".to_owned())]);
    d.destroy_task(id, true).await.unwrap();
}
