//! The testkit against real built guests: `hello` (the reference driver)
//! and `misbehave` (faults on request). Build them first:
//! `cargo build -p hello-guest -p misbehave-guest --target wasm32-wasip2 --profile guest`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nomad_driver_testkit::{
    Call, DriverError, Error, ExitStatus, Harness, Health, Output, Reply, Task, TaskPoll,
};

fn hello() -> Harness {
    Harness::load("hello").unwrap()
}

#[test]
fn a_missing_guest_says_how_to_build_it() {
    let err = Harness::load("no-such-guest").unwrap_err();
    let Error::Load(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("no-such-guest.wasm"), "{msg}");
    assert!(
        msg.contains("--target wasm32-wasip2 --profile guest"),
        "{msg}"
    );
}

#[test]
fn schemas_and_info_come_from_the_guest() {
    let mut h = hello();
    assert_eq!(h.info().unwrap().name, "hello-world-example");
    assert!(h.config_schema().is_some());
    assert!(!h.task_config_schema().nodes.is_empty());
    assert!(h.capabilities().unwrap().exec);
}

#[test]
fn fingerprint_records_lookups_and_runs_and_uses_scripted_replies() {
    let mut h = hello();
    // Nothing registered: bash is not found.
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Undetected);
    assert_eq!(h.calls(), &[Call::LookupPath("bash".into())]);

    h.clear_calls();
    h.program("bash", "/usr/bin/bash");
    // The longest matching prefix wins over a catch-all.
    h.reply("/usr/bin/bash", &[], Reply::exit(2));
    h.reply(
        "/usr/bin/bash",
        &["--version"],
        Reply::exit(0).stdout("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n"),
    );
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Healthy, "{fp:?}");
    assert!(
        fp.attributes
            .iter()
            .any(|a| a.key == "driver.hello.shell_version"),
        "{fp:?}"
    );
    assert_eq!(
        h.commands(),
        vec![vec!["/usr/bin/bash".to_string(), "--version".into()]]
    );
    assert!(matches!(&h.calls()[1], Call::Run { timeout_ms, .. } if *timeout_ms > 0));

    // The catch-all answers when the prefix does not match.
    let mut h2 = hello();
    h2.program("bash", "/usr/bin/bash");
    h2.reply("/usr/bin/bash", &[], Reply::exit(2));
    assert_eq!(h2.fingerprint().health, Health::Unhealthy);
}

#[test]
fn an_unscripted_run_exits_zero_with_no_output() {
    let mut h = hello();
    h.program("bash", "/usr/bin/bash");
    let fp = h.fingerprint();
    // Exit 0 but no version text: healthy with an empty version.
    assert_eq!(fp.health, Health::Healthy);
    assert_eq!(h.commands().len(), 1);
}

#[test]
fn a_denied_program_is_refused_as_not_granted() {
    let mut h = hello();
    h.program("bash", "/usr/bin/bash");
    h.deny("/usr/bin/bash");
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Unhealthy);
    assert!(fp.description.contains("not granted"), "{fp:?}");
    let err = h.start_task(&Task::new("web")).unwrap_err();
    assert!(matches!(&err, Error::Driver(_)), "{err:?}");
    // The refused spawn is still recorded.
    assert!(h.calls().iter().any(|c| matches!(c, Call::Spawn { .. })));
}

