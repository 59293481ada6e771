//! Task stats against a process of known behaviour: it holds a 64 MB string
//! and spins on one core. The numbers must show both.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nomad_wasm_host::caps::procstats::{RateTracker, sample_groups};

#[test]
fn stats_see_a_busy_process_that_holds_64_mb() {
    let mut child = Command::new("/bin/bash")
        .args([
            "-c",
            // 64 MiB in a shell variable, then a busy loop in the same shell.
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ready; while :; do :; done",
        ])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");

    let groups = HashSet::from([child.id()]);
    let mut tracker = RateTracker::default();
    let (first, _) = sample_groups(&groups);
    tracker.rates(Instant::now(), first);
    std::thread::sleep(Duration::from_millis(1500));
    let (usage, by_pid) = sample_groups(&groups);
    let rates = tracker.rates(Instant::now(), usage);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();

    assert!(by_pid.contains_key(&child.id()), "{by_pid:?}");
    assert!(
        usage.rss_bytes >= 64 << 20,
        "RSS {} < 64 MiB",
        usage.rss_bytes
    );
    assert!(
        usage.rss_bytes < 512 << 20,
        "RSS {} is implausibly large",
        usage.rss_bytes
    );
    // One spinning shell: up to one core, less when the machine is busy
    // (CI runs other tests beside it), never more than the machine has.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    assert!(
        rates.percent > 10.0,
        "CPU {}% for a busy loop",
        rates.percent
    );
    assert!(
        rates.percent <= cores * 100.0 + 5.0,
        "CPU {}% exceeds {cores} cores",
        rates.percent
    );
    assert!(rates.user_percent > rates.system_percent, "{rates:?}");
}
