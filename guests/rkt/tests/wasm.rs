//! The BUILT rkt guest in wasmtime (nomad-driver-testkit) against fake host
//! capabilities that record every command it asks for. Build it first:
//! `cargo build -p rkt-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{
    Call, DriverError, Error, Harness, Health, Limits, Output, Reply, Task,
};

const RKT: &str = "/usr/local/bin/rkt";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const UUID: &str = "7d2e6f0c-7d9b-4bfa-8f3d-1a2b3c4d5e6f";

fn harness() -> Harness {
    let mut h = Harness::load("rkt").unwrap();
    h.program("rkt", RKT);
    h.reply(
        RKT,
        &["--insecure-options=all", "--debug=false", "prepare"],
        Reply::exit(0).stdout(format!("{UUID}\n")),
    );
    h.reply(
        RKT,
        &["--debug=false", "prepare"],
        Reply::exit(0).stdout(format!("{UUID}\n")),
    );
    h.set_config("").unwrap();
    h
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn rkt(args: &[&str]) -> Vec<String> {
    let mut out = vec![RKT.to_string()];
    out.extend(v(args));
    out
}

#[test]
fn seed_fields_run_the_exact_rkt_sequence() {
    let mut h = harness();
    let t = Task::new("etcd")
        .config(
            r#"
image = "coreos.com/etcd:v2.0.4"
command = "/etcd"
args = ["--version", "--data-dir=/local"]
trust_prefix = "coreos.com/etcd"
dns_servers = ["8.8.8.8", "8.8.4.4"]
dns_search_domains = ["example.com"]
"#,
        )
        .memory_mb(256)
        .cpu_shares(500)
        .env("GREETING", "hello world");
    let started = h.start_task(&t).unwrap();
    let vol = format!("{}-etcd", t.alloc_id());
    let (ad, td) = (t.alloc_dir(), t.task_dir());
    assert_eq!(
        h.commands(),
        vec![
            rkt(&[
                "trust",
                "--skip-fingerprint-review=true",
                "--prefix=coreos.com/etcd",
                "--debug=false"
            ]),
            rkt(&[
                "--debug=false",
                "prepare",
                &format!("--volume={vol}-alloc,kind=host,source={ad}/alloc"),
                &format!("--mount=volume={vol}-alloc,target=/alloc"),
                &format!("--volume={vol}-local,kind=host,source={td}/local"),
                &format!("--mount=volume={vol}-local,target=/local"),
                &format!("--volume={vol}-secrets,kind=host,source={td}/secrets"),
                &format!("--mount=volume={vol}-secrets,target=/secrets"),
                "--set-env=GREETING=hello world",
                "coreos.com/etcd:v2.0.4",
                "--exec=/etcd",
                "--memory=268435456",
                "--cpu=500",
                "--",
                "--version",
                "--data-dir=/local",
            ]),
            rkt(&[
                "--debug=false",
                "run-prepared",
                "--dns=8.8.8.8",
                "--dns=8.8.4.4",
                "--dns-search=example.com",
                UUID
            ]),
        ]
    );
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
                limits,
            } => {
                assert_eq!(
                    command.env,
                    vec![("PATH".to_string(), PATH_ENV.to_string())]
                );
                assert_eq!((*stdout, *stderr), (Output::TaskStdout, Output::TaskStderr));
                let l: &Limits = limits.as_ref().unwrap();
                assert_eq!((l.memory_max_bytes, l.cpu_shares), (256 << 20, 500));
            }
            _ => {}
        }
    }
    let cmd = h
        .exec_command(&started, &["sh", "-c", "echo $HOME"])
        .unwrap();
    assert_eq!(
        (cmd.program.as_str(), cmd.args),
        (RKT, v(&["enter", UUID, "sh", "-c", "echo $HOME"]))
    );
}

