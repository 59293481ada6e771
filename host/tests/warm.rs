//! Spare supervisors: started ahead of need, handed a task's record
//! directory and output descriptors when it starts, and skipped when one
//! died while idle.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nomad_wasm_host::caps::cgroups::Limits;
use nomad_wasm_host::caps::process::{ProcessTable, WARM_SUPERVISORS};
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

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The signals a process ignores (`SigIgn` in /proc/<pid>/status).
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starts_in_a_spare_supervisor_with_its_output_descriptors() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    t.prewarm();
    until_idle(&t, WARM_SUPERVISORS).await;
    let spares = t.warm_idle_pids();

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

    // The task runs under one of the spare supervisors, which the zygote
    // forked (no exec of the host binary).
    let started: Started = supervisor::read_json(&p.dir, supervisor::STARTED_FILE).unwrap();
    assert!(
        spares.contains(&started.supervisor_pid),
        "supervisor {} is not one of the idle spares {spares:?}",
        started.supervisor_pid
    );
    let zygote = t.zygote_pid().expect("a zygote runs");
    assert_eq!(parent_of(started.supervisor_pid), Some(zygote));
    // The zygote ignores SIGCHLD (the kernel reaps its forks); neither the
    // supervisor nor the task may inherit that, or their exits get lost.
    const SIGCHLD_BIT: u64 = 1 << (libc::SIGCHLD - 1);
    assert_ne!(ignored_signals(zygote) & SIGCHLD_BIT, 0);
    assert_eq!(ignored_signals(started.supervisor_pid) & SIGCHLD_BIT, 0);
    assert_eq!(ignored_signals(started.pid) & SIGCHLD_BIT, 0);
    // The pool is topped up again in the background.
    until_idle(&t, WARM_SUPERVISORS).await;

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
    until_idle(&t, WARM_SUPERVISORS).await;
    let idle = t.warm_idle_pids();
    assert_eq!(idle.len(), WARM_SUPERVISORS, "idle spares {idle:?}");
    for pid in &idle {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_zygote_is_replaced_and_starts_still_work() {
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    t.prewarm();
    until_idle(&t, WARM_SUPERVISORS).await;
    let zygote = t.zygote_pid().expect("a zygote runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The first start's refill finds the zygote dead and starts a new
    // one.
    for n in 0..3 {
        let p = tokio::task::block_in_place(|| {
            t.spawn(
                sh("exit 5"),
                Limits::default(),
                null(),
                null(),
                Some(format!("zygote-{n}")),
            )
        })
        .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap();
        assert_eq!(exit.code, 5);
        until_idle(&t, WARM_SUPERVISORS).await;
    }
    let again = t.zygote_pid().expect("a new zygote runs");
    assert_ne!(again, zygote);
    let idle = t.warm_idle_pids();
    assert!(
        idle.iter().any(|&pid| parent_of(pid) == Some(again)),
        "no idle spare {idle:?} was forked by the new zygote {again}"
    );
}
