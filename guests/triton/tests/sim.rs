//! End to end: the REAL host binary (`nomad-driver-wasm run`, the same
//! driver code Nomad drives) runs the BUILT Triton guest against the Triton
//! simulator (`tests/triton-sim`), which verifies every CloudAPI request's
//! HTTP Signature the way CloudAPI does. The key is an Ed25519 key made by
//! `ssh-keygen` and held by the host (`--secret`).
//!
//! Needs: the guest (`cargo build -p triton-guest --target wasm32-wasip2
//! --profile guest`), the host binary (`cargo build -p nomad-wasm-host`),
//! `go` (builds the simulator) and `ssh-keygen`. This is not Nomad's
//! go-plugin client (the conformance harness is), and not a real Triton.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SimProcess, checked, ed25519_key, guest_wasm, repo, sim_binary, sim_request};
use serde_json::Value;

fn host_binary() -> PathBuf {
    let p = repo().join("target/debug/nomad-driver-wasm");
    assert!(
        p.exists(),
        "{} is missing: cargo build -p nomad-wasm-host",
        p.display()
    );
    p
}

fn guest() -> PathBuf {
    let p = guest_wasm();
    assert!(
        p.exists(),
        "{} is missing: cargo build -p triton-guest --target wasm32-wasip2 --profile guest",
        p.display()
    );
    p
}

struct Sim {
    /// Killed with the `Sim`.
    _process: SimProcess,
    url: String,
    dir: PathBuf,
}