#[test]
fn hostile_values_are_intact_single_arguments() {
    let mut h = harness();
    let t = Task::new("app")
        .config("image = \"docker://busybox\"\nargs = [\"a b\", \"$(id)\", \"x\\ny\"]\ncommand = \"/bin/sh\"")
        .env("Q", r#"it's "q""#)
        .env("NL", "l1\nl2")
        .env("SUBST", "$(id) `id`");
    h.start_task(&t).unwrap();
    let prepare = &h.commands()[0];
    for kv in [
        "--set-env=NL=l1\nl2",
        r#"--set-env=Q=it's "q""#,
        "--set-env=SUBST=$(id) `id`",
    ] {
        assert!(
            prepare.contains(&kv.to_string()),
            "{kv:?} not in {prepare:?}"
        );
    }
    assert_eq!(
        prepare[prepare.len() - 4..],
        v(&["--", "a b", "$(id)", "x\ny"])[..]
    );
}

#[test]
fn failing_prepare_surfaces_stderr_and_nothing_is_spawned() {
    let mut h = harness();
    h.reply(
        RKT,
        &["--insecure-options=all", "--debug=false", "prepare"],
        Reply::exit(254).stderr("no such image\n"),
    );
    let err = h
        .start_task(&Task::new("app").config("image = \"docker://nope\""))
        .unwrap_err();
    assert!(format!("{err:?}").contains("no such image"), "{err:?}");
    assert!(
        h.task_events()
            .iter()
            .any(|(m, a)| m.contains("no such image")
                && a.iter().any(|(k, v)| k == "stderr" && v == "no such image"))
    );
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Spawn { .. })));
}

#[test]
fn prepare_printing_no_uuid_is_an_error() {
    let mut h = harness();
    h.reply(
        RKT,
        &["--insecure-options=all", "--debug=false", "prepare"],
        Reply::exit(0).stdout("\n"),
    );
    let err = h
        .start_task(&Task::new("app").config("image = \"i\""))
        .unwrap_err();
    assert!(format!("{err:?}").contains("UUID"), "{err:?}");
}

#[test]
fn ports_volumes_and_rejections() {
    let mut h = harness();
    let t = Task::new("app")
        .config("image = \"i\"\nport_map = { http = \"8080-tcp\" }\nvolumes = [\"/etc/ssl:/etc/ssl:readOnly\"]")
        .port("http", 24000, 0);
    h.start_task(&t).unwrap();
    let prepare = &h.commands()[0];
    assert!(
        prepare.contains(&"--port=8080-tcp:24000".to_string()),
        "{prepare:?}"
    );
    assert!(
        prepare
            .iter()
            .any(|a| a.ends_with(",kind=host,source=/etc/ssl,readOnly=true"))
    );

    let mut h = harness();
    h.set_config("volumes_enabled = false").unwrap();
    match h.start_task(&Task::new("app").config("image = \"i\"\nvolumes = [\"/a:/b\"]")) {
        Err(Error::Driver(DriverError::InvalidConfig(m))) => {
            assert!(m.contains("volumes_enabled"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match h.start_task(&Task::new("app").config("image = \"i\"\ndns_servers = [\"x\"]")) {
        Err(Error::Driver(DriverError::InvalidConfig(m))) => {
            assert!(m.contains("\"dns_servers[0]\""), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match h.start_task(&Task::new("app").config("image = \"i\"\nbogus = 1")) {
        Err(Error::Decode(m)) => assert!(m.contains("bogus"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(h.commands().is_empty(), "{:?}", h.commands());
}

#[test]
fn fingerprint_parses_rkt_version_with_a_minimum() {
    let out = "rkt Version: 1.30.0\nappc Version: 0.8.11\nGo Version: go1.8.3\n";
    let mut h = harness();
    h.reply(RKT, &["version"], Reply::exit(0).stdout(out));
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Healthy, "{fp:?}");
    let keys: Vec<&str> = fp.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "driver.rkt",
            "driver.rkt.version",
            "driver.rkt.appc.version",
            "driver.rkt.volumes.enabled"
        ]
    );

    let mut h = harness();
    h.reply(
        RKT,
        &["version"],
        Reply::exit(0).stdout("rkt Version: 1.26.0\nappc Version: 0.8.10\n"),
    );
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Undetected);
    assert!(fp.description.contains("1.27.0"), "{}", fp.description);

    let mut h = Harness::load("rkt").unwrap();
    h.set_config("").unwrap();
    assert_eq!(h.fingerprint().health, Health::Undetected);
}
