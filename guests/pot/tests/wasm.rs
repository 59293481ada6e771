//! The BUILT pot guest in wasmtime (nomad-driver-testkit) against fake host
//! capabilities that record every command it asks for. Build it first:
//! `cargo build -p pot-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{Call, Error, ExitStatus, Harness, Health, Output, Reply, Task};

const POT: &str = "/usr/local/bin/pot";
const UNAME: &str = "/usr/bin/uname";
const PATH_ENV: &str = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/sbin:/bin";

const SEED: &str = r#"
image = "https://potluck.honeyguide.net/nginx-nomad"
pot = "nginx-nomad-amd64-13_1"
tag = "1.1.13"
command = "nginx"
args = ["-g","'daemon off;'"]
copy = [
  "/mnt/s3/web/nginx.conf:/usr/local/etc/nginx/nginx.conf",
]
mount = [
  "/mnt/s3/web/www:/mnt"
]
port_map = {
  http = "80"
}
"#;

fn harness() -> Harness {
    let mut h = Harness::load("pot").unwrap();
    h.program("pot", POT);
    h.program("uname", UNAME);
    h.set_config("").unwrap();
    h
}

fn name(t: &Task) -> String {
    format!("{}_00000001_{}", t.name(), t.alloc_id())
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn pot(args: &[&str]) -> Vec<String> {
    let mut out = vec![POT.to_string()];
    out.extend(v(args));
    out
}

fn minimal() -> Task {
    Task::new("www1").config("image = \"https://e.org/p\"\npot = \"p\"\ntag = \"1.0\"")
}

#[test]
fn seed_job_runs_the_exact_pot_sequence() {
    let mut h = harness();
    let t = Task::new("www1")
        .config(SEED)
        .memory_mb(64)
        .port("http", 28443, 0)
        .env("GREETING", "hello world");
    let started = h.start_task(&t).unwrap();
    let n = name(&t);
    let dir = t.task_dir();
    assert_eq!(
        h.commands(),
        vec![
            pot(&[
                "prepare",
                "-U",
                "https://potluck.honeyguide.net/nginx-nomad",
                "-p",
                "nginx-nomad-amd64-13_1",
                "-t",
                "1.1.13",
                "-c",
                "\"nginx -g 'daemon off;'\"",
                "-N",
                "public-bridge",
                "-i",
                "auto",
                "-e",
                "80:28443",
                "-a",
                &format!("00000001_{}", t.alloc_id()),
                "-n",
                "www1",
                "-v",
            ]),
            pot(&[
                "copy-in",
                "-p",
                &n,
                "-s",
                "/mnt/s3/web/nginx.conf",
                "-d",
                "/usr/local/etc/nginx/nginx.conf"
            ]),
            pot(&[
                "mount-in",
                "-p",
                &n,
                "-d",
                &format!("{dir}/local"),
                "-m",
                "/local"
            ]),
            pot(&[
                "mount-in",
                "-p",
                &n,
                "-d",
                &format!("{dir}/secrets"),
                "-m",
                "/secrets"
            ]),
            pot(&["mount-in", "-p", &n, "-d", "/mnt/s3/web/www", "-m", "/mnt"]),
            pot(&["set-env", "-p", &n, "-E", "GREETING=hello world"]),
            pot(&["set-rss", "-M", "64M", "-p", &n]),
            pot(&["start", &n]),
        ]
    );
    // Only pot's own PATH, never the host's environment; `pot start` is the
    // task's main process with its output on the task's FIFOs.
    for call in h.calls() {
        match call {
            Call::Run { command, .. } => assert_eq!(
                command.env,
                vec![("PATH".to_string(), PATH_ENV.to_string())]
            ),
            Call::Spawn {
                command,
                stdout,
                stderr,
                ..
            } => {
                assert_eq!(
                    command.env,
                    vec![("PATH".to_string(), PATH_ENV.to_string())]
                );
                assert_eq!((*stdout, *stderr), (Output::TaskStdout, Output::TaskStderr));
            }
            _ => {}
        }
    }
    assert_eq!(started.main_process(), Some("p1"));
}

#[test]
fn hostile_env_values_reach_set_env_as_single_escaped_arguments() {
    let mut h = harness();
    let t = minimal()
        .env("SPACES", "a b  c")
        .env("QUOTES", r#"it's "quoted""#)
        .env("SUBST", "$(rm -rf /) `id`")
        .env("BACKSLASH", r"C:\dir\");
    h.start_task(&t).unwrap();
    let set_env = h
        .commands()
        .into_iter()
        .find(|c| c[1] == "set-env")
        .unwrap();
    assert_eq!(
        set_env[4..],
        v(&[
            "-E",
            r"BACKSLASH=C:\\dir\\",
            "-E",
            r#"QUOTES=it's "quoted""#,
            "-E",
            "SPACES=a b  c",
            "-E",
            r"SUBST=\$(rm -rf /) \`id\`",
        ])[..]
    );
    let mut h = harness();
    let err = h
        .start_task(&minimal().env("PEM", "line1\nline2"))
        .unwrap_err();
    let Error::Driver(nomad_driver_testkit::DriverError::InvalidConfig(m)) = err else {
        panic!("{err:?}")
    };
    assert!(m.contains("\"PEM\""), "{m}");
    assert!(
        h.commands().is_empty(),
        "nothing may run for a refused task: {:?}",
        h.commands()
    );
}

#[test]
fn exit_125_reads_the_jails_exit_code_and_destroy_task_removes_the_pot() {
    let mut h = harness();
    let t = minimal();
    let n = name(&t);
    let started = h.start_task(&t).unwrap();
    h.reply(
        POT,
        &["last-run-stats"],
        Reply::exit(0).stdout("{\"ExitCode\": 9}\n"),
    );
    h.reply(
        POT,
        &["ls", "-q"],
        Reply::exit(0).stdout(format!("other\n{n}\n")),
    );
    h.clear_calls();
    let r = h
        .task_exited(
            &started,
            ExitStatus {
                code: 125,
                signal: 0,
                oom_killed: false,
            },
        )
        .unwrap();
    assert_eq!((r.exit_code, r.signal, r.err.as_deref()), (9, 0, None));
    assert_eq!(h.commands(), vec![pot(&["last-run-stats", "-p", &n])]);
    // Nomad's DestroyTask after the exit removes the pot.
    h.clear_calls();
    h.destroy_task(&started).unwrap();
    assert_eq!(
        h.commands(),
        vec![pot(&["ls", "-q"]), pot(&["destroy", "-p", &n, "-F"])]
    );
}

#[test]
fn other_exits_are_reported_as_they_are_without_running_pot() {
    let mut h = harness();
    let started = h.start_task(&minimal()).unwrap();
    h.clear_calls();
    for (code, signal) in [(143, 15), (0, 0), (3, 0)] {
        let r = h
            .task_exited(
                &started,
                ExitStatus {
                    code,
                    signal,
                    oom_killed: false,
                },
            )
            .unwrap();
        assert_eq!((r.exit_code, r.signal, r.err), (code, signal, None));
    }
    assert!(h.commands().is_empty(), "{:?}", h.commands());
}

#[test]
fn exit_125_without_stats_is_an_error_with_pots_stderr() {
    let mut h = harness();
    let t = minimal();
    let started = h.start_task(&t).unwrap();
    h.reply(
        POT,
        &["last-run-stats"],
        Reply::exit(1).stderr("pot: the pot is not valid\n"),
    );
    h.reply(
        POT,
        &["ls", "-q"],
        Reply::exit(0).stdout(format!("{}\n", name(&t))),
    );
    let r = h
        .task_exited(
            &started,
            ExitStatus {
                code: 125,
                signal: 0,
                oom_killed: false,
            },
        )
        .unwrap();
    assert_eq!(r.exit_code, 125);
    assert!(
        r.err.as_deref().unwrap().contains("the pot is not valid"),
        "{r:?}"
    );
    assert!(
        h.task_events()
            .iter()
            .any(|(m, _)| m.contains("the pot is not valid"))
    );
}

#[test]
fn exit_125_of_a_pot_a_stop_destroyed_is_reported_as_observed() {
    let mut h = harness();
    let started = h.start_task(&minimal()).unwrap();
    h.reply(
        POT,
        &["last-run-stats"],
        Reply::exit(1).stderr("pot: not a pot\n"),
    );
    // `pot ls -q` (unscripted: empty output) no longer lists it.
    let r = h
        .task_exited(
            &started,
            ExitStatus {
                code: 125,
                signal: 0,
                oom_killed: false,
            },
        )
        .unwrap();
    assert_eq!((r.exit_code, r.err), (125, None));
    assert!(h.task_events().is_empty(), "{:?}", h.task_events());
}

#[test]
fn failing_prepare_surfaces_stderr_in_the_error_and_a_task_event() {
    let mut h = harness();
    h.reply(
        POT,
        &["prepare"],
        Reply::exit(1).stderr("pot: zfs dataset does not exist\n"),
    );
    let err = h.start_task(&minimal()).unwrap_err();
    let Error::Driver(nomad_driver_testkit::DriverError::Temporary(m)) = err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("zfs dataset does not exist") && m.contains("pot prepare"),
        "{m}"
    );
    let events = h.task_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].0.contains("zfs dataset does not exist"));
    assert!(
        events[0]
            .1
            .iter()
            .any(|(k, v)| k == "stderr" && v.contains("zfs dataset"))
    );
    assert_eq!(
        h.commands().len(),
        1,
        "nothing after a failed prepare: {:?}",
        h.commands()
    );
}

