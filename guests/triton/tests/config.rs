//! The Triton guest's config surface and request plan. Job configs are
//! decoded the way Nomad would (the testkit's hcldec against the schema the
//! BUILT guest declares), then decoded into the guest's own types natively
//! and planned into exact requests. Build the guest first:
//! `cargo build -p triton-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use nomad_driver_testkit::{Harness, Task};
use serde_json::{Value, json};
use triton::config::{ExitStrategy, PluginConf, TaskConf};
use triton::plan::{self, MachinePhase, MachineSpec};

/// The docker job style, built from the seed's field examples as written
/// (HCL native syntax). The seed's `bob.bill.john = "label"` is not
/// valid HCL (an attribute name cannot contain dots) so it is quoted out.
const DOCKER_JOB: &str = r#"
api_type = "docker_api"
docker_api {
  cmd = ["date"]
  entrypoint = ["date"]
  openstdin = false
  stdinonce = false
  tty = false
  workingdir = "/foo/bar"
  hostname = "foo"
  dns = ["8.8.8.8", "8.8.4.4"]
  dns_search = ["foo.com", "rxcorp.com"]
  extra_hosts = ["foo:10.45.136.2", "bar:10.45.137.3"]
  user = "foo"
  domain_name = "foo.com"
  labels {
    group = "webservice-cache"
    test  = "test"
  }
  public_network = "sdc_nat"
  private_network = "sdc_nat"
  log_config {
    type = "syslog"
    config {
      syslog-address = "tcp://host:port"
    }
  }
  ports {
    tcp = [6379]
    udp = [6379]
    publish_all = true
  }
  image {
    name      = "redis"
    tag       = "latest"
    auto_pull = true
  }
  restart_policy = "always"
}
package {
  name = "sample-512M"
}
"#;

/// The cloud_api job style.
const CLOUD_JOB: &str = r##"
api_type = "cloud_api"
cloud_api {
  image {
    name        = "base-64-lts"
    most_recent = true
  }
  networks {
    name = "sdc_nat"
  }
  networks {
    uuid = "0f7e4b6c-5a2d-4c55-9a4e-2d9a1c0b8e11"
  }
  user_script  = "#!/bin/sh\necho hi"
  cloud_config = "#cloud-config\npackages: [nginx]"
  user_data    = "plain data"
}
tags {
  role = "web"
}
affinity = ["instance!=web*"]
deletion_protection = false
fwenabled = true
fwrules {
  web = "FROM any TO tag role=web ALLOW tcp PORT 80"
}
cns = ["web:80", "api"]
package {
  name    = "sample-512M"
  version = "1.0.0"
}
exit_strategy = "deleted"
"##;

fn text(e: nomad_driver_sdk::DriverError) -> String {
    use nomad_driver_sdk::DriverError as E;
    match e {
        E::InvalidConfig(m) => format!("invalid-config: {m}"),
        E::Temporary(m) => format!("temporary: {m}"),
        E::Fatal(m) => format!("fatal: {m}"),
        E::Unsupported(m) => format!("unsupported: {m}"),
    }
}

fn harness() -> Harness {
    Harness::load("triton").unwrap()
}

fn decode(h: &Harness, hcl: &str) -> Result<TaskConf, String> {
    let bytes = h
        .decode_task_config(&Task::new("redis").config(hcl))
        .map_err(|e| e.to_string())?;
    TaskConf::decode(&bytes).map_err(|e| format!("{e:?}"))
}

fn rejection(hcl: &str) -> String {
    let mut h = harness();
    h.set_config("").unwrap();
    match h.start_task(&Task::new("t").config(hcl)) {
        Err(e) => e
            .invalid_config()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("not invalid-config: {e}")),
        Ok(_) => panic!("accepted: {hcl}"),
    }
}

#[test]
fn docker_job_decodes_to_every_field() {
    let h = harness();
    let c = decode(&h, DOCKER_JOB).unwrap();
    assert_eq!(c.api_type, "docker_api");
    let d = c.docker_api.as_ref().unwrap();
    assert_eq!(d.cmd, ["date"]);
    assert_eq!(d.dns_search, ["foo.com", "rxcorp.com"]);
    assert_eq!(
        d.log_config.as_ref().unwrap().config["syslog-address"],
        "tcp://host:port"
    );
    assert_eq!(d.ports.as_ref().unwrap().tcp, [6379]);
    assert_eq!(d.image.auto_pull, Some(true));
    assert_eq!(c.package.name.as_deref(), Some("sample-512M"));
    assert_eq!(c.exit_strategy(), ExitStrategy::Stopped);
    assert!(
        c.tags.is_empty(),
        "missing tags are an empty map, not a crash"
    );
}

