//! A guest that loops, traps, exhausts its memory or lies fails only the
//! call it is in: the error names the guest and the call, and the host (and
//! every other call) keeps working. Uses `guests/misbehave`, built by
//! `scripts/build.sh` into `target/wasm32-wasip2/guest/misbehave.wasm`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::driver::{Driver, DriverError, Refusal};
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::bindings::nomad::driver::types as wit;
use nomad_wasm_host::runtime::{self, CallLimits, Guest, GuestFailure};

const DEADLINE: Duration = Duration::from_millis(300);

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
    let limits = CallLimits {
        deadline: DEADLINE,
        max_memory: 16 << 20,
    };
    let guest = Guest::load(&engine, &guest_path(), None, host, limits).unwrap();
    Arc::new(Driver::new(Arc::new(guest)).unwrap())
}

/// `{mode = "<mode>"}` as Nomad's cty-msgpack.
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

async fn start(d: &Arc<Driver>, id: &str, mode: &str) -> Result<(), DriverError> {
    let (spec, pb) = task(id, mode);
    d.start_task(spec, pb).await.map(|_| ())
}

fn guest_failure(r: Result<(), DriverError>) -> (String, GuestFailure) {
    match r {
        Err(DriverError::Guest(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("misbehave.wasm") && text.contains("start-task"),
                "{text}"
            );
            (text, e.kind)
        }
        other => panic!("expected a guest failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_guest_is_cut_off_within_twice_its_deadline() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let t0 = Instant::now();
    let (text, kind) = guest_failure(start(&d, "loop-1", "loop").await);
    let took = t0.elapsed();
    assert!(matches!(kind, GuestFailure::Timeout(_)), "{text}");
    assert!(
        took < DEADLINE * 2,
        "cut off after {took:?}, deadline {DEADLINE:?}"
    );
    start(&d, "after-loop", "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_proceed_while_a_guest_call_loops() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let looping = {
        let d = d.clone();
        tokio::spawn(async move { start(&d, "loop-2", "loop").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    start(&d, "healthy", "ok").await.unwrap();
    assert!(
        t0.elapsed() < DEADLINE,
        "a healthy call waited for the looping one"
    );
    assert!(looping.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_an_error_with_the_guest_message() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (text, kind) = guest_failure(start(&d, "trap-1", "trap").await);
    assert!(matches!(kind, GuestFailure::Trap(_)), "{text}");
    assert!(text.contains("deliberate trap in start-task"), "{text}");
    start(&d, "after-trap", "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (text, kind) = guest_failure(start(&d, "oom-1", "oom").await);
    assert!(matches!(kind, GuestFailure::OutOfMemory(_)), "{text}");
    start(&d, "after-oom", "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_and_bad_config_are_clear_errors() {
    let state = tempfile::tempdir().unwrap();
    let d = driver(&state);
    match start(&d, "liar", "bad-main").await {
        Err(DriverError::Host(m)) => assert!(m.contains("never-spawned"), "{m}"),
        other => panic!("expected a host error naming the bogus process, got {other:?}"),
    }
    match start(&d, "typo", "sideways").await {
        Err(DriverError::Refused {
            refusal: Refusal::InvalidConfig(m),
            ..
        }) => {
            assert!(m.contains("\"mode\"") && m.contains("sideways"), "{m}")
        }
        other => panic!("expected an invalid-config refusal, got {other:?}"),
    }
    start(&d, "after-lies", "ok").await.unwrap();
}

/// More calls at once than the pooling allocator has slots: the extra calls
/// wait for a slot, none fails to instantiate.
#[test]
fn calls_beyond_the_pool_wait_for_a_slot() {
    let engine = runtime::engine().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = HostContext::new(
        "misbehave.wasm".into(),
        Grants::default(),
        state.path().to_path_buf(),
    );
    let guest = Guest::load(&engine, &guest_path(), None, host, CallLimits::default()).unwrap();
    let n = 3 * runtime::CONCURRENT_CALLS as usize;
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| guest.call("info", None, |g, st| g.call_info(st))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap().name)
            .collect()
    });
    assert_eq!(names.len(), n);
    assert!(names.iter().all(|name| name == "misbehave"));
}

/// The fs capability end to end through a guest: the task's allocation
/// directory is usable during its calls; anything else is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_uses_files_only_where_granted() {
    let state = tempfile::tempdir().unwrap();
    let alloc = tempfile::tempdir().unwrap();
    let d = driver(&state);
    let (mut spec, mut pb) = task("fs-1", "fs-probe");
    let alloc_dir = alloc.path().to_string_lossy().into_owned();
    spec.alloc_dir = alloc_dir.clone();
    pb.alloc_dir = alloc_dir;
    let started = d.start_task(spec, pb).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&started.task.guest_state),
        "mkdir;write;hello;x.txt;not-granted;not-granted"
    );
    assert_eq!(
        std::fs::read(alloc.path().join("probe/x.txt")).unwrap(),
        b"hello"
    );
}
