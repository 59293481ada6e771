//! The local commands, run as a person runs them: the built binary, without
//! Nomad's magic cookie, against the hello guest.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn hello() -> PathBuf {
    built("hello", "hello-guest")
}

/// A guest built by scripts/build.sh; a missing one fails the test saying
/// how to build it.
fn built(file: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip2/guest/{file}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build it first with scripts/build.sh (or `cargo build -p {package} \
         --target wasm32-wasip2 --profile guest`)",
        p.display()
    );
    p
}

/// One precompile cache for every test here, so hello compiles once.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-test-cache")
}

/// bash as the hello guest finds it (on the PATH), to grant it.
fn bash() -> String {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join("bash"))
        .find(|p| p.is_file())
        .expect("bash on the PATH")
        .display()
        .to_string()
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nomad-driver-wasm"));
    c.args(args)
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .env_remove("NOMAD_WASM_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    cmd(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command that loads the hello guest, with the shared cache.
fn with_hello(command: &str, rest: &[&str]) -> Output {
    let guest = hello();
    let cache = cache_dir();
    let mut args = vec![command, guest.to_str().unwrap()];
    args.extend_from_slice(rest);
    args.extend_from_slice(&["--cache-dir", cache.to_str().unwrap()]);
    run(&args)
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn help_lists_the_commands_and_each_command_has_its_own() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for line in [
        "  schema <guest.wasm>\n",
        "  validate <guest.wasm> <file>\n",
        "  run <guest.wasm> <file>\n",
        "  precompile <guest.wasm>\n",
        "  --allow-exec PATH\n",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    let out = run(&["run", "--help"]);
    assert!(out.status.success());
    let run_help = text(&out.stdout);
    assert!(run_help.starts_with("Usage: nomad-driver-wasm run <guest.wasm> <file> [FLAGS]\n"));
    for flag in [
        "--plugin-config FILE",
        "--kill-timeout SECONDS",
        "--memory-mb MB",
        "--task NAME",
    ] {
        assert!(run_help.contains(flag), "{flag} missing from:\n{run_help}");
    }
    assert!(!run_help.contains("--fingerprint-interval"));
}

#[test]
fn without_cookie_or_command_it_explains_and_lists_the_commands() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Nomad task driver plugin"), "{err}");
    assert!(
        err.contains("Local commands:\n  schema <guest.wasm>"),
        "{err}"
    );
}

#[test]
fn usage_mistakes_exit_2_with_the_reason() {
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown command \"frobnicate\""));
    let out = run(&["validate", "x.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("validate needs <file>"));
}

#[test]
fn a_missing_guest_is_a_clear_error() {
    let out = run(&["schema", "/nonexistent/guest.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: guest /nonexistent/guest.wasm not found\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = write(dir.path(), "notes.wasm", "# not wasm\n");
    let out = run(&["schema", not_wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error: guest {} is not a WebAssembly component (nor a precompiled one): it does \
             not start with the \\0asm header\n",
            not_wasm.display()
        )
    );
}

const HELLO_TASK_SCHEMA: &str = r#"
# In a job:
task "example" {
  driver = "hello-world-example"

  config {
    # string, optional, default "Hello, World!"
    greeting = "Hello, World!"

    # number, optional
    # sleep = 0

    # number, optional
    # exit_code = 0
  }
}
"#;

#[test]
fn schema_prints_both_configs_as_hcl() {
    let out = with_hello("schema", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = text(&out.stdout);
    let expected = format!(
        "# Driver \"hello-world-example\" v0.1.0 (hello.wasm)\n\n\
         # In the Nomad agent's config:\n\
         plugin \"nomad-driver-wasm\" {{\n  args = [\"--guest\", \"hello.wasm\"]\n\n  config {{\n\
         \x20   # string, optional, default \"bash\"\n    shell = \"bash\"\n  }}\n}}\n{HELLO_TASK_SCHEMA}"
    );
    assert_eq!(doc, expected);
    // What it prints is HCL a user can paste.
    hcl::parse(&doc).unwrap();
}

#[test]
fn schema_of_a_driver_without_plugin_config() {
    let guest = built("misbehave", "misbehave-guest");
    let cache = cache_dir();
    let out = run(&[
        "schema",
        guest.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "# Driver \"misbehave\" v0.1.0 (misbehave.wasm)\n\n\
         # In the Nomad agent's config (this driver takes no plugin config):\n\
         plugin \"nomad-driver-wasm\" {\n  args = [\"--guest\", \"misbehave.wasm\"]\n}\n\n\
         # In a job:\ntask \"example\" {\n  driver = \"misbehave\"\n\n  config {\n\
         \x20   # string, required\n    mode = \"\"\n  }\n}\n"
    );
}

#[test]
fn precompiled_output_loads_and_serves_the_same_driver() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("hello.cwasm");
    let out = with_hello("precompile", &["-o", out_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let progress = text(&out.stderr);
    assert!(
        progress.contains(&format!("wrote {}", out_file.display())),
        "{progress}"
    );
    assert!(progress.contains("loads in"), "{progress}");
    assert!(
        progress.contains("(driver \"hello-world-example\" v0.1.0)"),
        "{progress}"
    );
    let bytes = std::fs::read(&out_file).unwrap();
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "a wasmtime artifact is an ELF image"
    );

    // The artifact is a guest like the .wasm: same schemas.
    let out = run(&["schema", out_file.to_str().unwrap(), "--cache-dir", ""]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(HELLO_TASK_SCHEMA));

    // Precompiling an artifact again is refused with the reason.
    let out = run(&["precompile", out_file.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is already precompiled"));
}

#[test]
fn precompile_without_output_fills_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let guest = hello();
    let out = run(&[
        "precompile",
        guest.to_str().unwrap(),
        "--cache-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        text(&out.stderr).contains(&format!("cached as {}", cached[0].display())),
        "{}",
        text(&out.stderr)
    );
    // Nothing to do without a cache or -o.
    let out = run(&["precompile", guest.to_str().unwrap(), "--cache-dir", ""]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("give -o FILE"));
}

const JOB: &str = r#"job "demo" {
  group "g" {
    task "greet" {
      driver = "hello-world-example"
      config {
        greeting = "hi from a job"
        exit_code = 3
      }
    }

    task "other" {
      driver = "docker"
      config {
        image = "redis"
      }
    }
  }
}
"#;

#[test]
fn validate_accepts_a_good_job_and_names_the_field_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let job = write(dir.path(), "demo.nomad.hcl", JOB);
    let out = with_hello("validate", &[job.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}: job \"demo\", group \"g\", task \"greet\": valid\n",
            job.display()
        )
    );

    let bad = write(
        dir.path(),
        "bad.hcl",
        "greeting = \"hi\"\n\ngreting = \"typo\"\nsleep = \"soon\"\n",
    );
    let out = with_hello("validate", &[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // Each problem on its own line, with the file line of the field.
    assert!(
        err.contains(&format!(
            "{}:3: config.greting: Extraneous JSON object property; No argument or \
             block type is named \"greting\". Did you mean \"greeting\"?",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:4: config.sleep:", bad.display())),
        "{err}"
    );
    assert!(err.contains("a number is required"), "{err}");
    assert!(err.contains("1 of 1 config(s)"), "{err}");

    let syntax = write(dir.path(), "broken.hcl", "greeting = = 1\n");
    let out = with_hello("validate", &[syntax.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("Error: {}:1:", syntax.display())),
        "{}",
        text(&out.stderr)
    );

    let none = write(
        dir.path(),
        "none.hcl",
        "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"exec\"\n    }\n  }\n}\n",
    );
    let out = with_hello("validate", &[none.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "no task uses driver \"hello-world-example\": its tasks are \"t\" (driver \"exec\")"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_checks_an_agent_plugin_config_with_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "agent.hcl",
        "plugin_dir = \"/opt/nomad/plugins\"\n\nplugin \"nomad-driver-wasm\" {\n  \
         args = [\"--guest\", \"hello.wasm\"]\n  config {\n    shell = \"fish\"\n  }\n}\n",
    );
    let out = with_hello("validate", &[good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}: plugin config: valid\n", good.display())
    );
    // The schema allows any string; the guest's set-config refuses zsh.
    let bad = write(
        dir.path(),
        "bad-agent.hcl",
        "plugin \"nomad-driver-wasm\" {\n  config {\n    shell = \"zsh\"\n  }\n}\n",
    );
    let out = with_hello("validate", &[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:2: invalid config: field \"shell\": unsupported shell \"zsh\"; expected one of \
             \"bash\", \"fish\"\n",
            bad.display()
        )
    );
    // A field the schema does not have is hcldec's error, with its line.
    let typo = write(
        dir.path(),
        "typo-agent.hcl",
        "plugin \"nomad-driver-wasm\" {\n  config {\n    shel = \"bash\"\n  }\n}\n",
    );
    let out = with_hello("validate", &[typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{}:3: config.shel:", typo.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_hello_example_job_and_agent_config_validate() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    let job = examples.join("example.nomad");
    let out = with_hello("validate", &[job.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(": valid\n"));
    let agent = examples.join("agent.hcl");
    let out = with_hello("validate", &[agent.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(": plugin config: valid\n"));
}

#[test]
fn run_prints_the_greeting_and_exits_with_the_task_code() {
    let dir = tempfile::tempdir().unwrap();
    let bash = bash();
    let body = write(dir.path(), "task.hcl", "greeting = \"hello from run\"\n");
    let out = with_hello("run", &[body.to_str().unwrap(), "--allow-exec", &bash]);
    let progress = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{progress}");
    assert_eq!(text(&out.stdout), "hello from run\n");
    assert!(
        progress.contains("==> loaded driver \"hello-world-example\" v0.1.0"),
        "{progress}"
    );
    assert!(progress.contains("==> started task \"task\""), "{progress}");
    assert!(
        progress.contains("==> task exited with code 0"),
        "{progress}"
    );

    // Templates see the task's variables; the alloc dir is laid out like
    // Nomad's while the task runs and removed afterwards.
    let vars = write(
        dir.path(),
        "vars.hcl",
        "greeting = \"${NOMAD_TASK_NAME} ${NOMAD_TASK_DIR} ${NOMAD_MEMORY_LIMIT} \
         ${attr.kernel.name}\"\n",
    );
    let out = with_hello(
        "run",
        &[
            vars.to_str().unwrap(),
            "--allow-exec",
            &bash,
            "--memory-mb",
            "64",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{printed}");
    assert_eq!(words[0], "task");
    assert_eq!(words[2], "64");
    assert_eq!(words[3], "linux");
    let task_dir = Path::new(words[1]);
    assert!(task_dir.ends_with("task/local"), "{printed}");
    let alloc_dir = task_dir.parent().unwrap().parent().unwrap();
    assert!(
        alloc_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("nomad-driver-wasm-run-"),
        "{printed}"
    );
    assert!(
        !alloc_dir.exists(),
        "{} was left behind",
        alloc_dir.display()
    );

    // A job file: its task's name, its exit code.
    let job = write(dir.path(), "demo.nomad.hcl", JOB);
    let out = with_hello("run", &[job.to_str().unwrap(), "--allow-exec", &bash]);
    let progress = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{progress}");
    assert_eq!(text(&out.stdout), "hi from a job\n");
    assert!(
        progress.contains("==> started task \"greet\""),
        "{progress}"
    );
    assert!(
        progress.contains("==> task exited with code 3"),
        "{progress}"
    );

    // The plugin config is decoded and set like the agent's.
    let agent = write(
        dir.path(),
        "agent.hcl",
        "plugin \"nomad-driver-wasm\" {\n  config {\n    shell = \"zsh\"\n  }\n}\n",
    );
    let out = with_hello(
        "run",
        &[
            body.to_str().unwrap(),
            "--allow-exec",
            &bash,
            "--plugin-config",
            agent.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the driver refused the plugin config"),
        "{err}"
    );
    assert!(err.contains("unsupported shell \"zsh\""), "{err}");
}

#[test]
fn run_without_the_grant_says_what_to_grant() {
    let dir = tempfile::tempdir().unwrap();
    let body = write(dir.path(), "task.hcl", "greeting = \"x\"\n");
    let out = with_hello("run", &[body.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the task could not be started"), "{err}");
    assert!(err.contains("not granted"), "{err}");
}

/// Starts `run` on `file`, waits for the task's first line of output,
/// sends SIGINT to `run` (what Ctrl-C does), and returns that line, how
/// `run` exited, what it printed on stderr and how long it took to exit.
fn interrupt(file: &Path, extra: &[&str]) -> (String, std::process::ExitStatus, String, Duration) {
    let guest = hello();
    let cache = cache_dir();
    let bash = bash();
    let mut args = vec![
        "run",
        guest.to_str().unwrap(),
        file.to_str().unwrap(),
        "--allow-exec",
        &bash,
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "the task did not start");

    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "run did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent.elapsed();
    let mut progress = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut progress).unwrap();
    (line, status, progress, took)
}

#[test]
fn ctrl_c_stops_the_task_and_run_exits() {
    let dir = tempfile::tempdir().unwrap();
    let body = write(
        dir.path(),
        "task.hcl",
        "greeting = \"waiting\"\nsleep = 60\n",
    );
    let (line, status, progress, took) = interrupt(&body, &["--kill-timeout", "3"]);
    assert_eq!(line, "waiting\n");
    assert!(
        progress.contains("==> stopping the task (kill timeout 3s;"),
        "{progress}"
    );
    // hello stops its task with the SDK's default SIGINT, which ends the
    // script: 128 + 2, as a shell reports it.
    assert_eq!(status.code(), Some(130), "{progress}");
    assert!(
        progress.contains("task was killed by signal 2"),
        "{progress}"
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
}

#[test]
fn the_job_files_resources_and_kill_settings_apply() {
    let dir = tempfile::tempdir().unwrap();
    let job = write(
        dir.path(),
        "job.nomad.hcl",
        r#"job "j" {
  group "g" {
    task "t" {
      driver       = "hello-world-example"
      kill_signal  = "SIGTERM"
      kill_timeout = "4s"
      resources {
        cpu    = 250
        memory = 64
      }
      config {
        greeting = "${NOMAD_MEMORY_LIMIT} ${NOMAD_CPU_LIMIT}"
        sleep    = 60
      }
    }
  }
}
"#,
    );
    let (line, status, progress, took) = interrupt(&job, &[]);
    assert_eq!(line, "64 250\n");
    assert!(
        progress.contains("==> stopping the task (kill timeout 4s;"),
        "{progress}"
    );
    // The job's kill_signal reaches the driver's stop: SIGTERM, 128 + 15.
    assert_eq!(status.code(), Some(143), "{progress}");
    assert!(
        progress.contains("task was killed by signal 15"),
        "{progress}"
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
}