impl Sim {
    /// A simulator knowing the public half of a fresh key in a fresh dir.
    fn start(name: &str) -> Sim {
        let dir = repo().join(format!("target/triton-sim-tests/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for k in ["key", "other"] {
            ed25519_key(&dir.join(k));
        }
        // Its own build of the simulator, so it never races the host
        // tests' build.
        let process = SimProcess::start(sim_binary("triton-tests"), "acct", &[dir.join("key.pub")]);
        let url = process.url.clone();
        std::fs::write(
            dir.join("plugin.hcl"),
            format!(
                "cloudapi_url = \"{url}\"\naccount = \"acct\"\nkey = \"triton\"\ndocker_url = \"{url}\"\n"
            ),
        )
        .unwrap();
        Sim {
            _process: process,
            url,
            dir,
        }
    }

    fn admin(&self, method: &str, path: &str, body: &str) -> Value {
        sim_request(&self.url, method, path, body)
    }

    fn requests(&self) -> Vec<Value> {
        match self.admin("GET", "/__sim/requests", "") {
            Value::Array(a) => a,
            other => panic!("request log: {other}"),
        }
    }

    fn machine(&self, name: &str) -> Option<Value> {
        self.admin("GET", "/__sim/state", "")["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .cloned()
    }

    /// `nomad-driver-wasm run` of a task config body, allowed to reach the
    /// simulator, its state under the simulator's dir; no plugin config and
    /// no secret.
    fn host_run(&self, config: &str) -> Command {
        let job = self.dir.join("task.hcl");
        std::fs::write(&job, config).unwrap();
        let mut c = Command::new(host_binary());
        c.arg("run")
            .arg(guest())
            .arg(&job)
            .args(["--allow-http", &self.url])
            .args(["--cache-dir", "", "--state-dir"])
            .arg(self.dir.join("state"));
        c
    }

    /// `nomad-driver-wasm run` of a task config body with the plugin config
    /// naming the simulator and the key `key`.
    fn run(&self, config: &str, key: &str) -> Command {
        let mut c = self.host_run(config);
        c.arg("--plugin-config")
            .arg(self.dir.join("plugin.hcl"))
            .arg("--secret")
            .arg(format!("triton={}", self.dir.join(key).display()));
        c
    }
}

const DOCKER: &str = r#"
api_type = "docker_api"
docker_api {
  cmd = ["sh", "-c", "exit 3"]
  image {
    name = "busybox"
  }
}
tags {
  role = "batch"
}
package {
  name = "g4-highcpu-512M"
}
"#;

const CLOUD: &str = r##"
api_type = "cloud_api"
cloud_api {
  image {
    name        = "base-64-lts"
    most_recent = true
  }
  networks {
    name = "My-Fabric-Network"
  }
  cloud_config = "#cloud-config"
}
tags {
  role = "web"
}
fwrules {
  web = "FROM any TO tag role=web ALLOW tcp PORT 80"
}
package {
  name = "g4-highcpu-512M"
}
exit_strategy = "deleted"
"##;

#[test]
fn docker_task_ends_with_the_containers_exit_code_and_cloudapi_calls_are_signed() {
    let sim = Sim::start("docker-exit");
    let out = sim.run(DOCKER, "key").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let log = sim.requests();
    let tags = log
        .iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/tags")))
        .unwrap_or_else(|| panic!("no tags request: {log:?}"));
    assert_eq!(tags["auth_ok"], true, "{tags}");
    assert_eq!(tags["algorithm"], "ed25519-sha512");
    assert!(tags["key_id"].as_str().unwrap().starts_with("/acct/keys/"));
    assert_eq!(tags["status"], 200);
    // The exit code came from inspecting, not from a call held open on /wait.
    assert!(
        log.iter()
            .all(|r| !r["path"].as_str().unwrap_or("").ends_with("/wait"))
    );
}

#[test]
fn cloud_task_provisions_then_a_failed_machine_is_a_non_zero_exit_and_destroy_cleans_up() {
    let sim = Sim::start("cloud-failed");
    let mut child = sim
        .run(CLOUD, "key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let machine = running_machine(&sim, &mut child);
    assert_eq!(machine["metadata"]["cloud-init:user-data"], "#cloud-config");
    assert_eq!(machine["tags"]["role"], "web");
    let state = sim.admin("GET", "/__sim/state", "");
    assert_eq!(
        state["fwrules"][0]["description"],
        "Nomad FWRule for service: web"
    );
    let id = machine["id"].as_str().unwrap();
    sim.admin(
        "POST",
        &format!("/__sim/machines/{id}/state"),
        r#"{"state":"failed"}"#,
    );
    let out = child_output(&mut child, Duration::from_secs(30));
    assert_eq!(out.0, Some(1), "{}", out.1);
    assert!(out.1.contains("the Triton instance failed"), "{}", out.1);
    // exit_strategy = "deleted": destroy deleted the machine (the
    // simulator takes its -delay to get there) and the rule.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.machine("local-local-task-").unwrap()["state"] != "deleted" {
        assert!(Instant::now() < deadline, "the machine was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = sim.admin("GET", "/__sim/state", "");
    assert_eq!(state["fwrules"], serde_json::json!([]));
    assert!(
        sim.requests()
            .iter()
            .filter(|r| r["api"] == "cloudapi" && r["path"] != "/--ping")
            .all(|r| r["auth_ok"] == true)
    );
}

#[test]
fn a_key_the_account_does_not_have_is_refused_clearly() {
    let sim = Sim::start("wrong-key");
    let out = sim.run(CLOUD, "other").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("looking up the package: HTTP 401 InvalidCredentials"),
        "{text}"
    );
    assert!(sim.machine("local-local-task-").is_none());
}

#[test]
fn the_agents_triton_environment_alone_configures_and_signs() {
    let sim = Sim::start("env-only");
    // No plugin config at all: URL and account from TRITON_*, the key's
    // PEM text in TRITON_KEY_MATERIAL, read by the host only. SDC_URL
    // points nowhere: TRITON_URL must win.
    let pem = std::fs::read_to_string(sim.dir.join("key")).unwrap();
    // TRITON_KEY_ID as operators have it: the key's MD5 fingerprint.
    let listed = checked(
        Command::new("ssh-keygen")
            .args(["-E", "md5", "-l", "-f"])
            .arg(sim.dir.join("key.pub")),
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let fp = listed
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .unwrap_or_else(|| panic!("ssh-keygen -l printed {listed:?}"))
        .to_owned();
    let mut cmd = sim.host_run(CLOUD);
    cmd.args(["--allow-env", "TRITON_*", "--allow-env", "SDC_*"])
        .args(["--secret", "triton=env:TRITON_KEY_MATERIAL"]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("TRITON_") || k.starts_with("SDC_") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.env("TRITON_URL", &sim.url)
        .env("SDC_URL", "http://127.0.0.1:9")
        .env("SDC_ACCOUNT", "acct")
        .env("TRITON_KEY_ID", format!("MD5:{fp}"))
        .env("TRITON_KEY_MATERIAL", &pem);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let machine = running_machine(&sim, &mut child);
    let id = machine["id"].as_str().unwrap();
    sim.admin(
        "POST",
        &format!("/__sim/machines/{id}/state"),
        r#"{"state":"failed"}"#,
    );
    let (code, text) = child_output(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the Triton instance failed"), "{text}");
    let signed: Vec<Value> = sim
        .requests()
        .into_iter()
        .filter(|r| r["api"] == "cloudapi" && r["path"] != "/--ping")
        .collect();
    assert!(!signed.is_empty());
    for r in &signed {
        assert_eq!(r["auth_ok"], true, "{r}");
        assert_eq!(r["algorithm"], "ed25519-sha512", "{r}");
        assert_eq!(r["key_id"], format!("/acct/keys/{fp}"), "{r}");
    }
    // The key never showed up in what the run printed.
    let body = pem.lines().nth(1).unwrap();
    assert!(
        !text.contains(body),
        "the key's text leaked into the output"
    );
}

/// The run's machine once the simulator has it running (30 s at most);
/// fails at once, with the run's output, if the run ends before.
fn running_machine(sim: &Sim, child: &mut Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(m) = sim.machine("local-local-task-")
            && m["state"] == "running"
        {
            return m;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let (_, text) = child_output(child, Duration::from_secs(1));
            panic!("the run ended ({status}) before the machine ran: {text}");
        }
        assert!(Instant::now() < deadline, "the machine never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the child's exit (killing it after `limit`), with its output.
fn child_output(child: &mut Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut text);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut text);
            }
            return (status.code(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stop_is_dockers_stop_with_the_kill_timeout_and_sdc_docker_kills_at_its_end() {
    let sim = Sim::start("docker-stop");
    let stubborn = DOCKER.replace("\"exit 3\"", "\"trap '' TERM; sleep 100\"");
    let mut child = sim
        .run(&stubborn, "key")
        .args(["--kill-timeout", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sim
        .requests()
        .iter()
        .any(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/start")))
    {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_at = Instant::now();
    checked(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let (code, text) = child_output(&mut child, Duration::from_secs(30));
    let took = stopped_at.elapsed();
    // The container ignores SIGTERM: sdc-docker SIGKILLs it when stop's
    // t runs out, and the host's poll right after sees 137.
    assert_eq!(code, Some(137), "{text}");
    let queries = |op: &str| -> Vec<String> {
        sim.requests()
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(op)))
            .map(|r| r["query"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(queries("/stop"), vec!["t=2".to_owned()], "{text}");
    assert!(
        queries("/kill").is_empty(),
        "the host escalated although sdc-docker's stop had ended the container: {:?}",
        queries("/kill")
    );
    assert!(
        (Duration::from_millis(1_800)..Duration::from_secs(6)).contains(&took),
        "the stop took {took:?}, not the 2 s kill timeout"
    );
}

#[test]
fn injected_503s_on_polls_are_waited_out_and_on_create_fail_the_start_clearly() {
    let sim = Sim::start("faults");
    sim.admin(
        "POST",
        "/__sim/faults",
        r#"{"errors":[{"method":"GET","path_prefix":"/v1.24/containers/","status":503,"count":2,"retry_after":1}]}"#,
    );
    let out = sim.run(DOCKER, "key").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{text}");
    let faulted = sim.requests().iter().filter(|r| r["status"] == 503).count();
    assert_eq!(faulted, 2);

    sim.admin(
        "POST",
        "/__sim/faults",
        r#"{"errors":[{"method":"POST","path_prefix":"/v1.24/containers/create","status":503,"count":1}]}"#,
    );
    let out = sim.run(DOCKER, "key").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("creating the container: HTTP 503"), "{text}");
}