#[test]
fn docker_job_plans_the_exact_container_body() {
    let h = harness();
    let c = decode(&h, DOCKER_JOB).unwrap();
    let d = c.docker_api.as_ref().unwrap();
    let env = vec![("A".to_string(), "1".to_string())];
    let r =
        plan::create_container("1.24", &c, d, "job-grp-redis-0b6c7e2a", "pkg-uuid", &env).unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        "/v1.24/containers/create?name=job-grp-redis-0b6c7e2a"
    );
    assert_eq!(
        r.body.unwrap(),
        json!({
            "Image": "redis:latest",
            "Cmd": ["date"],
            "Entrypoint": ["date"],
            "OpenStdin": false,
            "StdinOnce": false,
            "Tty": false,
            "WorkingDir": "/foo/bar",
            "Hostname": "foo",
            "Domainname": "foo.com",
            "User": "foo",
            "Env": ["A=1"],
            "Labels": {
                "com.joyent.package": "pkg-uuid",
                "group": "webservice-cache",
                "test": "test",
                "triton.network.public": "sdc_nat"
            },
            "ExposedPorts": {"6379/tcp": {}, "6379/udp": {}},
            "HostConfig": {
                "Dns": ["8.8.8.8", "8.8.4.4"],
                "DnsSearch": ["foo.com", "rxcorp.com"],
                "ExtraHosts": ["foo:10.45.136.2", "bar:10.45.137.3"],
                "NetworkMode": "sdc_nat",
                "PortBindings": {
                    "6379/tcp": [{"HostPort": "6379"}],
                    "6379/udp": [{"HostPort": "6379"}]
                },
                "PublishAllPorts": true,
                "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
                "LogConfig": {"Type": "syslog", "Config": {"syslog-address": "tcp://host:port"}}
            }
        })
    );
    let pull = plan::pull_image("1.24", d);
    assert_eq!(pull.path, "/v1.24/images/create?fromImage=redis&tag=latest");
    assert!(pull.headers.is_empty());
    assert_eq!(
        plan::stop_container("1.24", "abc", 7).path,
        "/v1.24/containers/abc/stop?t=7"
    );
    // stop?t= answers when the container ended: the request outlasts t.
    assert_eq!(
        plan::stop_container("1.24", "abc", 7).timeout_ms,
        Some(67_000)
    );
    assert_eq!(
        plan::stop_container("1.24", "abc", 3_600).timeout_ms,
        Some(600_000)
    );
    assert_eq!(
        plan::kill_container("1.24", "abc", "SIGINT").timeout_ms,
        None
    );
    assert_eq!(
        [0, 1, 999, 1_000, 1_001, 2_500, u32::MAX].map(plan::stop_timeout_secs),
        [1, 1, 1, 1, 2, 3, 4_294_968]
    );
    assert_eq!(
        plan::kill_container("1.24", "abc", "SIGKILL").path,
        "/v1.24/containers/abc/kill?signal=SIGKILL"
    );
    assert_eq!(plan::delete_container("1.24", "abc").method, "DELETE");
    assert_eq!(
        plan::delete_container("1.24", "abc").path,
        "/v1.24/containers/abc?force=1"
    );
}

#[test]
fn registry_auth_becomes_x_registry_auth() {
    let h = harness();
    let hcl = DOCKER_JOB.replace(
        "restart_policy = \"always\"",
        "restart_policy = \"on-failure:3\"\n  auth {\n    username = \"u\"\n    password = \"p\"\n    server_address = \"r.example\"\n  }",
    );
    let c = decode(&h, &hcl).unwrap();
    let d = c.docker_api.as_ref().unwrap();
    let pull = plan::pull_image("1.24", d);
    assert_eq!(pull.headers.len(), 1);
    assert_eq!(pull.headers[0].0, "X-Registry-Auth");
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(&pull.headers[0].1)
        .unwrap();
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        v,
        json!({"username": "u", "password": "p", "serveraddress": "r.example"})
    );
    let body = plan::create_container("1.24", &c, d, "n", "p", &[])
        .unwrap()
        .body
        .unwrap();
    assert_eq!(
        body["HostConfig"]["RestartPolicy"],
        json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    assert!(body.get("Env").is_none());
}