#[test]
fn failing_later_step_destroys_the_half_made_pot() {
    let mut h = harness();
    let t = minimal();
    h.reply(
        POT,
        &["mount-in"],
        Reply::exit(1).stderr("mount_nullfs: Operation not permitted\n"),
    );
    assert!(h.start_task(&t).is_err());
    let cmds = h.commands();
    assert_eq!(
        cmds.last().unwrap(),
        &pot(&["destroy", "-p", &name(&t), "-F"])
    );
    assert!(!cmds.iter().any(|c| c[1] == "start"));
    assert!(h.task_events()[0].0.contains("Operation not permitted"));
}

#[test]
fn set_env_failure_events_do_not_show_values() {
    let mut h = harness();
    h.reply(POT, &["set-env"], Reply::exit(1).stderr("pot: bad\n"));
    assert!(h.start_task(&minimal().env("TOKEN", "s3cret")).is_err());
    for (m, ann) in h.task_events() {
        assert!(!m.contains("s3cret"), "{m}");
        assert!(ann.iter().all(|(_, v)| !v.contains("s3cret")), "{ann:?}");
    }
}

#[test]
fn stop_signal_exec_stats_destroy_use_pot() {
    let mut h = harness();
    let t = minimal();
    let n = name(&t);
    let started = h.start_task(&t).unwrap();
    h.clear_calls();
    h.signal_task(&started, "SIGHUP").unwrap();
    assert_eq!(
        h.commands(),
        vec![pot(&["signal", "-s", "SIGHUP", "-p", &n])]
    );
    h.clear_calls();
    let cmd = h
        .exec_command(&started, &["sh", "-c", "echo $HOME"])
        .unwrap();
    assert_eq!(cmd.program, POT);
    assert_eq!(cmd.args, v(&["exec", "-p", &n, "sh", "-c", "echo $HOME"]));
    h.reply(
        POT,
        &["get-rss"],
        Reply::exit(0).stdout(r#"{ "ResourceUsage": { "MemoryStats": { "RSS" : 4096, "Swap" : 0 }, "CpuStats": { "TotalTicks": 1.5, "Percent": 2 } } }"#),
    );
    let u = h.task_stats(&started).unwrap().unwrap();
    assert_eq!((u.memory_rss_bytes, u.cpu_percent), (Some(4096), Some(2.0)));
    assert_eq!(h.commands(), vec![pot(&["get-rss", "-p", &n, "-J"])]);
    h.clear_calls();
    h.stop_task(&started, "SIGINT").unwrap();
    assert_eq!(h.commands(), vec![pot(&["destroy", "-p", &n, "-F"])]);
    h.clear_calls();
    h.reply(POT, &["ls", "-q"], Reply::exit(0).stdout(format!("{n}\n")));
    h.destroy_task(&started).unwrap();
    assert_eq!(
        h.commands(),
        vec![pot(&["ls", "-q"]), pot(&["destroy", "-p", &n, "-F"])]
    );
    // A failing stop is an error carrying pot's stderr, and an event.
    h.reply(POT, &["destroy"], Reply::exit(1).stderr("pot: jail busy\n"));
    assert!(format!("{:?}", h.stop_task(&started, "").unwrap_err()).contains("jail busy"));
    assert!(h.task_events().iter().any(|(m, _)| m.contains("jail busy")));
}

#[test]
fn fingerprint_needs_pot_and_freebsd() {
    let mut h = harness();
    h.reply(UNAME, &["-s"], Reply::exit(0).stdout("FreeBSD\n"));
    h.reply(
        POT,
        &["version"],
        Reply::exit(0).stdout("pot version: 0.16.0\n"),
    );
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Healthy, "{fp:?}");
    assert!(
        fp.attributes
            .iter()
            .any(|a| a.key == "driver.pot.version" && format!("{:?}", a.value).contains("0.16.0"))
    );

    let mut h = harness();
    h.reply(UNAME, &["-s"], Reply::exit(0).stdout("Linux\n"));
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Undetected);
    assert!(
        fp.description.contains("FreeBSD") && fp.description.contains("Linux"),
        "{}",
        fp.description
    );

    let mut h = Harness::load("pot").unwrap();
    h.program("uname", UNAME);
    h.set_config("").unwrap();
    assert_eq!(h.fingerprint().health, Health::Undetected, "no pot on PATH");

    let mut h = harness();
    h.deny(UNAME);
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Unhealthy, "{fp:?}");
    assert!(fp.description.contains("uname"), "{}", fp.description);

    let mut h = harness();
    h.set_config("enabled = false").unwrap();
    assert_eq!(h.fingerprint().health, Health::Undetected);
    assert!(h.commands().is_empty());
}

