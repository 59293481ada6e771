//! Native unit tests of the plan: every config field to the exact rkt
//! command lines, hostile values, port direction, and every rejection.

#![allow(clippy::unwrap_used)]

use nomad_driver_sdk::bindings::nomad::driver::types::{Mount, PortMapping, Resources};
use nomad_driver_sdk::{DriverError, TaskConfig};
use serde_json::json;

use crate::plan::{self, Plan, PluginConfig, TaskConf};

const ALLOC: &str = "5e1b7a4c-2d3f-4a5b-8c9d-0e1f2a3b4c5d";

fn task(env: &[(&str, &str)]) -> TaskConfig {
    TaskConfig {
        id: format!("{ALLOC}/etcd_main/0a1b2c3d"),
        name: "etcd_main".into(),
        alloc_id: ALLOC.into(),
        task_group: "g".into(),
        job_name: "j".into(),
        job_id: "j".into(),
        namespace: "default".into(),
        node_name: "n".into(),
        node_id: "id".into(),
        driver_config: vec![],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        user: String::new(),
        alloc_dir: format!("/var/nomad/alloc/{ALLOC}"),
        stdout_path: String::new(),
        stderr_path: String::new(),
        resources: Resources {
            cpu_shares: 500,
            memory_mb: 256,
            memory_max_mb: 0,
            memory_limit_bytes: 256 << 20,
            cpuset_cpus: String::new(),
            ports: vec![],
        },
        mounts: vec![],
        network_namespace: None,
    }
}

fn conf(v: serde_json::Value) -> Result<TaskConf, DriverError> {
    plan::decode_task(&rmp_serde::to_vec_named(&v).unwrap())
}

fn plan_with(v: serde_json::Value, t: &TaskConfig, p: &PluginConfig) -> Result<Plan, DriverError> {
    plan::plan(&conf(v)?, t, p)
}

