//! Hot swap: a reloaded guest serves new tasks while running tasks keep
//! the build they started with; a build that renames the driver is refused.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::caps::process::ProcessTable;
use nomad_wasm_host::driver::{Driver, DriverError};
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::nomad::NomadPlugin;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};

fn built(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip2/guest/{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build.sh",
        p.display()
    );
    p
}

/// The same component with a custom section appended: same behaviour, new
/// sha256 (what a rebuilt driver looks like to the host).
fn rebuilt(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let name = b"rebuild";
    let payload = b"2";
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(dst, bytes).unwrap();
}

/// `{greeting = "hi", sleep = 30}` as cty-msgpack (keys sorted, exit_code null).
fn sleeper(id: &str) -> nomad_plugin_proto::drivers::TaskConfig {
    let mut cfg = vec![0x83, 0xa9];
    cfg.extend_from_slice(b"exit_code");
    cfg.push(0xc0);
    cfg.push(0xa8);
    cfg.extend_from_slice(b"greeting");
    cfg.extend_from_slice(&[0xa2, b'h', b'i', 0xa5]);
    cfg.extend_from_slice(b"sleep");
    cfg.push(30);
    nomad_plugin_proto::drivers::TaskConfig {
        id: id.into(),
        name: "t".into(),
        alloc_id: "a".into(),
        msgpack_driver_config: cfg,
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_tasks_and_keeps_running_ones_on_their_build() {
    let dir = tempfile::tempdir().unwrap();
    let v1_path = dir.path().join("hello.wasm");
    std::fs::copy(built("hello"), &v1_path).unwrap();
    let v2_path = dir.path().join("hello-v2.wasm");
    rebuilt(&v1_path, &v2_path);

    let processes = ProcessTable::new(dir.path().join("state"))
        .with_supervisor_exe(PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm")));
    let host = HostContext::with_processes(
        "hello.wasm".into(),
        Grants::new(["/bin/bash".to_string()]),
        processes,
    );
    let engine = runtime::engine().unwrap();
    let load = |p: &Path| {
        Arc::new(Guest::load(&engine, p, None, host.clone(), CallLimits::default()).unwrap())
    };
    let driver = Arc::new(Driver::new(load(&v1_path)).unwrap());
    let v1_sha = driver.current().sha256().to_owned();

    let start = |id: &str| {
        let pb = sleeper(id);
        let spec = nomad_wasm_host::nomad::convert::task_config(&pb);
        let d = driver.clone();
        async move { d.start_task(spec, pb).await.unwrap() }
    };
    let a = start("a").await;
    assert_eq!(a.task.guest_sha256, v1_sha);

    let v2 = driver
        .reload(load(&v2_path), NomadPlugin::check_manifest)
        .await
        .unwrap();
    assert_ne!(v2.sha256(), v1_sha, "the rebuilt guest has its own sha256");
    assert_eq!(driver.current().sha256(), v2.sha256());

    let b = start("b").await;
    assert_eq!(
        b.task.guest_sha256,
        v2.sha256(),
        "new tasks use the new build"
    );
    assert_eq!(a.task.guest_sha256, v1_sha, "running tasks keep theirs");

    // Both are still fully served: stop and destroy each.
    for id in ["a", "b"] {
        driver
            .stop_task(id, Duration::from_secs(2), String::new())
            .await
            .unwrap();
        let r = driver.wait_task(id).await.unwrap();
        assert!(r.signal != 0 || r.exit_code != 0, "{id}: {r:?}");
        driver.destroy_task(id, true).await.unwrap();
    }

    // A build of another driver is not a reload of this one.
    let other = dir.path().join("misbehave.wasm");
    std::fs::copy(built("misbehave"), &other).unwrap();
    match driver
        .reload(load(&other), NomadPlugin::check_manifest)
        .await
    {
        Err(DriverError::InvalidRequest(m)) => assert!(m.contains("cannot rename"), "{m}"),
        other => panic!("expected the rename to be refused, got {other:?}"),
    }
    assert_eq!(
        driver.current().sha256(),
        v2.sha256(),
        "a refused reload changes nothing"
    );
}

#[test]
fn a_pinned_sha256_refuses_any_other_build() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello.wasm");
    std::fs::copy(built("hello"), &v1).unwrap();
    let v2 = dir.path().join("hello-v2.wasm");
    rebuilt(&v1, &v2);
    let engine = runtime::engine().unwrap();
    let pinned = |pin_of: &Path, load: &Path| {
        let sha = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &std::fs::read(pin_of).unwrap(),
        ));
        let file = nomad_wasm_host::grants::file_for(load);
        std::fs::write(&file, format!("sha256 = \"{sha}\"\n")).unwrap();
        let grants = Grants::default().with_file(&file).unwrap();
        let host = HostContext::new("hello.wasm".into(), grants, dir.path().join("state"));
        Guest::load(&engine, load, None, host, CallLimits::default())
    };
    assert!(pinned(&v1, &v1).is_ok(), "the pinned build loads");
    let err = pinned(&v1, &v2).unwrap_err().to_string();
    assert!(
        err.contains("pins") && err.contains("hello-v2.wasm"),
        "{err}"
    );
}