#[test]
fn cloud_job_plans_lookups_and_the_exact_machine_body() {
    let h = harness();
    let c = decode(&h, CLOUD_JOB).unwrap();
    assert_eq!(c.exit_strategy(), ExitStrategy::Deleted);
    let cloud = c.cloud_api.as_ref().unwrap();
    assert_eq!(
        plan::package_lookup("acct", &c.package).path,
        "/acct/packages?name=sample-512M&version=1.0.0"
    );
    assert_eq!(
        plan::image_lookup("acct", &cloud.image).path,
        "/acct/images?name=base-64-lts"
    );
    let images = json!([
        {"id": "old", "name": "base-64-lts", "version": "20.4.0", "published_at": "2020-01-01T00:00:00Z"},
        {"id": "new", "name": "base-64-lts", "version": "22.4.0", "published_at": "2022-01-01T00:00:00Z"},
        {"id": "other", "name": "other", "version": "23.4.0", "published_at": "2023-01-01T00:00:00Z"}
    ]);
    assert_eq!(plan::pick_image(&cloud.image, &images).unwrap(), "new");
    let pkgs = json!([
        {"id": "p1", "name": "sample-512M", "version": "1.0.0"},
        {"id": "p2", "name": "sample-1G", "version": "1.0.0"}
    ]);
    assert_eq!(plan::pick_package(&c.package, &pkgs).unwrap(), "p1");
    let nets = json!([{"id": "n-nat", "name": "sdc_nat"}, {"id": "n-x", "name": "x"}]);
    let net_ids = plan::pick_networks(&cloud.networks, &nets).unwrap();
    assert_eq!(net_ids, ["n-nat", "0f7e4b6c-5a2d-4c55-9a4e-2d9a1c0b8e11"]);
    let env = vec![("PORT".to_string(), "80".to_string())];
    let spec = MachineSpec {
        name: "j-g-t-0b6c7e2a",
        package: "p1",
        image: "new",
        networks: &net_ids,
        env: &env,
    };
    let r = plan::create_machine("acct", &c, cloud, &spec);
    assert_eq!((r.method, r.path.as_str()), ("POST", "/acct/machines"));
    assert_eq!(
        r.body.unwrap(),
        json!({
            "name": "j-g-t-0b6c7e2a",
            "package": "p1",
            "image": "new",
            "networks": ["n-nat", "0f7e4b6c-5a2d-4c55-9a4e-2d9a1c0b8e11"],
            "affinity": ["instance!=web*"],
            "firewall_enabled": true,
            "deletion_protection": false,
            "tag.role": "web",
            "tag.triton.cns.services": "web:80,api",
            "metadata.env-vars": "{\"PORT\":\"80\"}",
            "metadata.user-data": "plain data",
            "metadata.user-script": "#!/bin/sh\necho hi",
            "metadata.cloud-init:user-data": "#cloud-config\npackages: [nginx]"
        })
    );
    let fw = plan::create_fwrule("acct", "web", &c.fwrules["web"]);
    assert_eq!(
        fw.body.unwrap(),
        json!({"enabled": true, "rule": "FROM any TO tag role=web ALLOW tcp PORT 80", "description": "Nomad FWRule for service: web"})
    );
}

#[test]
fn ambiguous_and_missing_lookups_are_named() {
    let h = harness();
    let c = decode(
        &h,
        &CLOUD_JOB.replace("most_recent = true", "most_recent = false"),
    )
    .unwrap();
    let cloud = c.cloud_api.as_ref().unwrap();
    let images = json!([
        {"id": "a", "name": "base-64-lts", "version": "1"},
        {"id": "b", "name": "base-64-lts", "version": "2"}
    ]);
    let e = text(plan::pick_image(&cloud.image, &images).unwrap_err());
    assert!(
        e.contains("2 images match name \"base-64-lts\" (versions 1, 2)"),
        "{e}"
    );
    let e = text(plan::pick_package(&c.package, &json!([])).unwrap_err());
    assert!(
        e.contains("package: no package matches name \"sample-512M\" version \"1.0.0\""),
        "{e}"
    );
    let e = text(plan::pick_networks(&cloud.networks, &json!([])).unwrap_err());
    assert!(
        e.contains("cloud_api.networks[0].name: no network named \"sdc_nat\""),
        "{e}"
    );
}