#[test]
fn plugin_config_is_decoded_as_nomad_would() {
    let mut h = hello();
    let err = h.set_config(r#"shel = "fish""#).unwrap_err();
    let Error::Decode(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with("config.shel: "), "{msg}");
    assert!(msg.contains("Did you mean \"shell\"?"), "{msg}");

    let err = h.set_config(r#"shell = "zsh""#).unwrap_err();
    let msg = err.invalid_config().unwrap();
    assert!(msg.contains("\"shell\"") && msg.contains("zsh"), "{msg}");

    h.set_config(r#"shell = "fish""#).unwrap();
    h.program("fish", "/usr/bin/fish");
    h.start_task(&Task::new("web")).unwrap();
    assert_eq!(h.spawned()[0].program, "/usr/bin/fish");
}

#[test]
fn start_task_spawns_with_the_tasks_env_dir_user_and_limits() {
    let mut h = hello();
    h.program("bash", "/bin/bash");
    let task = Task::new("web")
        .config("greeting = \"hi\"\nsleep = \"2\"")
        .env("FOO", "bar")
        .user("nobody")
        .memory_mb(256)
        .memory_max_mb(512)
        .cpu_shares(500);
    let started = h.start_task(&task).unwrap();
    assert_eq!(started.main_process(), Some("p1"));
    let Call::Spawn {
        command,
        stdout,
        stderr,
        limits,
    } = h.calls().last().unwrap()
    else {
        panic!("{:?}", h.calls())
    };
    assert_eq!(command.program, "/bin/bash");
    assert_eq!(&command.args[command.args.len() - 3..], ["hi", "2", "0"]);
    assert_eq!(command.env, vec![("FOO".to_string(), "bar".to_string())]);
    assert_eq!(command.cwd.as_deref(), Some(task.task_dir().as_str()));
    assert_eq!(command.user.as_deref(), Some("nobody"));
    assert_eq!(*stdout, Output::TaskStdout);
    assert_eq!(*stderr, Output::TaskStderr);
    let limits = limits.unwrap();
    assert_eq!(limits.memory_max_bytes, 512 * 1024 * 1024);
    assert_eq!(limits.cpu_shares, 500);
    // Deterministic ids and paths.
    assert_eq!(task.task_dir(), format!("{}/web", task.alloc_dir()));
    assert!(task.id().starts_with(task.alloc_id()));
}

#[test]
fn config_templates_use_the_tasks_variables() {
    let mut h = hello();
    h.program("bash", "/bin/bash");
    let task = Task::new("web")
        .config(r#"greeting = "dir=${NOMAD_TASK_DIR} foo=${FOO}""#)
        .env("FOO", "bar");
    h.start_task(&task).unwrap();
    let argv = h.commands().pop().unwrap();
    let want = format!("dir={}/local foo=bar", task.task_dir());
    assert!(argv.contains(&want), "{argv:?}");

    let task = Task::new("web")
        .config(r#"greeting = "${attr.kernel.name}/${env["FOO"]}""#)
        .env("FOO", "bar")
        .node_attr("attr.kernel.name", "linux");
    h.start_task(&task).unwrap();
    assert!(
        h.commands()
            .pop()
            .unwrap()
            .contains(&"linux/bar".to_string())
    );
}

#[test]
fn task_config_errors_are_nomads() {
    let mut h = hello();
    h.program("bash", "/bin/bash");
    let err = h
        .start_task(&Task::new("web").config(r#"sleep = "soon""#))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Decode(
            "config.sleep: Incorrect attribute value type; Inappropriate value for attribute \"sleep\": a number is required."
                .into()
        )
    );
    // Nothing reached the guest.
    assert!(h.calls().is_empty());
}

#[test]
fn lifecycle_calls_reach_the_guest() {
    let mut h = hello();
    h.program("bash", "/bin/bash");
    h.program("ls", "/usr/bin/ls");
    let started = h.start_task(&Task::new("web").env("A", "1")).unwrap();
    h.clear_calls();

    let cmd = h.exec_command(&started, &["ls", "-l"]).unwrap();
    assert_eq!(cmd.argv(), ["/usr/bin/ls", "-l"]);
    assert_eq!(cmd.env_var("A"), Some("1"));

    h.signal_task(&started, "SIGHUP").unwrap();
    h.stop_task(&started, "SIGTERM").unwrap();
    let signals: Vec<&Call> = h
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Signal { .. }))
        .collect();
    assert_eq!(
        signals,
        [
            &Call::Signal {
                id: "p1".into(),
                signal: "SIGHUP".into()
            },
            &Call::Signal {
                id: "p1".into(),
                signal: "SIGTERM".into()
            }
        ]
    );

    h.set_exit(
        "p1",
        ExitStatus {
            code: 3,
            signal: 0,
            oom_killed: false,
        },
    );
    let result = h
        .task_exited(
            &started,
            ExitStatus {
                code: 3,
                signal: 0,
                oom_killed: false,
            },
        )
        .unwrap();
    assert_eq!(result.exit_code, 3);
    assert!(h.task_stats(&started).unwrap().is_none());
    h.destroy_task(&started).unwrap();
}

#[test]
fn faults_become_errors_and_the_harness_keeps_working() {
    let mut h = Harness::load("misbehave").unwrap();
    h.set_deadline(Duration::from_millis(300));
    let mode = |m: &str| Task::new("t").config(&format!("mode = \"{m}\""));

    let err = h.start_task(&mode("loop")).unwrap_err();
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("deadline")),
        "{err:?}"
    );
    let err = h.start_task(&mode("trap")).unwrap_err();
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("deliberate trap")),
        "{err:?}"
    );
    let err = h.start_task(&mode("oom")).unwrap_err();
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("memory")),
        "{err:?}"
    );
    let err = h.start_task(&mode("nonsense")).unwrap_err();
    assert!(
        matches!(&err, Error::Driver(DriverError::InvalidConfig(m)) if m.contains("nonsense")),
        "{err:?}"
    );
    let err = h.start_task(&Task::new("t")).unwrap_err();
    assert_eq!(
        err,
        Error::Decode(
            "config.mode: Missing required argument; The argument \"mode\" is required, but no definition was found."
                .into()
        )
    );
    let err = h.start_task(&mode("bad-main")).unwrap_err();
    assert!(
        matches!(&err, Error::Guest(m) if m.contains("did not spawn")),
        "{err:?}"
    );
    assert!(h.start_task(&mode("ok")).is_ok());
}

