//! The built nspawn guest in wasmtime (nomad-driver-testkit) against fake
//! host capabilities: configs written in HCL and decoded as Nomad would,
//! the exact commands the guest asks the host to run, every lifecycle call.
//!
//! Build the guest first:
//! `cargo build -p nspawn-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{
    Call, DriverError, Error, ExitStatus, Harness, Health, Output, Reply, Started, Task,
};

const NSPAWN: &str = "/usr/bin/systemd-nspawn";
const PGREP: &str = "/usr/bin/pgrep";
const PS: &str = "/usr/bin/ps";
const KILL: &str = "/usr/bin/kill";
const NSENTER: &str = "/usr/bin/nsenter";
const MAIN_PID: &str = "5000\n";
const LEADER_PID: &str = "5003\n";
const PAYLOAD_PID: &str = "5004\n";

/// A host without machined (`machinectl` not installed), with the
/// container's processes discoverable: nspawn 5000 -> PID 1 5003 -> 5004.
fn harness() -> Harness {
    let mut h = Harness::load("nspawn").unwrap();
    for (name, path) in [
        ("systemd-nspawn", NSPAWN),
        ("id", "/usr/bin/id"),
        ("pgrep", PGREP),
        ("ps", PS),
        ("kill", KILL),
        ("nsenter", NSENTER),
    ] {
        h.program(name, path);
    }
    h.reply(
        NSPAWN,
        &["--version"],
        Reply::exit(0).stdout("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT\n"),
    );
    h.reply("/usr/bin/id", &["-u"], Reply::exit(0).stdout("0\n"));
    h.reply(
        PGREP,
        &["--oldest", "--full"],
        Reply::exit(0).stdout(MAIN_PID),
    );
    h.reply(
        PGREP,
        &["--oldest", "--parent", "5000"],
        Reply::exit(0).stdout(LEADER_PID),
    );
    h.reply(
        PGREP,
        &["--oldest", "--parent", "5003"],
        Reply::exit(0).stdout(PAYLOAD_PID),
    );
    h.reply(
        PS,
        &["-o", "pidns=", "-p", "5000"],
        Reply::exit(0).stdout("4026531836\n"),
    );
    h.reply(
        PS,
        &["-o", "pidns=", "-p", "5003"],
        Reply::exit(0).stdout("4026532201\n"),
    );
    h.set_config(
        r#"image_root = "/var/lib/machines"
"#,
    )
    .unwrap();
    h
}

const CONTAINER: &str = r#"image = "busybox"
boot = false
process_two = true
command = ["/bin/sh", "-c", "echo hi"]
environment = { GREETING = "hello" }
"#;

fn start(h: &mut Harness, task: &Task) -> Started {
    h.start_task(task).unwrap()
}

fn spawned_argv(h: &Harness) -> Vec<String> {
    let spawn = h
        .calls()
        .iter()
        .find_map(|c| match c {
            Call::Spawn { command, .. } => Some(command.clone()),
            _ => None,
        })
        .expect("the guest spawned nothing");
    let mut argv = vec![spawn.program];
    argv.extend(spawn.args);
    argv
}

#[test]
fn info_capabilities_and_schema() {
    let mut h = harness();
    assert_eq!(h.info().unwrap().name, "nspawn");
    let caps = h.capabilities().unwrap();
    assert!(caps.send_signals && caps.exec && caps.mounts);
    assert!(format!("{:?}", caps.fs_isolation).ends_with("Image"));
    let modes = format!("{:?}", caps.network_modes);
    assert!(modes.contains("Host") && modes.contains("Group"), "{modes}");
}

#[test]
fn fingerprint_reports_version_and_machined() {
    let mut h = harness();
    let fp = h.fingerprint();
    assert!(matches!(fp.health, Health::Healthy), "{fp:?}");
    let attr = |k: &str| {
        fp.attributes
            .iter()
            .find(|a| a.key == k)
            .map(|a| format!("{:?}", a.value))
            .unwrap_or_default()
    };
    assert_eq!(
        attr("driver.nspawn.version"),
        "AttributeValue::Text(\"252\")"
    );
    assert_eq!(
        attr("driver.nspawn.full_version"),
        "AttributeValue::Text(\"252.39-1~deb12u2\")"
    );
    assert_eq!(
        attr("driver.nspawn.machined"),
        "AttributeValue::Boolean(false)"
    );
}

