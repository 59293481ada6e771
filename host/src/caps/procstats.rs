//! Resource usage of a task's process trees, read from `/proc`.
//!
//! A task's processes are the members of the process groups its supervised
//! processes lead. CPU is reported as Nomad's executor reports it: user,
//! system and total as percent of one core over the interval since the
//! previous sample, and `total_ticks` as that share of the core's MHz.
//! Memory is RSS only; `measured_fields` says so.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// CPU and memory of a set of processes at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    /// Clock ticks (`_SC_CLK_TCK`) of user and system time, cumulative.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
}

/// A computed sample: cumulative counters turned into rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuRates {
    pub user_percent: f64,
    pub system_percent: f64,
    pub percent: f64,
    pub total_ticks: f64,
}

#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: u32,
    pgrp: u32,
    utime: u64,
    stime: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command name start at field 3 (state).
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        pgrp: get(5)? as u32,
        utime: get(14)?,
        stime: get(15)?,
        rss_pages: get(24)?,
    })
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn clock_ticks_per_sec() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Usage of every process in the given process groups, in total and per pid.
pub fn sample_groups(groups: &HashSet<u32>) -> (Usage, BTreeMap<u32, Usage>) {
    let mut total = Usage::default();
    let mut by_pid = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (total, by_pid);
    };
    let page = page_size();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited meanwhile
        };
        let Some(st) = parse_stat(&text) else {
            continue;
        };
        if !groups.contains(&st.pgrp) {
            continue;
        }
        let u = Usage {
            rss_bytes: st.rss_pages * page,
            utime_ticks: st.utime,
            stime_ticks: st.stime,
        };
        total.rss_bytes += u.rss_bytes;
        total.utime_ticks += u.utime_ticks;
        total.stime_ticks += u.stime_ticks;
        by_pid.insert(st.pid, u);
    }
    (total, by_pid)
}

/// The MHz of one core, from `/proc/cpuinfo` (0 if unknown).
pub fn core_mhz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Turns two cumulative samples into rates.
#[derive(Debug)]
pub struct RateTracker {
    prev: Option<(Instant, Usage)>,
    mhz: f64,
    ticks_per_sec: f64,
}

impl Default for RateTracker {
    fn default() -> Self {
        RateTracker {
            prev: None,
            mhz: core_mhz(),
            ticks_per_sec: clock_ticks_per_sec() as f64,
        }
    }
}

impl RateTracker {
    /// Rates since the previous call (zero on the first).
    pub fn rates(&mut self, now: Instant, usage: Usage) -> CpuRates {
        let rates = match self.prev {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall <= 0.0 || self.ticks_per_sec <= 0.0 {
                    CpuRates::default()
                } else {
                    let pct = |now_t: u64, then_t: u64| {
                        now_t.saturating_sub(then_t) as f64 / self.ticks_per_sec / wall * 100.0
                    };
                    let user = pct(usage.utime_ticks, before.utime_ticks);
                    let system = pct(usage.stime_ticks, before.stime_ticks);
                    let percent = user + system;
                    CpuRates {
                        user_percent: user,
                        system_percent: system,
                        percent,
                        total_ticks: percent / 100.0 * self.mhz,
                    }
                }
            }
            None => CpuRates::default(),
        };
        self.prev = Some((now, usage));
        rates
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 123 4096000 300 18446744073709551615";
        let st = parse_stat(line).unwrap();
        assert_eq!(
            (st.pid, st.pgrp, st.utime, st.stime, st.rss_pages),
            (4242, 4242, 17, 5, 300)
        );
    }

    #[test]
    fn own_group_is_found_with_memory() {
        let me = std::process::id();
        let pgrp = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
        let (total, by_pid) = sample_groups(&HashSet::from([pgrp]));
        assert!(by_pid.contains_key(&me));
        assert!(total.rss_bytes > 1 << 20, "{total:?}");
    }

    #[test]
    fn rates_are_percent_of_one_core() {
        let mut r = RateTracker {
            prev: None,
            mhz: 2000.0,
            ticks_per_sec: 100.0,
        };
        let t0 = Instant::now();
        assert_eq!(r.rates(t0, Usage::default()), CpuRates::default());
        // 50 user + 25 system ticks over 1 s at 100 ticks/s: 75 % of a core.
        let used = Usage {
            rss_bytes: 0,
            utime_ticks: 50,
            stime_ticks: 25,
        };
        let rates = r.rates(t0 + std::time::Duration::from_secs(1), used);
        assert!((rates.user_percent - 50.0).abs() < 1e-9);
        assert!((rates.percent - 75.0).abs() < 1e-9);
        assert!((rates.total_ticks - 1500.0).abs() < 1e-9);
    }
}
