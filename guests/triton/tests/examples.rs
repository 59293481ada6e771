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

/// The lines after `marker` that are commented-out config (`# ` removed),
/// up to the first line that is not a comment.
fn commented_after(text: &str, marker: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.contains(marker))
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_environment_variant_in_the_comments_works_as_written() {
    // The grants file's commented env block, uncommented, in place of its
    // file-based triton secret.
    let (_, grants_text) = example("triton.wasm.grants.hcl");
    let env_lines: Vec<String> =
        commented_after(&grants_text, "in the agent's environment instead")
            .into_iter()
            .filter(|l| l.starts_with("env \"") || l.starts_with("secret \""))
            .collect();
    assert!(
        env_lines.iter().any(|l| l.starts_with("secret \"triton\"")),
        "{env_lines:?}"
    );
    let rest: Vec<&str> = grants_text
        .lines()
        .filter(|l| !l.starts_with("secret \"triton\""))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triton.wasm.grants.hcl");
    std::fs::write(
        &file,
        format!("{}\n{}\n", rest.join("\n"), env_lines.join("\n")),
    )
    .unwrap();
    let grants = Grants::default().with_file(&file).unwrap();
    assert!(grants.check_env("TRITON_URL").is_ok());
    assert!(grants.check_env("SDC_ACCOUNT").is_ok());
    assert!(grants.check_env("TRITON_KEY_MATERIAL").is_err());
    assert_eq!(
        grants.secret("triton").unwrap().key,
        nomad_wasm_host::grants::KeySource::Env("TRITON_KEY_MATERIAL".into())
    );

    // The agent config's commented plugin block: its args are the plugin's
    // flags, and with the agent's environment its empty config is complete.
    let (_, agent) = example("agent.hcl");
    let block = commented_after(&agent, "The same from the agent's environment");
    let args: Vec<String> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with('"'))
        .flat_map(|l| l.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .map(|s| s.trim_matches('"').to_owned())
        .collect();
    let o = nomad_wasm_host::cli::parse(args.clone()).unwrap();
    assert_eq!(o.allow_env, ["TRITON_*", "SDC_*"], "{args:?}");
    assert_eq!(o.secrets, ["triton=env:TRITON_KEY_MATERIAL"], "{args:?}");
    let mut h = Harness::load("triton").unwrap();
    for pattern in &o.allow_env {
        h.grant_env(pattern);
    }
    h.secret_env("triton", "TRITON_KEY_MATERIAL");
    h.set_env("TRITON_URL", "https://us-central-1.api.mnx.io");
    h.set_env("TRITON_ACCOUNT", "bruce_dev");
    assert!(block.iter().any(|l| l.trim() == "config {}"), "{block:?}");
    h.set_config("").unwrap();
    let conf: PluginConf = serde_json::from_slice(h.guest_config().unwrap()).unwrap();
    assert_eq!(conf.account.as_deref(), Some("bruce_dev"));
    assert_eq!(conf.key.as_deref(), Some("triton"));
}