#[test]
fn fingerprint_is_undetected_without_nspawn_or_root() {
    let mut h = Harness::load("nspawn").unwrap();
    assert!(matches!(h.fingerprint().health, Health::Undetected));

    let mut h = harness();
    h.reply("/usr/bin/id", &["-u"], Reply::exit(0).stdout("1000\n"));
    let fp = h.fingerprint();
    assert!(matches!(fp.health, Health::Undetected), "{fp:?}");
    assert!(fp.description.contains("root"), "{}", fp.description);

    let mut h = harness();
    h.deny("/usr/bin/id");
    let fp = h.fingerprint();
    assert!(matches!(fp.health, Health::Undetected), "{fp:?}");
}

#[test]
fn start_spawns_the_planned_command_line_with_limits_and_fifos() {
    let mut h = harness();
    let task = Task::new("web")
        .config(CONTAINER)
        .memory_mb(128)
        .env("FROM_NOMAD", "1");
    let started = start(&mut h, &task);
    let machine = format!("web-{}", task.alloc_id());
    let uuid: String = task.alloc_id().chars().filter(|c| *c != '-').collect();
    let alloc = task.alloc_dir();
    let td = task.task_dir();
    let want: Vec<String> = [
        NSPAWN.to_string(),
        "-D".into(),
        "/var/lib/machines/busybox".into(),
        "--quiet".into(),
        format!("--machine={machine}"),
        format!("--uuid={uuid}"),
        "--register=no".into(),
        "--keep-unit".into(),
        "--as-pid2".into(),
        "--private-users=pick".into(),
        "--private-users-ownership=auto".into(),
        "--network-veth".into(),
        "--console=pipe".into(),
        format!("--bind={alloc}/alloc:/alloc:idmap"),
        format!("--bind={td}/local:/local:idmap"),
        format!("--bind={td}/secrets:/secrets:idmap"),
        "--setenv=FROM_NOMAD".into(),
        "--setenv=GREETING".into(),
        "--setenv=NOMAD_ALLOC_DIR".into(),
        "--setenv=NOMAD_SECRETS_DIR".into(),
        "--setenv=NOMAD_TASK_DIR".into(),
        "--setenv=PATH".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "echo hi".into(),
    ]
    .to_vec();
    assert_eq!(spawned_argv(&h), want);
    let Some(Call::Spawn {
        command,
        stdout,
        stderr,
        limits,
    }) = h
        .calls()
        .iter()
        .find(|c| matches!(c, Call::Spawn { .. }))
        .cloned()
    else {
        unreachable!()
    };
    assert!(matches!(stdout, Output::TaskStdout) && matches!(stderr, Output::TaskStderr));
    assert_eq!(limits.unwrap().memory_max_bytes, 128 << 20);
    assert!(command.env.contains(&("GREETING".into(), "hello".into())));
    assert!(
        command
            .env
            .contains(&("NOMAD_TASK_DIR".into(), "/local".into()))
    );
    assert_eq!(command.user, None);
    // The leader was found and the machine announced.
    let state: serde_json::Value = serde_json::from_slice(started.driver_state()).unwrap();
    assert_eq!(state["leader"]["pid"], 5003);
    assert_eq!(state["leader"]["pidns"], "4026532201");
    let events = h.task_events();
    assert!(events.iter().any(|(m, a)| m.contains(&machine)
        && a.contains(&("leader_pid".into(), "5003".into()))));
}

