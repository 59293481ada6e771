//! Spare supervisors: started ahead of need, handed a task's record
//! directory and output descriptors when it starts, and skipped when one
//! died while idle.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nomad_wasm_host::caps::cgroups::Limits;
use nomad_wasm_host::caps::process::ProcessTable;
use nomad_wasm_host::supervisor::{self, Spec, Started};

/// The tests look at this process's children: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn table(state: &tempfile::TempDir) -> ProcessTable {
    ProcessTable::new(state.path().to_path_buf())
        .with_supervisor_exe(PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm")))
}

fn sh(script: &str) -> Spec {
    Spec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        user: None,
        cgroup: None,
    }
}

fn null() -> std::os::fd::OwnedFd {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap()
        .into()
}

async fn until_idle(t: &ProcessTable, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.warm_idle() < n {
        assert!(
            Instant::now() < deadline,
            "pool never reached {n} idle supervisors"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Our children that are idle pooled supervisors.
fn pooled_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let ppid = after.split_whitespace().nth(1).unwrap_or("");
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == me && cmd.windows(8).any(|w| w == b"--pooled")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starts_in_a_spare_supervisor_with_its_output_descriptors() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    t.prewarm();
    until_idle(&t, 2).await;

    let (reader, writer) = std::io::pipe().unwrap();
    let p = tokio::task::block_in_place(|| {
        t.spawn(
            sh("echo hello from the task; exec sleep 30"),
            Limits::default(),
            writer.into(),
            null(),
            Some("warm-1".into()),
        )
    })
    .unwrap();
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the task\n");

    // The task runs under one of the spare supervisors.
    let started: Started = supervisor::read_json(&p.dir, supervisor::STARTED_FILE).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", started.supervisor_pid)).unwrap();
    assert!(
        cmdline.windows(8).any(|w| w == b"--pooled"),
        "supervisor cmdline {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // The pool is topped up again in the background.
    until_idle(&t, 2).await;

    p.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
        .await
        .unwrap();
    assert_eq!((exit.code, exit.signal), (137, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_supervisors_that_died_while_idle_are_skipped() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    t.prewarm();
    until_idle(&t, 2).await;
    let idle = pooled_children();
    assert!(idle.len() >= 2, "found pooled supervisors {idle:?}");
    for pid in &idle {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let p = tokio::task::block_in_place(|| {
        t.spawn(
            sh("exit 7"),
            Limits::default(),
            null(),
            null(),
            Some("warm-2".into()),
        )
    })
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spares_every_start_execs_its_supervisor() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let t = table(&state).with_warm_supervisors(0);
    t.prewarm();
    let p = tokio::task::block_in_place(|| {
        t.spawn(sh("exec sleep 30"), Limits::default(), null(), null(), None)
    })
    .unwrap();
    let started: Started = supervisor::read_json(&p.dir, supervisor::STARTED_FILE).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", started.supervisor_pid)).unwrap();
    let dir = p.dir.as_os_str().as_encoded_bytes();
    assert!(
        cmdline.windows(dir.len()).any(|w| w == dir),
        "supervisor started with its directory: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert_eq!(t.warm_idle(), 0);
    p.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
        .await
        .unwrap();
    assert_eq!((exit.code, exit.signal), (143, 15));
}