#[test]
fn minimal_configs_with_no_optional_maps_decode() {
    let h = harness();
    let c = decode(&h, "api_type = \"cloud_api\"\ncloud_api {\n image {\n uuid = \"i\"\n }\n}\npackage {\n uuid = \"p\"\n}").unwrap();
    assert!(c.tags.is_empty() && c.fwrules.is_empty() && c.cns.is_empty());
    let cloud = c.cloud_api.as_ref().unwrap();
    let r = plan::create_machine(
        "a",
        &c,
        cloud,
        &MachineSpec {
            name: "n",
            package: "p",
            image: "i",
            networks: &[],
            env: &[],
        },
    );
    assert_eq!(
        r.body.unwrap(),
        json!({"name": "n", "package": "p", "image": "i"})
    );
    assert_eq!(plan::image_lookup("a", &cloud.image).path, "/a/images/i");
    assert_eq!(plan::package_lookup("a", &c.package).path, "/a/packages/p");
    let c = decode(
        &h,
        "api_type = \"docker_api\"\ndocker_api {\n image {\n name = \"busybox\"\n }\n}\npackage {}",
    )
    .unwrap();
    let d = c.docker_api.as_ref().unwrap();
    let body = plan::create_container("1.24", &c, d, "n", "p", &[])
        .unwrap()
        .body
        .unwrap();
    assert_eq!(
        body,
        json!({"Image": "busybox:latest", "Labels": {"com.joyent.package": "p"}, "HostConfig": {}})
    );
    let body = plan::create_container("1.24", &c, d, "n", "", &[])
        .unwrap()
        .body
        .unwrap();
    assert_eq!(body["Labels"], json!({}), "no package: no package label");
}

#[test]
fn every_rejection_names_its_field() {
    let cases: &[(&str, &str)] = &[
        (
            "api_type = \"vm\"\npackage {}",
            "api_type: expected \"cloud_api\" or \"docker_api\", found \"vm\"",
        ),
        (
            "api_type = \"cloud_api\"\npackage {}",
            "cloud_api: api_type = \"cloud_api\" needs a cloud_api { } block",
        ),
        (
            "api_type = \"docker_api\"\npackage {}",
            "docker_api: api_type = \"docker_api\" needs a docker_api { } block",
        ),
        (
            "api_type = \"cloud_api\"\ncloud_api {\nimage {}\n}\npackage {}",
            "cloud_api.image: set name or uuid",
        ),
        (
            "api_type = \"cloud_api\"\ncloud_api {\nimage {\nname = \"i\"\n}\n}\npackage {}",
            "package: set name or uuid",
        ),
        (
            "api_type = \"cloud_api\"\ncloud_api {\nimage {\nname = \"i\"\n}\nnetworks {}\n}\npackage {\nname = \"p\"\n}",
            "cloud_api.networks[0]: set name or uuid",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\nrestart_policy = \"sometimes\"\n}\npackage {}",
            "docker_api.restart_policy: expected",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\nextra_hosts = [\"nohost\"]\n}\npackage {}",
            "docker_api.extra_hosts[0]: expected \"hostname:IP\"",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\nports {\ntcp = [0]\n}\n}\npackage {}",
            "docker_api.ports.tcp: ports are 1 to 65535",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\nports {\ntcp = [70000]\n}\n}\npackage {}",
            "ports.tcp[0]",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"\"\n}\n}\npackage {}",
            "docker_api.image.name: must not be empty",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\n}\ncloud_api {\nimage {\nname = \"i\"\n}\n}\npackage {}",
            "cloud_api: not used with api_type = \"docker_api\"",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\n}\npackage {}\nexit_strategy = \"gone\"",
            "exit_strategy: expected \"stopped\" or \"deleted\", found \"gone\"",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\n}\npackage {}\ntags {\ntriton_x = \"1\"\n}\naffinity = [\"db\"]",
            "affinity[0]: expected a rule",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\n}\npackage {}\ncns = [\"a,b\"]",
            "cns[0]: expected one service name",
        ),
        (
            "api_type = \"docker_api\"\ndocker_api {\nimage {\nname = \"b\"\n}\n}\npackage {}\nfwrules {\nweb = \" \"\n}",
            "fwrules.web: the rule text is empty",
        ),
    ];
    for (hcl, want) in cases {
        let got = rejection(hcl);
        assert!(
            got.contains(want),
            "config:\n{hcl}\nwanted {want:?}\ngot {got:?}"
        );
    }
}