#[test]
fn every_rejection_names_its_fields() {
    let cases: &[(&str, &[&str])] = &[
        (
            "image = \"x\"\nprocess_two = true\n",
            &["boot", "process_two"],
        ),
        ("image = \"x\"\nuser = \"app\"\n", &["boot", "user"]),
        (
            "image = \"x\"\nboot = false\nread_only = true\n",
            &["read_only", "user_namespacing"],
        ),
        (
            "image = \"x\"\nboot = false\nvolatile = \"yes\"\n",
            &["volatile", "user_namespacing"],
        ),
        (
            "image = \"x\"\nuser_namespacing = false\nprivate_users = \"pick\"\n",
            &["private_users", "user_namespacing"],
        ),
        ("image = \"x\"\nconsole = \"tty\"\n", &["console"]),
        ("image = \"x\"\nresolv_conf = \"magic\"\n", &["resolv_conf"]),
        (
            "image = \"x\"\nworking_directory = \"srv\"\n",
            &["working_directory"],
        ),
        (
            "image = \"x\"\nnetwork_zone = \"a\"\nnetwork_bridge = \"b\"\n",
            &["network_zone", "network_bridge"],
        ),
        (
            "image = \"x\"\nports = [\"http\"]\nport_map {\n  http = 80\n}\n",
            &["port_map", "ports"],
        ),
        ("image = \"x\"\nports = [\"nope\"]\n", &["ports", "nope"]),
        ("image = \"../x\"\n", &["image", ".."]),
        (
            "image = \"x\"\nbind = {\n  \"rel\" = \"/a\"\n}\n",
            &["bind", "absolute"],
        ),
        (
            "image = \"x\"\ncapability = [\"CAP NET\"]\n",
            &["capability"],
        ),
    ];
    for (hcl, words) in cases {
        let mut h = harness();
        match h.start_task(&Task::new("web").config(hcl)) {
            Err(Error::Driver(DriverError::InvalidConfig(m))) => {
                for w in *words {
                    assert!(m.contains(w), "{hcl}: {m:?} does not mention {w:?}");
                }
            }
            other => panic!("{hcl}: {other:?}"),
        }
        assert!(
            !h.calls().iter().any(|c| matches!(c, Call::Spawn { .. })),
            "{hcl}: spawned despite the error"
        );
    }
}

#[test]
fn a_missing_required_image_fails_to_decode() {
    let mut h = harness();
    assert!(matches!(
        h.start_task(&Task::new("web").config("boot = false\n")),
        Err(Error::Decode(m)) if m.contains("image")
    ));
}

#[test]
fn signals_go_to_the_command_and_stops_to_init_when_booted() {
    let mut h = harness();
    let started = start(&mut h, &Task::new("web").config(CONTAINER));
    h.clear_calls();
    h.signal_task(&started, "SIGHUP").unwrap();
    assert_eq!(
        h.commands().last().unwrap(),
        &[KILL, "-s", "HUP", "5004"].map(String::from).to_vec()
    );
    h.stop_task(&started, "SIGTERM").unwrap();
    assert_eq!(
        h.commands().last().unwrap(),
        &[KILL, "-s", "TERM", "5004"].map(String::from).to_vec()
    );
    // No kill signal in the job: Nomad's default, SIGINT.
    h.stop_task(&started, "").unwrap();
    assert_eq!(h.commands().last().unwrap()[2], "INT");

    // Booted: SIGTERM to nspawn, which powers the container off.
    let mut h = harness();
    let booted = start(&mut h, &Task::new("os").config("image = \"debian\"\n"));
    h.clear_calls();
    h.stop_task(&booted, "SIGINT").unwrap();
    assert_eq!(
        h.calls().last().unwrap(),
        &Call::Signal {
            id: booted.main_process().unwrap().into(),
            signal: "SIGTERM".into()
        }
    );
    // A signal for a booted container goes to its init.
    h.signal_task(&booted, "SIGUSR1").unwrap();
    assert_eq!(
        h.commands().last().unwrap(),
        &[KILL, "-s", "USR1", "5003"].map(String::from).to_vec()
    );
}