#[test]
fn config_that_nomad_would_refuse_and_the_driver_refuses() {
    let mut h = harness();
    match h
        .start_task(&minimal().config("image = \"i\"\npot = \"p\"\ntag = \"t\"\nnetwork = \"x\""))
    {
        Err(Error::Decode(m)) => assert!(m.contains("network"), "{m}"),
        other => panic!("{other:?}"),
    }
    match h.start_task(&minimal().config("image = \"i\"\ntag = \"t\"")) {
        Err(Error::Decode(m)) => assert!(m.contains("pot"), "{m}"),
        other => panic!("{other:?}"),
    }
    match h.start_task(
        &minimal().config("image = \"i\"\npot = \"p\"\ntag = \"t\"\nnetwork_mode = \"vnet\""),
    ) {
        Err(Error::Driver(nomad_driver_testkit::DriverError::InvalidConfig(m))) => {
            assert!(m.contains("\"network_mode\""), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The block form of port_map decodes too (Nomad's `port_map { }`).
    let t = Task::new("www1")
        .config("image = \"i\"\npot = \"p\"\ntag = \"t\"\nport_map {\n  http = \"8080\"\n}")
        .port("http", 25000, 0);
    h.start_task(&t).unwrap();
    assert!(
        h.commands()[0]
            .windows(2)
            .any(|w| w == ["-e", "8080:25000"])
    );
}
