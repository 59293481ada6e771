//! The Triton guest under the host's Nomad-facing driver core (the code the
//! plugin runs), against `tests/triton-sim`: a docker task's InspectTask
//! address is the container's IP once a poll saw it running, its stats
//! carry CPU percent by Docker's formula over the simulator's
//! `cpu_stats`/`precpu_stats`, and a stop is sdc-docker's `stop?t=` with
//! the kill timeout. Needs the built guest, `go` (the simulator) and
//! `ssh-keygen`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    docker_sleep_task, driver, first_container, plugin_config, sim_request_async, start_sim,
};

/// An unsigned GET to the simulator, off the async runtime (the host's
/// http capability blocks).
async fn get(url: &str, path: &str) -> serde_json::Value {
    sim_request_async(url, "GET", path, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_task_reports_its_ip_and_cpu_and_stops_with_stop_t() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("triton-driver-core", dir.path());
    let url = sim.url.clone();
    let id = "alloc2/web/1";
    let pb = docker_sleep_task(id, "0b6c7e2a-0000-4000-8000-000000000002");
    let d = driver(dir.path(), &url);
    // Named-field msgpack of the same values decodes as Nomad's cty bytes do.
    d.set_config(plugin_config(&url), None).await.unwrap();
    let started = d
        .start_task(nomad_wasm_host::nomad::convert::task_config(&pb), pb)
        .await
        .unwrap();
    let t0 = Instant::now();
    assert!(started.network_override.is_none());

    // The container's IP, as sdc-docker's inspect gives it.
    let state = get(&url, "/__sim/state").await;
    let container = first_container(&state);
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
