//! Tasks without a main process, followed through the guest's `poll-task`:
//! the exit the guest reports reaches WaitTask, temporary poll failures are
//! retried, a fatal one ends the task with the guest's error, and a stop
//! waits for the guest to see the end; InspectTask reports the latest
//! network override (StartTask's, then what polls gave); stop-task gets the
//! kill timeout. Uses `guests/misbehave` (modes `remote`, `remote-flaky`,
//! `remote-fatal`, `remote-ip`, `ok`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nomad_plugin_proto::drivers::{self as pb, driver_server::Driver as _};
use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::driver::Driver;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::nomad::NomadPlugin;
use nomad_wasm_host::runtime::bindings::nomad::driver::types as wit;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};

fn guest_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/guest/misbehave.wasm");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p misbehave-guest --target wasm32-wasip2 --profile guest` (scripts/build.sh does)",
        p.display()
    );
    p
}

fn driver(state: &tempfile::TempDir) -> Arc<Driver> {
    let engine = runtime::engine().unwrap();
    let host = HostContext::new(
        "misbehave.wasm".into(),
        Grants::default(),
        state.path().to_path_buf(),
    );
    let guest = Guest::load(&engine, &guest_path(), None, host, CallLimits::default()).unwrap();
    Arc::new(Driver::new(Arc::new(guest)).unwrap())
}

fn task(id: &str, mode: &str) -> (wit::TaskConfig, nomad_plugin_proto::drivers::TaskConfig) {
    let mut cfg = vec![0x81, 0xa4];
    cfg.extend_from_slice(b"mode");
    cfg.push(0xa0 | mode.len() as u8);
    cfg.extend_from_slice(mode.as_bytes());
    let pb = nomad_plugin_proto::drivers::TaskConfig {
        id: id.into(),
        name: "t".into(),
        alloc_id: "a".into(),
        msgpack_driver_config: cfg,
        ..Default::default()
    };
    (nomad_wasm_host::nomad::convert::task_config(&pb), pb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_a_poll_reports_is_the_tasks_exit() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let mut events = d.host().events.subscribe();
    let (spec, pb) = task("remote-1", "remote");
    let t0 = Instant::now();
    let started = d.start_task(spec, pb).await.unwrap();
    // StartTask returned while the "machine" was still provisioning.
    assert!(started.task.exit().is_none());
    let r = tokio::time::timeout(Duration::from_secs(10), d.wait_task("remote-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.exit_code, r.signal, r.err), (7, 0, None));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300), "exited after {took:?}");
    // Progress from the polls reached the task events: the guest said
    // "provisioning" on each of its ~6 polls, Nomad hears it once.
    let ev = events.try_recv().unwrap();
    assert_eq!(
        (ev.task_id.as_str(), ev.message.as_str()),
        ("remote-1", "provisioning")
    );
    let mut more = Vec::new();
    while let Ok(ev) = events.try_recv() {
        more.push(ev.message);
    }
    assert!(
        !more.iter().any(|m| m == "provisioning"),
        "a repeated event was sent again: {more:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_poll_failures_are_retried() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (spec, pb) = task("remote-2", "remote-flaky");
    d.start_task(spec, pb).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), d.wait_task("remote-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.exit_code, r.err), (5, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_poll_ends_the_task_with_the_guests_error() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (spec, pb) = task("remote-3", "remote-fatal");
    d.start_task(spec, pb).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), d.wait_task("remote-3"))
        .await
        .unwrap()
        .unwrap();
    let err = r.err.unwrap();
    assert!(
        err.contains("the machine failed") && err.contains("poll-task"),
        "{err}"
    );
    assert_ne!(r.exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_guest_cannot_poll_runs_until_stopped() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (spec, pb) = task("plain-1", "ok");
    d.start_task(spec, pb).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = d.inspect_task("plain-1").unwrap();
    assert!(
        t.exit().is_none(),
        "a task the guest cannot poll is not ended by the host"
    );
    d.stop_task("plain-1", Duration::from_secs(5), String::new())
        .await
        .unwrap();
    let r = d.wait_task("plain-1").await.unwrap();
    assert_eq!(r.exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_task_reports_the_network_override_the_latest_poll_gave() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let plugin = NomadPlugin::new(d.clone(), Duration::from_secs(30)).unwrap();
    let (_, pb_task) = task("remote-ip-1", "remote-ip");
    let started = plugin
        .start_task(tonic::Request::new(pb::StartTaskRequest {
            task: Some(pb_task),
        }))
        .await
        .unwrap()
        .into_inner();
    let from_start = pb::NetworkOverride {
        port_map: [("http".to_owned(), 8080)].into(),
        addr: String::new(),
        auto_advertise: false,
    };
    assert_eq!(started.network_override, Some(from_start.clone()));
    let inspect = || async {
        plugin
            .inspect_task(tonic::Request::new(pb::InspectTaskRequest {
                task_id: "remote-ip-1".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .network_override
    };
    // Until a poll reports an address, InspectTask has StartTask's.
    assert_eq!(inspect().await, Some(from_start.clone()));
    let with_ip = pb::NetworkOverride {
        port_map: [("http".to_owned(), 8080)].into(),
        addr: "192.0.2.10".into(),
        auto_advertise: true,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = inspect().await;
        if now == Some(with_ip.clone()) {
            break;
        }
        assert_eq!(now, Some(from_start.clone()), "before the address");
        assert!(Instant::now() < deadline, "no poll reported the address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Later polls carry no override: the address stays, through the exit.
    let r = tokio::time::timeout(Duration::from_secs(10), d.wait_task("remote-ip-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.exit_code, r.err), (0, None));
    assert_eq!(inspect().await, Some(with_ip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_task_gives_the_guest_nomads_kill_timeout() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let plugin = NomadPlugin::new(d.clone(), Duration::from_secs(30)).unwrap();
    let mut events = d.host().events.subscribe();
    let (spec, pb) = task("plain-2", "ok");
    d.start_task(spec, pb).await.unwrap();
    plugin
        .stop_task(tonic::Request::new(pb::StopTaskRequest {
            task_id: "plain-2".into(),
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
            signal: "SIGTERM".into(),
        }))
        .await
        .unwrap();
    let ev = events.try_recv().unwrap();
    assert_eq!(
        (ev.task_id.as_str(), ev.message.as_str()),
        ("plain-2", "stop-task signal=SIGTERM timeout-ms=2500")
    );
    // A timeout beyond u32 milliseconds (or any Instant) is saturated, not
    // a failure.
    let (spec, pb) = task("plain-3", "ok");
    d.start_task(spec, pb).await.unwrap();
    plugin
        .stop_task(tonic::Request::new(pb::StopTaskRequest {
            task_id: "plain-3".into(),
            timeout: Some(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            }),
            signal: String::new(),
        }))
        .await
        .unwrap();
    let ev = events.try_recv().unwrap();
    assert_eq!(
        (ev.task_id.as_str(), ev.message.as_str()),
        ("plain-3", "stop-task signal= timeout-ms=4294967295")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_is_refused_for_a_driver_without_remote_tasks() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (spec, pb) = task("detach-1", "remote");
    d.start_task(spec, pb).await.unwrap();
    let e = d
        .stop_task("detach-1", Duration::from_secs(1), "DETACH".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DETACH") && e.contains("remote-tasks"),
        "unexpected error: {e}"
    );
    // Refused, so nothing changed: the task is still managed and running.
    let t = d.tasks().get("detach-1").unwrap();
    assert!(t.exit().is_none());
    d.destroy_task("detach-1", true).await.unwrap();
}
