//! Memory limits through cgroups, for real: a process tree that outgrows
//! its limit is OOM-killed, and the supervisor records it. On a host
//! without usable cgroups the limit cannot apply; the test then checks the
//! documented fallback (the process runs, the kind is reported as `none`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use nomad_wasm_host::caps::cgroups::{Cgroups, Limits};
use nomad_wasm_host::caps::process::ProcessTable;
use nomad_wasm_host::supervisor::Spec;

fn table(state: &tempfile::TempDir) -> ProcessTable {
    ProcessTable::new(state.path().to_path_buf())
        .with_supervisor_exe(PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasm")))
}

fn null() -> std::os::fd::OwnedFd {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap()
        .into()
}

fn hog(bytes: u64) -> Spec {
    Spec {
        program: "/bin/bash".into(),
        // Hold `bytes` in a shell variable, then report survival.
        args: vec![
            "-c".into(),
            format!("x=$(head -c {bytes} /dev/zero | tr '\\0' a); echo survived ${{#x}}"),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        user: None,
        cgroup: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_memory_limit_is_oom_killed_and_reported() {
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    let limits = Limits {
        memory_max: 48 << 20,
        cpu_shares: 0,
    };
    let spawn = |t: &ProcessTable, spec, limits, id: &str| {
        let id = id.to_owned();
        tokio::task::block_in_place(|| t.spawn(spec, limits, null(), null(), Some(id)))
    };
    match t.cgroups().clone() {
        Cgroups::Unavailable { reason } => {
            assert_eq!(t.cgroups().kind(), "none");
            let p = spawn(&t, hog(1 << 20), limits, "no-cgroups").unwrap();
            let exit = p.wait().await;
            assert_eq!(
                (exit.code, exit.oom_killed),
                (0, false),
                "no cgroups ({reason}): runs unlimited"
            );
        }
        _ => {
            let p = spawn(&t, hog(256 << 20), limits, "hog").unwrap();
            let cg = p
                .cgroup
                .clone()
                .expect("limits were requested: the process has a cgroup");
            let exit = p.wait().await;
            assert!(
                exit.oom_killed,
                "256 MiB under a 48 MiB limit was not OOM-killed: {exit:?}"
            );
            t.remove_task("hog");
            assert!(!cg.exists(), "cgroup {} left behind", cg.display());

            // The same program well under the limit is untouched.
            let p = spawn(&t, hog(4 << 20), limits, "small").unwrap();
            let exit = p.wait().await;
            assert_eq!(
                (exit.code, exit.signal, exit.oom_killed),
                (0, 0, false),
                "{exit:?}"
            );
            t.remove_task("small");
        }
    }
}

/// A process that left the task's process group (its own session, as a
/// container's init does) is still in the task's cgroup, and the kill
/// reaches it there; the supervisor survives to record the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_reaches_processes_that_left_the_group_through_the_cgroup() {
    let state = tempfile::tempdir().unwrap();
    let t = table(&state);
    if let Cgroups::Unavailable { reason } = t.cgroups() {
        eprintln!("no cgroups here ({reason}): nothing to kill through; checked: kind is none");
        assert_eq!(t.cgroups().kind(), "none");
        return;
    }
    let pidfile = state.path().join("escaped.pid");
    let spec = Spec {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            format!("setsid sleep 300 & echo $! > {}; wait", pidfile.display()),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        user: None,
        cgroup: None,
    };
    let limits = Limits {
        memory_max: 64 << 20,
        cpu_shares: 0,
    };
    let p =
        tokio::task::block_in_place(|| t.spawn(spec, limits, null(), null(), Some("esc".into())))
            .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let escaped: i32 = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = s.trim().parse()
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no pid file");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    p.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(alive(escaped), "the escaped process is outside the group");
    p.kill_cgroup();
    let exit = tokio::time::timeout(std::time::Duration::from_secs(10), p.wait())
        .await
        .unwrap();
    assert_eq!(exit.signal, 9, "the exit was recorded: {exit:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(escaped) {
        // A zombie until its new parent reaps it; gone from the cgroup.
        let stat = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "escaped process {escaped} survived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    t.remove_task("esc");
}
