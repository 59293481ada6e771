//! `examples/triton/` as users copy it: each job file's `config { }` block
//! decodes against the BUILT guest's schema and plans requests, the agent
//! config's plugin `config { }` is accepted by the guest, and the grants
//! file parses and grants what that config names. Build the guest first:
//! `cargo build -p triton-guest --target wasm32-wasip2 --profile guest`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use nomad_driver_testkit::{Harness, Task};
use nomad_wasm_host::grants::Grants;
use triton::config::{Api, PluginConf, TaskConf};
use triton::plan;

fn example(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/triton")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// The body of the first block whose opening line is exactly `config {`.
fn config_body(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != "config {");
    assert!(lines.next().is_some(), "no config block");
    let mut depth = 1;
    let mut out = Vec::new();
    for l in lines {
        depth += l.matches('{').count();
        depth -= l.matches('}').count();
        if depth == 0 {
            return out.join("\n");
        }
        out.push(l);
    }
    panic!("unterminated config block")
}

fn job_config(h: &Harness, file: &str) -> TaskConf {
    let (_, text) = example(file);
    let bytes = h
        .decode_task_config(&Task::new("t").config(&config_body(&text)))
        .unwrap();
    TaskConf::decode(&bytes).unwrap()
}

#[test]
fn the_example_jobs_decode_and_plan() {
    let h = Harness::load("triton").unwrap();
    let c = job_config(&h, "example-cloudapi.nomad");
    let Api::Cloud(cloud) = c.api().unwrap() else {
        panic!("not cloud")
    };
    let r = plan::create_machine(
        "acct",
        &c,
        cloud,
        &plan::MachineSpec {
            name: "n",
            package: "p",
            image: "i",
            networks: &[],
            env: &[],
        },
    );
    let body = r.body.unwrap();
    assert_eq!(body["tag.triton.cns.services"], "web:80");
    assert!(
        body["metadata.user-script"]
            .as_str()
            .unwrap()
            .starts_with("#!/bin/sh\n")
    );

    let c = job_config(&h, "example-docker.nomad");
    let Api::Docker(d) = c.api().unwrap() else {
        panic!("not docker")
    };
    let body = plan::create_container("1.24", &c, d, "n", "sample-512M", &[])
        .unwrap()
        .body
        .unwrap();
    assert_eq!(body["Labels"]["triton.network.public"], "sdc_nat");
    assert_eq!(
        body["HostConfig"]["LogConfig"]["Config"]["syslog-address"],
        "tcp://10.45.136.2:514"
    );
}

#[test]
fn the_agent_config_and_grants_file_fit_together() {
    let mut h = Harness::load("triton").unwrap();
    let (_, agent) = example("agent.hcl");
    let body = config_body(&agent);
    h.set_config(&body).unwrap();
    let conf = PluginConf::decode(&h.decode_plugin_config(&body).unwrap()).unwrap();
    let (path, _) = example("triton.wasm.grants.hcl");
    let grants = Grants::new(Vec::<String>::new()).with_file(&path).unwrap();
    let origins: Vec<&str> = grants.http_origins().collect();
    // The host normalises origins with their port.
    let api = format!("{}:443", conf.cloudapi_url.as_deref().unwrap());
    assert!(origins.contains(&api.as_str()), "{origins:?}");
    assert!(
        origins.contains(&"https://us-central-1.docker.mnx.io:2376"),
        "{origins:?}"
    );
    grants.secret(conf.key.as_deref().unwrap()).unwrap();
    grants.secret("docker").unwrap();
}