#[test]
fn poll_task_follows_the_fake_clock() {
    let mut h = Harness::load("misbehave").unwrap();
    let started = h
        .start_task(&Task::new("t").config(r#"mode = "remote""#))
        .unwrap();
    assert_eq!(started.main_process(), None);
    // The clock has not moved: still provisioning, with a task event.
    assert!(matches!(
        h.poll_task(&started).unwrap(),
        TaskPoll::Running(_)
    ));
    assert_eq!(h.task_events()[0].0, "provisioning");
    // A second later the remote task has ended with its exit code.
    h.set_time(nomad_driver_testkit::START_TIME + 1);
    let TaskPoll::Exited(result) = h.poll_task(&started).unwrap() else {
        panic!("still running")
    };
    assert_eq!(result.exit_code, 7);
}

#[test]
fn file_access_is_limited_to_the_tasks_alloc_dir_and_grants() {
    let mut h = Harness::load("misbehave").unwrap();
    h.file("/etc/hostname", "box\n");
    let task = Task::new("t").config(r#"mode = "fs-probe""#);
    let started = h.start_task(&task).unwrap();
    // mkdir, write, read back, list, read outside, escape with `..`.
    assert_eq!(
        String::from_utf8_lossy(started.driver_state()),
        "mkdir;write;hello;x.txt;not-granted;not-granted"
    );
    let file = format!("{}/probe/x.txt", task.alloc_dir());
    assert_eq!(h.read(&file).unwrap(), b"hello");
    assert_eq!(h.mode(&file), Some(0o644));

    // A read-only grant lets the guest read outside the alloc dir; the `..`
    // path resolves to /etc/passwd, inside the grant, which does not exist.
    let mut h = Harness::load("misbehave").unwrap();
    h.file("/etc/hostname", "box\n");
    h.grant_dir("/etc", false);
    let started = h.start_task(&task).unwrap();
    assert_eq!(
        String::from_utf8_lossy(started.driver_state()),
        "mkdir;write;hello;x.txt;read-outside;not-found"
    );
}
