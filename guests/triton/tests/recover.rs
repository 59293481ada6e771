//! A Triton task outlives the host's driver: started by one `Driver` (the
//! host's Nomad-facing driver core, the same code the plugin runs), the
//! driver is dropped as a plugin restart drops it, and a new one recovers
//! the task from its handle alone and follows it to its real exit, against
//! `tests/triton-sim`. This is a restart in one process, not a SIGKILL of
//! the plugin process (the conformance harness would be needed for that).
//! Needs the built guest and `go` (the simulator).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    docker_sleep_task, driver, first_container, plugin_config, sim_request_async, start_sim,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_task_is_followed_to_its_real_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim("triton-recover", dir.path());
    let url = sim.url.clone();
    let plugin_bytes = plugin_config(&url);
    let pb = docker_sleep_task("alloc1/web/1", "0b6c7e2a-0000-4000-8000-000000000001");

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
    let state = sim_request_async(&url, "GET", "/__sim/state", "").await;
    let id = first_container(&state);
    sim_request_async(
        &url,
        "POST",
        &format!("/__sim/containers/{id}/exit"),
        r#"{"code":42}"#,
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(30), second.wait_task("alloc1/web/1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.exit_code, r.err), (42, None));
    second.destroy_task("alloc1/web/1", true).await.unwrap();
}
