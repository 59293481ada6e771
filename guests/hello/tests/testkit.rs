//! The built hello guest (`target/wasm32-wasip2/guest/hello.wasm`) run in
//! wasmtime by the testkit, against fake host capabilities. Build it first:
//! `cargo build -p hello-guest --target wasm32-wasip2 --profile guest`.
#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{AttributeValue, Call, Error, Harness, Health, Output, Reply, Task};

fn fish() -> Harness {
    let mut h = Harness::load("hello").unwrap();
    h.program("fish", "/usr/bin/fish");
    h.set_config(r#"shell = "fish""#).unwrap();
    h
}

#[test]
fn fish_task_runs_the_exact_argv_with_the_tasks_env() {
    let mut h = fish();
    let task = Task::new("greet")
        .nomad_env()
        .env("FOO", "bar")
        .config("greeting = \"hi there\"\nsleep = 2\nexit_code = \"3\"");
    let started = h.start_task(&task).unwrap();
    assert_eq!(started.main_process(), Some("p1"));
    assert_eq!(
        h.commands(),
        vec![vec![
            "/usr/bin/fish".to_string(),
            "-c".into(),
            "printf '%s\\n' $argv[1]; sleep $argv[2]; exit $argv[3]".into(),
            "hi there".into(),
            "2".into(),
            "3".into(),
        ]]
    );
    let spawned = h.spawned()[0];
    let mut want_env = task.nomad_vars();
    want_env.push(("FOO".into(), "bar".into()));
    assert_eq!(spawned.env, want_env);
    assert_eq!(spawned.cwd.as_deref(), Some(task.task_dir().as_str()));
    assert_eq!(spawned.user, None);
    let Some(Call::Spawn { stdout, stderr, .. }) = h.calls().last() else {
        panic!("{:?}", h.calls())
    };
    assert_eq!((*stdout, *stderr), (Output::TaskStdout, Output::TaskStderr));
}

#[test]
fn default_greeting_and_bash_without_plugin_config() {
    let mut h = Harness::load("hello").unwrap();
    h.program("bash", "/bin/bash");
    h.start_task(&Task::new("greet")).unwrap();
    assert_eq!(
        h.commands(),
        vec![vec![
            "/bin/bash".to_string(),
            "-c".into(),
            "printf '%s\\n' \"$1\"".into(),
            "hello-world-example".into(),
            "Hello, World!".into(),
            "0".into(),
            "0".into(),
        ]]
    );
}

#[test]
fn a_greeting_with_quotes_and_substitutions_is_one_argument() {
    for shell in ["bash", "fish"] {
        let mut h = Harness::load("hello").unwrap();
        h.program(shell, &format!("/usr/bin/{shell}"));
        h.set_config(&format!("shell = \"{shell}\"")).unwrap();
        let evil = r#"it's "quoted"; $(touch /tmp/pwned) `id` $HOME \$PATH"#;
        // (No `${`: the client interpolates task config strings with the
        // task's variables, and in the pipeline the decoder models
        // (tests/conformance/jobconfig.go) HCL's `$${` escape is spent by
        // the job parser, so `$${HOME}` is interpolated as `${HOME}`.)
        let hcl_value = evil.replace('\\', "\\\\").replace('"', "\\\"");
        h.start_task(&Task::new("greet").config(&format!("greeting = \"{hcl_value}\"")))
            .unwrap();
        let argv = h.commands().pop().unwrap();
        assert_eq!(
            argv.iter().filter(|a| a.as_str() == evil).count(),
            1,
            "{shell}: {argv:?}"
        );
        // The script itself never contains the greeting.
        assert!(!argv[2].contains("pwned"), "{shell}: {argv:?}");
    }
}

#[test]
fn fingerprint_is_undetected_without_the_shell() {
    let mut h = Harness::load("hello").unwrap();
    h.set_config(r#"shell = "fish""#).unwrap();
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Undetected);
    assert!(fp.description.contains("fish"), "{fp:?}");
    assert_eq!(h.calls(), &[Call::LookupPath("fish".into())]);
}

#[test]
fn fingerprint_reports_the_shell_version() {
    let mut h = fish();
    h.reply(
        "/usr/bin/fish",
        &["--version"],
        Reply::exit(0).stdout("fish, version 3.6.0\n"),
    );
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Healthy);
    let version = fp
        .attributes
        .iter()
        .find(|a| a.key == "driver.hello.shell_version");
    assert!(
        matches!(version, Some(a) if matches!(&a.value, AttributeValue::Text(v) if v == "3.6.0")),
        "{fp:?}"
    );

    let mut h = fish();
    h.reply("/usr/bin/fish", &["--version"], Reply::exit(127));
    let fp = h.fingerprint();
    assert_eq!(fp.health, Health::Unhealthy);
    assert!(fp.description.contains("127"), "{fp:?}");
}

#[test]
fn exec_command_runs_in_the_tasks_env_dir_and_user() {
    let mut h = fish();
    h.program("ls", "/usr/bin/ls");
    let task = Task::new("greet").env("FOO", "bar").user("nobody");
    let started = h.start_task(&task).unwrap();
    let cmd = h.exec_command(&started, &["ls", "-l", "/"]).unwrap();
    assert_eq!(cmd.argv(), ["/usr/bin/ls", "-l", "/"]);
    assert_eq!(cmd.env, vec![("FOO".to_string(), "bar".to_string())]);
    assert_eq!(cmd.cwd.as_deref(), Some(task.task_dir().as_str()));
    assert_eq!(cmd.user.as_deref(), Some("nobody"));

    let err = h.exec_command(&started, &["nosuch"]).unwrap_err();
    let msg = err.invalid_config().unwrap();
    assert!(msg.contains("nosuch"), "{msg}");
    let err = h.exec_command(&started, &[]).unwrap_err();
    assert!(err.invalid_config().is_some(), "{err:?}");
}

#[test]
fn invalid_configs_are_rejected_naming_the_field() {
    let mut h = Harness::load("hello").unwrap();
    // The guest's own check: a shell it does not support.
    let err = h.set_config(r#"shell = "zsh""#).unwrap_err();
    let msg = err.invalid_config().unwrap();
    assert!(msg.contains("\"shell\"") && msg.contains("zsh"), "{msg}");

    // Nomad's decoding: an unknown attribute, a wrong type.
    h.program("bash", "/bin/bash");
    let err = h
        .start_task(&Task::new("greet").config(r#"greting = "hi""#))
        .unwrap_err();
    let Error::Decode(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with("config.greting:"), "{msg}");
    assert!(msg.contains("Did you mean \"greeting\"?"), "{msg}");
    let err = h
        .start_task(&Task::new("greet").config(r#"greeting = ["a", "b"]"#))
        .unwrap_err();
    let Error::Decode(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.starts_with("config.greeting: Incorrect attribute value type"),
        "{msg}"
    );

    // The guest's check of values Nomad's decoding lets through.
    let err = h
        .start_task(&Task::new("greet").config("exit_code = 300"))
        .unwrap_err();
    let msg = err.invalid_config().unwrap_or_default().to_string();
    assert!(msg.contains("exit_code"), "{err:?}");
}

#[test]
fn stop_and_signal_reach_the_main_process() {
    let mut h = fish();
    let started = h.start_task(&Task::new("greet")).unwrap();
    h.clear_calls();
    h.stop_task(&started, "SIGINT").unwrap();
    assert_eq!(
        h.calls(),
        &[Call::Signal {
            id: "p1".into(),
            signal: "SIGINT".into()
        }]
    );
}