/// After a restart, a recovered task is served by the build it started
/// with, loaded from the compile cache, even though the `.wasm` beside the
/// host is now another build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_task_keeps_its_build_from_the_cache_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let v1_path = dir.path().join("hello.wasm");
    std::fs::copy(built("hello"), &v1_path).unwrap();
    let v2_path = dir.path().join("hello-v2.wasm");
    rebuilt(&v1_path, &v2_path);
    let engine = runtime::engine().unwrap();
    let driver_for = |path: &Path| {
        let processes = ProcessTable::new(dir.path().join("state"))
            .with_supervisor_exe(PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm")));
        let host = HostContext::with_processes(
            "hello.wasm".into(),
            Grants::new(["/bin/bash".to_string()]),
            processes,
        );
        let guest = Guest::load(&engine, path, Some(&cache), host, CallLimits::default()).unwrap();
        Arc::new(Driver::new(Arc::new(guest)).unwrap())
    };

    // The first host process starts a task with build 1 ...
    let first = driver_for(&v1_path);
    let v1_sha = first.current().sha256().to_owned();
    let pb = sleeper("kept");
    let started = first
        .start_task(
            nomad_wasm_host::nomad::convert::task_config(&pb),
            pb.clone(),
        )
        .await
        .unwrap();
    drop(first);

    // ... and the next one runs build 2 and recovers it.
    let second = driver_for(&v2_path);
    assert_ne!(second.current().sha256(), v1_sha);
    second
        .recover_task(pb.clone(), &started.driver_state)
        .await
        .unwrap();
    let task = second.inspect_task("kept").unwrap();
    assert_eq!(
        task.guest_sha256, v1_sha,
        "served by the build it started with"
    );

    // That build serves it to the end.
    second
        .stop_task("kept", Duration::from_secs(2), String::new())
        .await
        .unwrap();
    let r = second.wait_task("kept").await.unwrap();
    assert!(r.signal != 0 || r.exit_code != 0, "{r:?}");
    second.destroy_task("kept", true).await.unwrap();

    // Without the build in the cache, the current build serves it.
    let pb = sleeper("orphan");
    let started = second
        .start_task(
            nomad_wasm_host::nomad::convert::task_config(&pb),
            pb.clone(),
        )
        .await
        .unwrap();
    let v2_sha = second.current().sha256().to_owned();
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&v2_sha)
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    drop(second);
    let third = driver_for(&v1_path);
    third.recover_task(pb, &started.driver_state).await.unwrap();
    assert_eq!(
        third.inspect_task("orphan").unwrap().guest_sha256,
        v1_sha,
        "an uncached build falls back to the current one"
    );
    third.destroy_task("orphan", true).await.unwrap();
}