#[test]
fn plugin_config_decodes_and_rejects() {
    let h = harness();
    let bytes = h
        .decode_plugin_config(
            "cloudapi_url = \"https://cloudapi.example/\"\naccount = \"acct\"\nkey = \"triton\"\ndocker_url = \"https://docker.example:2376\"\ndocker_cert = \"docker\"",
        )
        .unwrap();
    let c = PluginConf::decode(&bytes).unwrap();
    assert_eq!(c.cloudapi_url.as_deref(), Some("https://cloudapi.example"));
    assert_eq!(c.accept_version(), "~9||~8");
    assert_eq!(c.docker_version(), "1.24");
    for (hcl, want) in [
        (
            "cloudapi_url = \"ftp://x\"",
            "cloudapi_url: expected an http:// or https:// URL",
        ),
        (
            "cloudapi_url = \"https://x\"\nkey = \"k\"",
            "account: required with cloudapi_url",
        ),
        (
            "cloudapi_url = \"https://x\"\naccount = \"a\"",
            "key: required with cloudapi_url",
        ),
        ("account = \"my\"", "account: expected the account login"),
        (
            "docker_api_version = \"2.0\"",
            "docker_api_version: expected 1.20 to 1.24",
        ),
    ] {
        let mut h = harness();
        let e = h.set_config(hcl).unwrap_err();
        let text = e.invalid_config().unwrap_or_default().to_owned();
        assert!(text.contains(want), "{hcl}: {e}");
    }
}

#[test]
fn states_and_errors() {
    use ExitStrategy::*;
    assert_eq!(
        plan::machine_phase("provisioning", Stopped),
        MachinePhase::Pending
    );
    assert_eq!(
        plan::machine_phase("running", Stopped),
        MachinePhase::Running
    );
    assert_eq!(
        plan::machine_phase("stopped", Stopped),
        MachinePhase::Exited { code: 0, err: None }
    );
    assert_eq!(
        plan::machine_phase("stopped", Deleted),
        MachinePhase::Stopped
    );
    assert_eq!(
        plan::machine_phase("stopping", Deleted),
        MachinePhase::Stopping
    );
    assert_eq!(
        plan::machine_phase("deleted", Deleted),
        MachinePhase::Exited { code: 0, err: None }
    );
    assert!(matches!(
        plan::machine_phase("failed", Stopped),
        MachinePhase::Exited {
            code: 1,
            err: Some(_)
        }
    ));
    assert_eq!(
        plan::machine_phase("offline", Stopped),
        MachinePhase::Unknown
    );
    assert_eq!(
        plan::docker_instance_uuid(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
        .unwrap(),
        "01234567-89ab-cdef-0123-456789abcdef"
    );
    assert_eq!(plan::docker_instance_uuid("xyz"), None);
    assert_eq!(
        plan::container_phase(
            &json!({"State": {"Running": false, "Status": "exited", "ExitCode": 3, "Error": ""}})
        ),
        MachinePhase::Exited { code: 3, err: None }
    );
    assert_eq!(
        plan::container_phase(&json!({"State": {"Running": true}})),
        MachinePhase::Running
    );
    assert!(plan::retryable(420) && plan::retryable(503) && !plan::retryable(404));
    let m = plan::error_message(
        "CreateMachine",
        409,
        br#"{"code":"InvalidState","message":"not now"}"#,
    );
    assert_eq!(
        m,
        "CreateMachine: HTTP 409 InvalidState: not now (the instance is not in a state that allows this)"
    );
    assert_eq!(
        plan::machine_action("a", "m 1", "stop").path,
        "/a/machines/m%201?action=stop"
    );
    assert_eq!(
        plan::instance_name("job", "grp", "web", "0b6c7e2a-1f0e"),
        "job-grp-web-0b6c7e2a"
    );
}