#[test]
fn exec_enters_the_container_through_its_leader() {
    let mut h = harness();
    let started = start(&mut h, &Task::new("web").config(CONTAINER));
    let cmd = h.exec_command(&started, &["ls", "-l", "/"]).unwrap();
    assert_eq!(cmd.program, NSENTER);
    assert_eq!(
        cmd.args,
        [
            "--target=5003",
            "--all",
            "--root",
            "--wd",
            "--",
            "ls",
            "-l",
            "/"
        ]
        .map(String::from)
    );
    assert!(cmd.env.contains(&("GREETING".into(), "hello".into())));
    assert!(
        cmd.env
            .contains(&("NOMAD_TASK_DIR".into(), "/local".into()))
    );
}

#[test]
fn destroy_kills_a_container_that_outlived_nspawn_but_not_a_reused_pid() {
    let mut h = harness();
    let started = start(&mut h, &Task::new("web").config(CONTAINER));
    h.clear_calls();
    h.destroy_task(&started).unwrap();
    assert_eq!(
        h.commands().last().unwrap(),
        &[KILL, "-s", "KILL", "5003"].map(String::from).to_vec()
    );
    // The pid now belongs to another process (another pid namespace).
    h.reply(
        PS,
        &["-o", "pidns=", "-p", "5003"],
        Reply::exit(0).stdout("4026531836\n"),
    );
    h.clear_calls();
    h.destroy_task(&started).unwrap();
    assert!(
        !h.commands().iter().any(|c| c[0] == KILL),
        "{:?}",
        h.commands()
    );
}

#[test]
fn a_container_without_a_leader_is_searched_for_a_bounded_time() {
    let mut h = harness();
    h.reply(PGREP, &["--oldest", "--full"], Reply::exit(1));
    let started = start(&mut h, &Task::new("web").config(CONTAINER));
    let state: serde_json::Value = serde_json::from_slice(started.driver_state()).unwrap();
    assert!(state["leader"].is_null());
    let searches = h.commands().iter().filter(|c| c[0] == PGREP).count();
    assert!((1..=1000).contains(&searches), "{searches} searches");
    // Its exit is the command's, as nspawn reported it.
    let exit = h
        .task_exited(
            &started,
            ExitStatus {
                code: 3,
                signal: 0,
                oom_killed: false,
            },
        )
        .unwrap();
    assert_eq!(exit.exit_code, 3);
    // Exec without a leader is a temporary failure, not a crash.
    assert!(matches!(
        h.exec_command(&started, &["ls"]),
        Err(Error::Driver(DriverError::Temporary(_)))
    ));
}

#[test]
fn stats_sum_the_memory_of_the_containers_processes() {
    let mut h = harness();
    let started = start(&mut h, &Task::new("web").config(CONTAINER));
    h.reply(
        PS,
        &["-o", "pidns=,rss=", "-e"],
        Reply::exit(0).stdout("4026531836 9000\n4026532201 1000\n4026532201 2500\n"),
    );
    let usage = h.task_stats(&started).unwrap().unwrap();
    assert_eq!(usage.memory_rss_bytes, Some(3500 * 1024));
    assert_eq!(usage.cpu_percent, None);
}

#[test]
fn a_missing_image_is_refused_naming_the_field() {
    let mut h = harness();
    h.program("test", "/usr/bin/test");
    h.reply("/usr/bin/test", &["-d"], Reply::exit(1));
    h.reply("/usr/bin/test", &["-e"], Reply::exit(1));
    match h.start_task(&Task::new("web").config(CONTAINER)) {
        Err(Error::Driver(DriverError::InvalidConfig(m))) => {
            assert!(
                m.contains("image") && m.contains("/var/lib/machines/busybox"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A disk image file: -i.
    h.reply("/usr/bin/test", &["-e"], Reply::exit(0));
    h.clear_calls();
    h.start_task(&Task::new("web").config(CONTAINER)).unwrap();
    assert_eq!(spawned_argv(&h)[1..3], ["-i", "/var/lib/machines/busybox"]);
}
