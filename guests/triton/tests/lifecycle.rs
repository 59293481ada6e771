//! The BUILT Triton guest's lifecycle in wasmtime (nomad-driver-testkit)
//! against scripted CloudAPI/sdc-docker answers: the exact requests it
//! sends (URL, signing, headers, body), what each poll reports, stop,
//! signal and destroy. Build the guest first:
//! `cargo build -p triton-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nomad_driver_testkit::{
    Error, ExitResult, Harness, HttpError, HttpReply, HttpRequest, NetworkOverride, Task, TaskPoll,
    TaskRunning,
};
use serde_json::{Value, json};

const API: &str = "https://cloudapi.test";
const DOCKER: &str = "https://docker.test:2376";
const NAME: &str = "job-group-web-5e7e57ed";
const MACHINE: &str = "7b3e1f2a-0000-4000-8000-00000000000a";
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const PLUGIN: &str = r#"
cloudapi_url = "https://cloudapi.test"
account = "acct"
user = "ops"
key = "triton"
docker_url = "https://docker.test:2376"
docker_cert = "sdc-docker"
"#;

const CLOUD_JOB: &str = r##"
api_type = "cloud_api"
cloud_api {
  image {
    name = "base-64-lts"
    version = "22.4.0"
  }
  networks {
    name = "sdc_nat"
  }
  cloud_config = "#cloud-config"
}
tags {
  role = "web"
}
fwrules {
  web = "FROM any TO all vms ALLOW tcp PORT 80"
}
package {
  name = "sample-512M"
}
exit_strategy = "deleted"
"##;

const DOCKER_JOB: &str = r#"
api_type = "docker_api"
docker_api {
  cmd = ["sh", "-c", "exit 3"]
  image {
    name = "busybox"
    auto_pull = true
  }
}
tags {
  role = "batch"
}
package {
  name = "sample-512M"
}
"#;

fn harness() -> Harness {
    let mut h = Harness::load("triton").unwrap();
    h.set_config(PLUGIN).unwrap();
    h
}

fn running(p: TaskPoll) -> Option<u32> {
    match p {
        TaskPoll::Running(r) => Some(r.delay_ms),
        TaskPoll::Exited(e) => panic!("exited: {e:?}"),
    }
}

/// A network override as (port map, address, auto-advertise).
type Net = (Vec<(String, i32)>, String, bool);

fn net(n: &NetworkOverride) -> Net {
    (n.port_map.clone(), n.addr.clone(), n.auto_advertise)
}

/// The network override a running poll carried (panics on an exit).
fn address(p: TaskPoll) -> Option<Net> {
    match p {
        TaskPoll::Running(TaskRunning {
            network_override, ..
        }) => network_override.as_ref().map(net),
        TaskPoll::Exited(e) => panic!("exited: {e:?}"),
    }
}

fn body(r: &HttpRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn lines(h: &Harness) -> Vec<String> {
    h.http_requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url))
        .collect()
}