fn plan_of(v: serde_json::Value, t: &TaskConfig) -> Result<Plan, DriverError> {
    plan_with(v, t, &PluginConfig::default())
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn invalid_msg(r: Result<Plan, DriverError>) -> String {
    match r {
        Err(DriverError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn volumes(prefix: &str) -> Vec<String> {
    let d = format!("/var/nomad/alloc/{ALLOC}");
    let v = format!("{ALLOC}-etcd-main");
    let _ = prefix;
    argv(&[
        &format!("--volume={v}-alloc,kind=host,source={d}/alloc"),
        &format!("--mount=volume={v}-alloc,target=/alloc"),
        &format!("--volume={v}-local,kind=host,source={d}/etcd_main/local"),
        &format!("--mount=volume={v}-local,target=/local"),
        &format!("--volume={v}-secrets,kind=host,source={d}/etcd_main/secrets"),
        &format!("--mount=volume={v}-secrets,target=/secrets"),
    ])
}

#[test]
fn seed_example_gives_the_exact_sequence() {
    // The seed's example: image, args, trust_prefix, dns.
    let p = plan_of(
        json!({
            "image": "coreos.com/etcd:v2.0.4",
            "command": "/etcd",
            "args": ["--version"],
            "trust_prefix": "coreos.com/etcd",
            "dns_servers": ["8.8.8.8", "8.8.4.4"],
            "dns_search_domains": ["example.com"],
        }),
        &task(&[("NOMAD_TASK_DIR", "/local")]),
    )
    .unwrap();
    assert_eq!(
        p.trust,
        Some(argv(&[
            "trust",
            "--skip-fingerprint-review=true",
            "--prefix=coreos.com/etcd",
            "--debug=false"
        ]))
    );
    let mut prepare = argv(&["--debug=false", "prepare"]);
    prepare.extend(volumes(""));
    prepare.extend(argv(&[
        "--set-env=NOMAD_TASK_DIR=/local",
        "coreos.com/etcd:v2.0.4",
        "--exec=/etcd",
        "--memory=268435456",
        "--cpu=500",
        "--",
        "--version",
    ]));
    assert_eq!(p.prepare, prepare);
    assert_eq!(
        p.run_prepared_for("8f2b-uuid"),
        argv(&[
            "--debug=false",
            "run-prepared",
            "--dns=8.8.8.8",
            "--dns=8.8.4.4",
            "--dns-search=example.com",
            "8f2b-uuid"
        ])
    );
}

#[test]
fn no_trust_prefix_means_insecure_all_unless_options_are_given() {
    let p = plan_of(json!({"image": "docker://redis"}), &task(&[])).unwrap();
    assert_eq!(p.trust, None);
    assert_eq!(
        p.prepare[..3],
        argv(&["--insecure-options=all", "--debug=false", "prepare"])[..]
    );
    assert_eq!(
        p.run_prepared[..3],
        argv(&["--insecure-options=all", "--debug=false", "run-prepared"])[..]
    );
    let p = plan_of(
        json!({"image": "docker://redis", "insecure_options": ["image", "tls"], "debug": true}),
        &task(&[]),
    )
    .unwrap();
    assert_eq!(
        p.prepare[..3],
        argv(&["--insecure-options=image,tls", "--debug=true", "prepare"])[..]
    );
}

#[test]
fn later_fields_volumes_net_group_overlay_user_and_mounts() {
    let mut t = task(&[]);
    t.user = "nobody".into();
    t.mounts = vec![Mount {
        task_path: "/data".into(),
        host_path: "/srv/vol1".into(),
        readonly: true,
        propagation_mode: String::new(),
    }];
    let p = plan_of(
        json!({
            "image": "example.com/app:1",
            "no_overlay": true,
            "volumes": ["/etc/ssl:/etc/ssl:readOnly", "/srv/cache:/cache"],
            "net": ["default", "backend"],
            "group": "staff",
        }),
        &t,
    )
    .unwrap();
    let v = format!("{ALLOC}-etcd-main");
    let mut prepare = argv(&[
        "--insecure-options=all",
        "--debug=false",
        "prepare",
        "--no-overlay=true",
    ]);
    prepare.extend(volumes(""));
    prepare.extend(argv(&[
        &format!("--volume={v}-0,kind=host,source=/etc/ssl,readOnly=true"),
        &format!("--mount=volume={v}-0,target=/etc/ssl"),
        &format!("--volume={v}-1,kind=host,source=/srv/cache,readOnly=false"),
        &format!("--mount=volume={v}-1,target=/cache"),
        &format!("--volume={v}-taskmounts-0,kind=host,source=/srv/vol1,readOnly=true"),
        &format!("--mount=volume={v}-taskmounts-0,target=/data"),
        "example.com/app:1",
        "--memory=268435456",
        "--cpu=500",
        "--user=nobody",
        "--group=staff",
    ]));
    assert_eq!(p.prepare, prepare);
    assert_eq!(
        p.run_prepared,
        argv(&[
            "--insecure-options=all",
            "--debug=false",
            "run-prepared",
            "--net=default,backend"
        ])
    );
}

#[test]
fn ports_map_manifest_port_name_to_nomads_host_port() {
    let mut t = task(&[]);
    t.resources.ports = vec![PortMapping {
        label: "client".into(),
        value: 23456,
        to: 0,
        host_ip: String::new(),
    }];
    let p = plan_of(
        json!({"image": "i", "port_map": {"client": "2379-tcp"}}),
        &t,
    )
    .unwrap();
    assert!(
        p.prepare.contains(&"--port=2379-tcp:23456".to_string()),
        "{:?}",
        p.prepare
    );
    // Block form.
    let p = plan_of(
        json!({"image": "i", "port_map": [{"client": "2379-tcp"}]}),
        &t,
    )
    .unwrap();
    assert!(p.prepare.contains(&"--port=2379-tcp:23456".to_string()));
    // Host networking: no port flags.
    let p = plan_of(
        json!({"image": "i", "net": ["host"], "port_map": {"client": "x"}}),
        &t,
    )
    .unwrap();
    assert!(!p.prepare.iter().any(|a| a.starts_with("--port")));
}

#[test]
fn dns_host_or_none_alone_pass_through() {
    for special in ["host", "none"] {
        let p = plan_of(json!({"image": "i", "dns_servers": [special]}), &task(&[])).unwrap();
        assert!(p.run_prepared.contains(&format!("--dns={special}")));
    }
}

#[test]
fn hostile_values_are_single_argv_elements() {
    let hostile = [
        ("SPACES", "a b  c"),
        ("QUOTES", r#"it's "quoted""#),
        ("SUBST", "$(rm -rf /) `id`"),
        ("NEWLINE", "line1\nline2"),
    ];
    let p = plan_of(
        json!({"image": "i", "command": "/bin/sh", "args": ["-c", "echo \"$1\"; $(id)", "x\ny"]}),
        &task(&hostile),
    )
    .unwrap();
    for (k, v) in hostile {
        assert!(p.prepare.contains(&format!("--set-env={k}={v}")), "{k}");
    }
    assert_eq!(
        p.prepare[p.prepare.len() - 4..],
        argv(&["--", "-c", "echo \"$1\"; $(id)", "x\ny"])[..]
    );
}

#[test]
fn rejections_name_the_field() {
    let mut with_port = task(&[]);
    with_port.resources.ports = vec![PortMapping {
        label: "http".into(),
        value: 1,
        to: 0,
        host_ip: String::new(),
    }];
    let plain = task(&[]);
    let cases: Vec<(serde_json::Value, &TaskConfig, &str)> = vec![
        (json!({"image": ""}), &plain, "\"image\""),
        (
            json!({"image": "i", "insecure_options": ["everything"]}),
            &plain,
            "\"insecure_options[0]\"",
        ),
        (
            json!({"image": "i", "dns_servers": ["8.8.8.8", "host"]}),
            &plain,
            "\"dns_servers[1]\"",
        ),
        (
            json!({"image": "i", "dns_servers": ["not-an-ip"]}),
            &plain,
            "\"dns_servers[0]\"",
        ),
        (
            json!({"image": "i", "dns_search_domains": ["a b"]}),
            &plain,
            "\"dns_search_domains[0]\"",
        ),
        (
            json!({"image": "i", "volumes": ["/only"]}),
            &plain,
            "\"volumes[0]\"",
        ),
        (
            json!({"image": "i", "volumes": ["/a:/b:rw"]}),
            &plain,
            "\"volumes[0]\"",
        ),
        (
            json!({"image": "i", "volumes": ["rel:/b"]}),
            &plain,
            "\"volumes[0]\"",
        ),
        (
            json!({"image": "i", "volumes": ["/a,b:/b"]}),
            &plain,
            "\"volumes[0]\"",
        ),
        (
            json!({"image": "i", "port_map": {"http": "80-tcp"}}),
            &plain,
            "\"port_map\"",
        ),
        (json!({"image": "i"}), &with_port, "\"port_map\""),
        (
            json!({"image": "i", "port_map": {"http": "a", "other": "b"}}),
            &with_port,
            "\"port_map.other\"",
        ),
        (
            json!({"image": "i", "port_map": {"http": "a:b"}}),
            &with_port,
            "\"port_map.http\"",
        ),
        (
            json!({"image": "i", "port_map": 5}),
            &with_port,
            "\"port_map\"",
        ),
    ];
    for (v, t, field) in cases {
        let m = invalid_msg(plan_of(v.clone(), t));
        assert!(m.contains(field), "{v}: {m:?} does not name {field}");
    }
    let m = invalid_msg(plan_with(
        json!({"image": "i", "volumes": ["/a:/b"]}),
        &task(&[]),
        &PluginConfig {
            volumes_enabled: false,
        },
    ));
    assert!(
        m.contains("\"volumes\"") && m.contains("volumes_enabled"),
        "{m}"
    );
}

#[test]
fn parses_rkt_outputs() {
    assert_eq!(
        plan::parse_uuid(
            "image: using image from local store\n7d2e6f0c-7d9b-4bfa-8f3d-1a2b3c4d5e6f\n"
        )
        .unwrap(),
        "7d2e6f0c-7d9b-4bfa-8f3d-1a2b3c4d5e6f"
    );
    assert!(plan::parse_uuid("").is_err());
    assert!(plan::parse_uuid("error: no such image\n").is_err());

    let out =
        "rkt Version: 1.30.0\nappc Version: 0.8.11\nGo Version: go1.8.3\nGo OS/Arch: linux/amd64\n";
    assert_eq!(
        plan::parse_versions(out),
        Some(("1.30.0".into(), "0.8.11".into()))
    );
    assert_eq!(
        plan::parse_versions("rkt version 1.27.0\nappc version 0.8.10"),
        Some(("1.27.0".into(), "0.8.10".into()))
    );
    assert_eq!(plan::parse_versions("rkt Version: 1.30.0\n"), None);
    assert_eq!(plan::semver("1.30.0"), Some((1, 30, 0)));
    assert_eq!(plan::semver("1.27.0-rc1"), Some((1, 27, 0)));
    assert!(plan::semver("1.26.9").unwrap() < plan::MIN_VERSION);
    assert!(plan::semver("1.27.0").unwrap() >= plan::MIN_VERSION);
    assert_eq!(plan::semver("x"), None);

    assert_eq!(
        plan::enter_args("u-1", &argv(&["sh", "-c", "echo hi"])),
        argv(&["enter", "u-1", "sh", "-c", "echo hi"])
    );
    assert_eq!(
        plan::display_args(&argv(&["prepare", "--set-env=TOKEN=s3cret", "img"])),
        "rkt prepare --set-env=TOKEN=… img"
    );
}

#[test]
fn plugin_config_defaults_to_volumes_enabled() {
    assert!(plan::decode_plugin(&[]).unwrap().volumes_enabled);
    let off = rmp_serde::to_vec_named(&json!({"volumes_enabled": false})).unwrap();
    assert!(!plan::decode_plugin(&off).unwrap().volumes_enabled);
}