fn script_cloud(h: &mut Harness) {
    h.http_reply(
        "GET",
        &format!("{API}/acct/packages"),
        HttpReply::json(r#"[{"id":"pkg-1","name":"sample-512M","version":"1.0.0"}]"#),
    );
    h.http_reply(
        "GET",
        &format!("{API}/acct/images"),
        HttpReply::json(r#"[{"id":"img-1","name":"base-64-lts","version":"22.4.0"}]"#),
    );
    h.http_reply(
        "GET",
        &format!("{API}/acct/networks"),
        HttpReply::json(r#"[{"id":"net-1","name":"sdc_nat"}]"#),
    );
    h.http_reply(
        "POST",
        &format!("{API}/acct/fwrules"),
        HttpReply::json(r#"{"id":"fw-1","enabled":true}"#),
    );
    h.http_reply(
        "POST",
        &format!("{API}/acct/machines"),
        HttpReply::status(201).body(format!(r#"{{"id":"{MACHINE}","state":"provisioning"}}"#)),
    );
}

fn machine_state(h: &mut Harness, state: &str) {
    h.http_reply(
        "GET",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::json(&format!(r#"{{"id":"{MACHINE}","state":"{state}"}}"#)),
    );
}

#[test]
fn cloud_start_sends_signed_lookups_then_creates_and_returns_at_once() {
    let mut h = harness();
    script_cloud(&mut h);
    let t = Task::new("web").config(CLOUD_JOB).env("PORT", "80");
    let started = h.start_task(&t).unwrap();
    assert_eq!(started.main_process(), None);
    assert_eq!(
        lines(&h),
        vec![
            format!("GET {API}/acct/packages?name=sample-512M"),
            format!("GET {API}/acct/images?name=base-64-lts&version=22.4.0"),
            format!("GET {API}/acct/networks"),
            format!("POST {API}/acct/fwrules"),
            format!("POST {API}/acct/machines"),
        ]
    );
    for r in h.http_requests() {
        let s = r.sign.as_ref().expect("every CloudAPI request is signed");
        assert_eq!(s.key, "triton");
        assert_eq!(s.account, "acct");
        assert_eq!(s.user.as_deref(), Some("ops"));
        assert_eq!(header(r, "accept-version"), Some("~9||~8"));
        assert!(header(r, "authorization").is_none() && header(r, "date").is_none());
        assert_eq!(r.client_cert, None);
    }
    let reqs = h.http_requests();
    assert_eq!(
        body(reqs[3]),
        json!({"enabled": true, "rule": "FROM any TO all vms ALLOW tcp PORT 80", "description": "Nomad FWRule for service: web"})
    );
    assert_eq!(header(reqs[4], "content-type"), Some("application/json"));
    assert_eq!(
        body(reqs[4]),
        json!({
            "name": NAME, "package": "pkg-1", "image": "img-1", "networks": ["net-1"],
            "tag.role": "web",
            "metadata.env-vars": "{\"PORT\":\"80\"}",
            "metadata.cloud-init:user-data": "#cloud-config"
        })
    );
    let st: Value = serde_json::from_slice(started.driver_state()).unwrap();
    assert_eq!(st["id"], MACHINE);
    assert_eq!(st["fwrules"], json!(["fw-1"]));
    assert_eq!(st["exit_strategy"], "deleted");
    let events = h.task_events();
    assert!(events[0].0.contains("provisioning"), "{events:?}");
}

#[test]
fn cloud_poll_follows_states_and_failed_is_non_zero() {
    let mut h = harness();
    script_cloud(&mut h);
    let started = h.start_task(&Task::new("web").config(CLOUD_JOB)).unwrap();
    machine_state(&mut h, "provisioning");
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(2_000));
    machine_state(&mut h, "running");
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(5_000));
    // On its way down (a stop was asked for): the end comes soon.
    machine_state(&mut h, "stopping");
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(2_000));
    // exit_strategy = "deleted": a stopped machine is not the end yet, and
    // may stay stopped for long.
    machine_state(&mut h, "stopped");
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(5_000));
    machine_state(&mut h, "failed");
    match h.poll_task(&started).unwrap() {
        TaskPoll::Exited(ExitResult {
            exit_code: 1,
            err: Some(e),
            ..
        }) => {
            assert!(e.contains("failed"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    h.http_reply(
        "GET",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::status(410).body(r#"{"code":"ResourceNotFound","message":"gone"}"#),
    );
    match h.poll_task(&started).unwrap() {
        TaskPoll::Exited(ExitResult {
            exit_code: 0,
            err: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn cloud_poll_reports_the_primary_ip_once_the_machine_runs() {
    let mut h = harness();
    script_cloud(&mut h);
    let started = h.start_task(&Task::new("web").config(CLOUD_JOB)).unwrap();
    // StartTask returns before the machine has an address.
    assert_eq!(started.network_override().map(net), None);
    let machine = |h: &mut Harness, body: &str| {
        h.http_reply(
            "GET",
            &format!("{API}/acct/machines/{MACHINE}"),
            HttpReply::json(body),
        )
    };
    machine(
        &mut h,
        &format!(r#"{{"id":"{MACHINE}","state":"provisioning","primaryIp":null,"ips":[]}}"#),
    );
    assert_eq!(address(h.poll_task(&started).unwrap()), None);
    machine(
        &mut h,
        &format!(
            r#"{{"id":"{MACHINE}","state":"running","primaryIp":"165.225.1.7","ips":["10.0.0.5","165.225.1.7"]}}"#
        ),
    );
    assert_eq!(
        address(h.poll_task(&started).unwrap()),
        Some((vec![], "165.225.1.7".to_owned(), true))
    );
    // Running without an address yet: nothing reported (the host keeps
    // what it had).
    machine(
        &mut h,
        &format!(r#"{{"id":"{MACHINE}","state":"running","primaryIp":""}}"#),
    );
    assert_eq!(address(h.poll_task(&started).unwrap()), None);
    // Each poll says what it saw as a task event (the host passes on only
    // changes): provisioning, then running with its address.
    let said: Vec<String> = h.task_events().into_iter().map(|(m, _)| m).collect();
    let name = format!("Triton machine {NAME}");
    assert!(
        said.contains(&format!("{name} is being provisioned")),
        "{said:?}"
    );
    assert!(
        said.contains(&format!("{name} is running at 165.225.1.7")),
        "{said:?}"
    );
    assert_eq!(said.last(), Some(&format!("{name} is running")));
}

#[test]
fn cloud_poll_backs_off_on_throttling_and_network_errors_are_temporary() {
    let mut h = harness();
    script_cloud(&mut h);
    let started = h.start_task(&Task::new("web").config(CLOUD_JOB)).unwrap();
    for status in [420, 429, 503] {
        h.http_reply(
            "GET",
            &format!("{API}/acct/machines/{MACHINE}"),
            HttpReply::status(status).body(r#"{"code":"RequestThrottled","message":"slow down"}"#),
        );
        assert_eq!(
            running(h.poll_task(&started).unwrap()),
            Some(15_000),
            "{status}"
        );
    }
    h.http_reply(
        "GET",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::status(503).header("Retry-After", "3"),
    );
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(3_000));
    h.http_reply(
        "GET",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::status(503).header("Retry-After", "3600"),
    );
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(60_000));
    h.http_reply(
        "GET",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::error(HttpError::Network("connection refused".into())),
    );
    match h.poll_task(&started) {
        Err(Error::Driver(nomad_driver_testkit::DriverError::Temporary(m))) => {
            assert!(m.contains("reading the machine: connection refused"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cloud_stop_and_destroy_follow_the_exit_strategy_and_are_idempotent() {
    let mut h = harness();
    script_cloud(&mut h);
    let started = h.start_task(&Task::new("web").config(CLOUD_JOB)).unwrap();
    h.clear_calls();
    h.http_reply(
        "DELETE",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::status(204),
    );
    h.http_reply(
        "DELETE",
        &format!("{API}/acct/fwrules/fw-1"),
        HttpReply::status(204),
    );
    h.stop_task(&started, "").unwrap();
    h.destroy_task(&started).unwrap();
    assert_eq!(
        lines(&h),
        vec![
            format!("DELETE {API}/acct/machines/{MACHINE}"),
            format!("DELETE {API}/acct/machines/{MACHINE}"),
            format!("DELETE {API}/acct/fwrules/fw-1"),
        ]
    );
    // Again, with everything already gone: still fine.
    h.http_reply(
        "DELETE",
        &format!("{API}/acct/machines/{MACHINE}"),
        HttpReply::status(404),
    );
    h.http_reply(
        "DELETE",
        &format!("{API}/acct/fwrules/fw-1"),
        HttpReply::status(404),
    );
    h.destroy_task(&started).unwrap();

    // exit_strategy = "stopped": stop is the stop action; destroy keeps the machine.
    let mut h = harness();
    script_cloud(&mut h);
    let job = CLOUD_JOB.replace("exit_strategy = \"deleted\"", "");
    let started = h.start_task(&Task::new("web").config(&job)).unwrap();
    h.clear_calls();
    h.http_reply(
        "POST",
        &format!("{API}/acct/machines/{MACHINE}?action=stop"),
        HttpReply::status(202),
    );
    h.http_reply(
        "DELETE",
        &format!("{API}/acct/fwrules/fw-1"),
        HttpReply::status(204),
    );
    h.stop_task(&started, "SIGINT").unwrap();
    machine_state(&mut h, "stopped");
    match h.poll_task(&started).unwrap() {
        TaskPoll::Exited(ExitResult {
            exit_code: 0,
            err: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    h.destroy_task(&started).unwrap();
    assert_eq!(
        lines(&h),
        vec![
            format!("POST {API}/acct/machines/{MACHINE}?action=stop"),
            format!("GET {API}/acct/machines/{MACHINE}"),
            format!("DELETE {API}/acct/fwrules/fw-1"),
        ]
    );
}

#[test]
fn cloud_errors_are_clear() {
    let mut h = harness();
    script_cloud(&mut h);
    h.http_reply(
        "GET",
        &format!("{API}/acct/packages"),
        HttpReply::status(401).body(r#"{"code":"InvalidCredentials","message":"Invalid key"}"#),
    );
    let e = h
        .start_task(&Task::new("web").config(CLOUD_JOB))
        .unwrap_err();
    match e {
        Error::Driver(nomad_driver_testkit::DriverError::Fatal(m)) => assert_eq!(
            m,
            "looking up the package: HTTP 401 InvalidCredentials: Invalid key (check account, key and keyId: the key must be on the account)"
        ),
        other => panic!("{other:?}"),
    }
    let mut h = harness();
    script_cloud(&mut h);
    h.deny_http(API);
    let e = h
        .start_task(&Task::new("web").config(CLOUD_JOB))
        .unwrap_err();
    assert!(format!("{e}").contains("not granted"), "{e}");
}

fn script_docker(h: &mut Harness) {
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/images/create"),
        HttpReply::json("{}"),
    );
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/create"),
        HttpReply::status(201).body(format!(r#"{{"Id":"{CONTAINER}"}}"#)),
    );
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/start"),
        HttpReply::status(204),
    );
    h.http_reply(
        "POST",
        &format!("{API}/acct/machines/01234567-89ab-cdef-0123-456789abcdef/tags"),
        HttpReply::json(r#"{"role":"batch"}"#),
    );
}

fn inspect(h: &mut Harness, state: &str) {
    h.http_reply(
        "GET",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/json"),
        HttpReply::json(&format!(r#"{{"Id":"{CONTAINER}","State":{state}}}"#)),
    );
}

#[test]
fn docker_start_pull_create_tag_start_then_poll_reports_the_exit_code() {
    let mut h = harness();
    script_docker(&mut h);
    let started = h.start_task(&Task::new("web").config(DOCKER_JOB)).unwrap();
    assert_eq!(
        lines(&h),
        vec![
            format!("POST {DOCKER}/v1.24/images/create?fromImage=busybox&tag=latest"),
            format!("POST {DOCKER}/v1.24/containers/create?name={NAME}"),
            format!("POST {API}/acct/machines/01234567-89ab-cdef-0123-456789abcdef/tags"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/start"),
        ]
    );
    let reqs = h.http_requests();
    for r in [reqs[0], reqs[1], reqs[3]] {
        assert_eq!(r.client_cert.as_deref(), Some("sdc-docker"));
        assert!(r.sign.is_none());
    }
    assert!(reqs[2].sign.is_some());
    assert_eq!(body(reqs[2]), json!({"role": "batch"}));
    assert_eq!(
        body(reqs[1]),
        json!({"Image": "busybox:latest", "Cmd": ["sh", "-c", "exit 3"],
               "Labels": {"com.joyent.package": "sample-512M"}, "HostConfig": {}})
    );
    inspect(
        &mut h,
        r#"{"Running":true,"Status":"running","ExitCode":0}"#,
    );
    assert_eq!(running(h.poll_task(&started).unwrap()), Some(5_000));
    inspect(
        &mut h,
        r#"{"Running":false,"Status":"exited","ExitCode":3,"Error":""}"#,
    );
    match h.poll_task(&started).unwrap() {
        TaskPoll::Exited(ExitResult {
            exit_code: 3,
            err: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn docker_poll_reports_the_container_ip_once_it_runs() {
    let mut h = harness();
    script_docker(&mut h);
    let started = h.start_task(&Task::new("web").config(DOCKER_JOB)).unwrap();
    assert_eq!(started.network_override().map(net), None);
    let inspect_with = |h: &mut Harness, state: &str, ip: &str| {
        h.http_reply(
            "GET",
            &format!("{DOCKER}/v1.24/containers/{CONTAINER}/json"),
            HttpReply::json(&format!(
                r#"{{"Id":"{CONTAINER}","State":{state},"NetworkSettings":{{"IPAddress":"{ip}"}}}}"#
            )),
        )
    };
    inspect_with(
        &mut h,
        r#"{"Running":false,"Status":"created","ExitCode":0}"#,
        "",
    );
    assert_eq!(address(h.poll_task(&started).unwrap()), None);
    inspect_with(
        &mut h,
        r#"{"Running":true,"Status":"running","ExitCode":0}"#,
        "192.168.128.12",
    );
    assert_eq!(
        address(h.poll_task(&started).unwrap()),
        Some((vec![], "192.168.128.12".to_owned(), true))
    );
    // No NetworkSettings at all: nothing reported, and no error.
    inspect(
        &mut h,
        r#"{"Running":true,"Status":"running","ExitCode":0}"#,
    );
    assert_eq!(address(h.poll_task(&started).unwrap()), None);
}

#[test]
fn docker_stop_signals_and_sigkill_escalates_destroy_keeps_or_deletes() {
    let mut h = harness();
    script_docker(&mut h);
    let started = h.start_task(&Task::new("web").config(DOCKER_JOB)).unwrap();
    h.clear_calls();
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/kill"),
        HttpReply::status(204),
    );
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/stop"),
        HttpReply::status(204),
    );
    // The default signal and SIGTERM are Docker's stop with the kill
    // timeout in whole seconds, rounded up, at least 1.
    h.stop_task_within(&started, "", Duration::from_millis(2_500))
        .unwrap();
    h.stop_task_within(&started, "SIGTERM", Duration::from_millis(300))
        .unwrap();
    h.stop_task_within(&started, "", Duration::ZERO).unwrap();
    h.stop_task(&started, "").unwrap();
    // Another signal is sent as it is; the host escalates after the timeout.
    h.stop_task_within(&started, "SIGINT", Duration::from_secs(30))
        .unwrap();
    h.signal_task(&started, "SIGKILL").unwrap();
    h.destroy_task(&started).unwrap();
    assert_eq!(
        lines(&h),
        vec![
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/stop?t=3"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/stop?t=1"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/stop?t=1"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/stop?t=5"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/kill?signal=SIGINT"),
            format!("POST {DOCKER}/v1.24/containers/{CONTAINER}/kill?signal=SIGKILL"),
        ]
    );
    // stop?t= answers when the container has ended: the request may take
    // t seconds and more.
    let reqs = h.http_requests();
    assert!(
        reqs[0].timeout_ms >= 3_000 + 30_000,
        "{}",
        reqs[0].timeout_ms
    );
    assert_eq!(reqs[0].client_cert.as_deref(), Some("sdc-docker"));
    // A container that already stopped (304) or is gone (404) is stopped.
    for status in [304, 404] {
        h.http_reply(
            "POST",
            &format!("{DOCKER}/v1.24/containers/{CONTAINER}/stop"),
            HttpReply::status(status),
        );
        h.stop_task(&started, "SIGTERM").unwrap();
    }
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/stop"),
        HttpReply::status(500).body(r#"{"message":"internal error"}"#),
    );
    let e = h.stop_task(&started, "").unwrap_err();
    assert!(format!("{e}").contains("stopping the instance"), "{e}");
    let mut h = harness();
    script_docker(&mut h);
    let job = DOCKER_JOB.replace("package {", "exit_strategy = \"deleted\"\npackage {");
    let started = h.start_task(&Task::new("web").config(&job)).unwrap();
    h.clear_calls();
    h.http_reply(
        "DELETE",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}"),
        HttpReply::status(404),
    );
    h.destroy_task(&started).unwrap();
    assert_eq!(
        lines(&h),
        vec![format!(
            "DELETE {DOCKER}/v1.24/containers/{CONTAINER}?force=1"
        )]
    );
}

#[test]
fn docker_stats_report_memory() {
    let mut h = harness();
    script_docker(&mut h);
    let started = h.start_task(&Task::new("web").config(DOCKER_JOB)).unwrap();
    h.http_reply(
        "GET",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/stats?stream=0"),
        HttpReply::json(
            r#"{"memory_stats":{"usage":67108864,"max_usage":70000000,"limit":536870912}}"#,
        ),
    );
    let u = h.task_stats(&started).unwrap().unwrap();
    assert_eq!(u.memory_usage_bytes, Some(67_108_864));
    assert_eq!(u.memory_max_usage_bytes, Some(70_000_000));
    // No cpu_stats in the sample: no CPU figures.
    assert_eq!(
        (u.cpu_percent, u.cpu_user_percent, u.cpu_system_percent),
        (None, None, None)
    );
    assert_eq!(u.cpu_total_ticks, None);
}

/// A stats sample in API 1.24's shape (no online_cpus: the CPUs are
/// percpu_usage's entries).
fn cpu_sample(cur: (u64, u64, u64, u64), pre: (u64, u64, u64, u64), cpus: usize) -> String {
    let stats = |(total, user, kernel, system): (u64, u64, u64, u64)| {
        json!({
            "cpu_usage": {
                "total_usage": total,
                "percpu_usage": vec![total / cpus as u64; cpus],
                "usage_in_usermode": user,
                "usage_in_kernelmode": kernel
            },
            "system_cpu_usage": system
        })
    };
    json!({
        "cpu_stats": stats(cur),
        "precpu_stats": stats(pre),
        "memory_stats": {"usage": 1, "max_usage": 2}
    })
    .to_string()
}

#[test]
fn docker_stats_cpu_is_dockers_formula_and_none_without_a_previous_reading() {
    let mut h = harness();
    script_docker(&mut h);
    let started = h.start_task(&Task::new("web").config(DOCKER_JOB)).unwrap();
    let stats = |h: &mut Harness, body: String| {
        h.http_reply(
            "GET",
            &format!("{DOCKER}/v1.24/containers/{CONTAINER}/stats?stream=0"),
            HttpReply::json(&body),
        );
        let u = h.task_stats(&started).unwrap().unwrap();
        (u.cpu_percent, u.cpu_user_percent, u.cpu_system_percent)
    };
    let close = |got: Option<f64>, want: f64| {
        let got = got.expect("a CPU figure");
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    };
    // 2 CPUs; the container used 0.5 s (0.4 user, 0.1 kernel) while the
    // host's CPUs used 4 s: 0.5 / 4 * 2 * 100 = 25 %.
    let (total, user, system) = stats(
        &mut h,
        cpu_sample(
            (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
            (1_000_000_000, 800_000_000, 200_000_000, 100_000_000_000),
            2,
        ),
    );
    close(total, 25.0);
    close(user, 20.0);
    close(system, 5.0);
    // online_cpus, where present, is the CPU count.
    let mut doc: Value = serde_json::from_str(&cpu_sample(
        (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
        (1_000_000_000, 800_000_000, 200_000_000, 100_000_000_000),
        2,
    ))
    .unwrap();
    doc["cpu_stats"]["online_cpus"] = json!(4);
    close(stats(&mut h, doc.to_string()).0, 50.0);
    // An idle container between two readings: 0 %, measured.
    let (total, ..) = stats(
        &mut h,
        cpu_sample(
            (1_000_000_000, 800_000_000, 200_000_000, 104_000_000_000),
            (1_000_000_000, 800_000_000, 200_000_000, 100_000_000_000),
            2,
        ),
    );
    close(total, 0.0);
    // No previous reading (Docker's first sample has zeros there), the same
    // system reading twice, or a counter going backwards: no CPU figures.
    for (cur, pre) in [
        (
            (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
            (0, 0, 0, 0),
        ),
        (
            (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
            (1_000_000_000, 800_000_000, 200_000_000, 104_000_000_000),
        ),
        (
            (1_500_000_000, 1_200_000_000, 300_000_000, 100_000_000_000),
            (1_000_000_000, 800_000_000, 200_000_000, 104_000_000_000),
        ),
    ] {
        assert_eq!(
            stats(&mut h, cpu_sample(cur, pre, 2)),
            (None, None, None),
            "{cur:?} {pre:?}"
        );
    }
    // No CPU count at all (neither online_cpus nor percpu_usage).
    let mut doc: Value = serde_json::from_str(&cpu_sample(
        (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
        (1_000_000_000, 800_000_000, 200_000_000, 100_000_000_000),
        2,
    ))
    .unwrap();
    doc["cpu_stats"]["cpu_usage"]
        .as_object_mut()
        .unwrap()
        .remove("percpu_usage");
    assert_eq!(stats(&mut h, doc.to_string()), (None, None, None));
    // A sample with total usage but no user/kernel split: total only.
    let mut doc: Value = serde_json::from_str(&cpu_sample(
        (1_500_000_000, 1_200_000_000, 300_000_000, 104_000_000_000),
        (1_000_000_000, 800_000_000, 200_000_000, 100_000_000_000),
        2,
    ))
    .unwrap();
    for k in ["cpu_stats", "precpu_stats"] {
        let u = doc[k]["cpu_usage"].as_object_mut().unwrap();
        u.remove("usage_in_usermode");
        u.remove("usage_in_kernelmode");
    }
    let (total, user, system) = stats(&mut h, doc.to_string());
    close(total, 25.0);
    assert_eq!((user, system), (None, None));
}

#[test]
fn cloud_machines_have_no_stats() {
    let mut h = harness();
    script_cloud(&mut h);
    let started = h.start_task(&Task::new("web").config(CLOUD_JOB)).unwrap();
    h.clear_calls();
    assert!(h.task_stats(&started).unwrap().is_none());
    assert!(h.http_requests().is_empty());
}

/// Regression (found by the conformance harness against the simulator): a
/// start that fails after creating something removes it again (Nomad's
/// protocol: clean up anything partially created), and reports its own
/// error, still temporary for a 503.
#[test]
fn a_failed_start_removes_what_it_created() {
    // Cloud: the firewall rule is created, then CreateMachine answers 503.
    let mut h = harness();
    script_cloud(&mut h);
    h.http_reply(
        "POST",
        &format!("{API}/acct/machines"),
        HttpReply::status(503).body(r#"{"code":"ServiceUnavailable","message":"no capacity"}"#),
    );
    let e = h
        .start_task(&Task::new("web").config(CLOUD_JOB))
        .unwrap_err();
    match e {
        Error::Driver(nomad_driver_testkit::DriverError::Temporary(m)) => {
            assert!(m.starts_with("creating the machine: HTTP 503"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let l = lines(&h);
    assert_eq!(l[l.len() - 2], format!("POST {API}/acct/machines"));
    assert_eq!(l[l.len() - 1], format!("DELETE {API}/acct/fwrules/fw-1"));
    assert!(h.http_requests().last().unwrap().sign.is_some());

    // Docker: the container is created, then its start fails.
    let mut h = harness();
    script_docker(&mut h);
    h.http_reply(
        "POST",
        &format!("{DOCKER}/v1.24/containers/{CONTAINER}/start"),
        HttpReply::status(503).body(r#"{"message":"no capacity"}"#),
    );
    let e = h
        .start_task(&Task::new("web").config(DOCKER_JOB))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Driver(nomad_driver_testkit::DriverError::Temporary(m)) if m.starts_with("starting the container: HTTP 503")),
        "{e:?}"
    );
    assert_eq!(
        lines(&h).last().unwrap(),
        &format!("DELETE {DOCKER}/v1.24/containers/{CONTAINER}?force=1")
    );
}
