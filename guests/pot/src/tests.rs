//! Native unit tests of the plan: every config field to the exact pot
//! command sequence, hostile values, port direction, and every rejection.

#![allow(clippy::unwrap_used)]

use nomad_driver_sdk::bindings::nomad::driver::types::{PortMapping, Resources};
use nomad_driver_sdk::{DriverError, TaskConfig};
use serde_json::json;

use crate::plan::{self, Plan, TaskConf};

const ALLOC: &str = "0b6c7e2a-1f0e-4e3c-9a53-5a3c1d1e2f70";

fn task(env: &[(&str, &str)]) -> TaskConfig {
    TaskConfig {
        id: format!("{ALLOC}/www1/3f9c2d1a"),
        name: "www1".into(),
        alloc_id: ALLOC.into(),
        task_group: "group1".into(),
        job_name: "example".into(),
        job_id: "example".into(),
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
            cpu_shares: 200,
            memory_mb: 64,
            memory_max_mb: 0,
            memory_limit_bytes: 64 << 20,
            cpuset_cpus: String::new(),
            ports: vec![PortMapping {
                label: "http".into(),
                value: 28443,
                to: 0,
                host_ip: "10.0.0.5".into(),
            }],
        },
        mounts: vec![],
        network_namespace: None,
    }
}

/// Encodes a JSON object as msgpack (what cty sends for these types) and
/// decodes it as the driver does.
fn conf(v: serde_json::Value) -> Result<TaskConf, DriverError> {
    plan::decode_task(&rmp_serde::to_vec_named(&v).unwrap())
}

fn plan_of(v: serde_json::Value, t: &TaskConfig) -> Result<Plan, DriverError> {
    plan::plan(&conf(v)?, t)
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

const NAME: &str = "www1_3f9c2d1a_0b6c7e2a-1f0e-4e3c-9a53-5a3c1d1e2f70";

#[test]
fn seed_example_gives_the_exact_sequence() {
    let t = task(&[("NOMAD_TASK_DIR", "/local"), ("NOMAD_PORT_http", "80")]);
    let p = plan_of(
        json!({
            "image": "https://potluck.honeyguide.net/nginx-nomad",
            "pot": "nginx-nomad-amd64-13_1",
            "tag": "1.1.13",
            "command": "nginx",
            "args": ["-g", "'daemon off;'"],
            "copy": ["/mnt/s3/web/nginx.conf:/usr/local/etc/nginx/nginx.conf"],
            "mount": ["/mnt/s3/web/www:/mnt"],
            "port_map": {"http": "80"},
        }),
        &t,
    )
    .unwrap();
    assert_eq!(p.pot_name, NAME);
    let dir = format!("/var/nomad/alloc/{ALLOC}/www1");
    let expected: Vec<Vec<String>> = vec![
        argv(&[
            "prepare",
            "-U",
            "https://potluck.honeyguide.net/nginx-nomad",
            "-p",
            "nginx-nomad-amd64-13_1",
            "-t",
            "1.1.13",
            "-c",
            "\"nginx -g 'daemon off;'\"",
            "-N",
            "public-bridge",
            "-i",
            "auto",
            "-e",
            "80:28443",
            "-a",
            &format!("3f9c2d1a_{ALLOC}"),
            "-n",
            "www1",
            "-v",
        ]),
        argv(&[
            "copy-in",
            "-p",
            NAME,
            "-s",
            "/mnt/s3/web/nginx.conf",
            "-d",
            "/usr/local/etc/nginx/nginx.conf",
        ]),
        argv(&[
            "mount-in",
            "-p",
            NAME,
            "-d",
            &format!("{dir}/local"),
            "-m",
            "/local",
        ]),
        argv(&[
            "mount-in",
            "-p",
            NAME,
            "-d",
            &format!("{dir}/secrets"),
            "-m",
            "/secrets",
        ]),
        argv(&[
            "mount-in",
            "-p",
            NAME,
            "-d",
            "/mnt/s3/web/www",
            "-m",
            "/mnt",
        ]),
        argv(&[
            "set-env",
            "-p",
            NAME,
            "-E",
            "NOMAD_PORT_http=80",
            "-E",
            "NOMAD_TASK_DIR=/local",
        ]),
        argv(&["set-rss", "-M", "64M", "-p", NAME]),
    ];
    assert_eq!(p.setup, expected);
    assert_eq!(p.start, argv(&["start", NAME]));
    assert!(p.warnings.is_empty());
}

#[test]
fn every_optional_field_in_order() {
    let t = task(&[]);
    let p = plan_of(
        json!({
            "image": "file:///images", "pot": "base", "tag": "2.0",
            "network_mode": "public-bridge",
            "attributes": ["devfs_ruleset:3", "no-tmpfs:YES"],
            "mount_read_only": ["/etc/ssl:/etc/ssl"],
            "mount": ["/data:/data"],
            "extra_hosts": ["db:10.0.0.9", "v6:fe80::1"],
        }),
        &t,
    )
    .unwrap();
    let cmds: Vec<String> = p.setup.iter().map(|a| a.join(" ")).collect();
    let tag = format!("3f9c2d1a_{ALLOC}");
    assert_eq!(
        cmds,
        vec![
            format!(
                "prepare -U file:///images -p base -t 2.0 -N public-bridge -a {tag} -n www1 -v"
            ),
            format!("set-attribute -p {NAME} -A devfs_ruleset -V 3"),
            format!("set-attribute -p {NAME} -A no-tmpfs -V YES"),
            format!("mount-in -p {NAME} -d /var/nomad/alloc/{ALLOC}/www1/local -m /local"),
            format!("mount-in -p {NAME} -d /var/nomad/alloc/{ALLOC}/www1/secrets -m /secrets"),
            format!("mount-in -p {NAME} -d /data -m /data"),
            format!("mount-in -p {NAME} -d /etc/ssl -m /etc/ssl -r"),
            format!("set-hosts -p {NAME} -H db:10.0.0.9 -H v6:fe80::1"),
            format!("set-rss -M 64M -p {NAME}"),
        ]
    );
}

#[test]
fn ports_map_pot_port_to_nomads_host_port() {
    // pot export-ports: -e <pot port>:<host port>. Nomad allocated 28443 for
    // "http"; the jail listens on 443 (bsdpot/nomad-pot-driver#48).
    let t = task(&[]);
    let p = plan_of(
        json!({"image": "i", "pot": "p", "tag": "t", "port_map": {"http": "443"}}),
        &t,
    )
    .unwrap();
    let prepare = &p.setup[0];
    let e = prepare.iter().position(|a| a == "-e").unwrap();
    assert_eq!(prepare[e + 1], "443:28443");
    // Block form (a list of maps) and numbers are accepted too; the port
    // comes from NOMAD_HOST_PORT_<label> when the mapping list lacks it.
    let mut t2 = task(&[("NOMAD_HOST_PORT_admin", "23456")]);
    t2.resources.ports.clear();
    let p = plan_of(
        json!({"image": "i", "pot": "p", "tag": "t", "port_map": [{"admin": 8080}]}),
        &t2,
    )
    .unwrap();
    assert!(p.setup[0].windows(2).any(|w| w == ["-e", "8080:23456"]));
}

#[test]
fn host_network_skips_port_exports_and_says_so() {
    let p = plan_of(
        json!({"image": "i", "pot": "p", "tag": "t", "network_mode": "host", "port_map": {"http": "80"}}),
        &task(&[]),
    )
    .unwrap();
    assert!(p.setup[0].windows(2).any(|w| w == ["-N", "host"]));
    assert!(!p.setup[0].contains(&"-e".to_string()));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
}

#[test]
fn no_network_mode_and_no_ports_leaves_the_image_default() {
    let p = plan_of(json!({"image": "i", "pot": "p", "tag": "t"}), &task(&[])).unwrap();
    assert!(!p.setup[0].contains(&"-N".to_string()));
    assert!(!p.setup[0].contains(&"-c".to_string()));
}

#[test]
fn hostile_env_values_are_single_argv_elements_escaped_for_the_jail() {
    let hostile = [
        ("SPACES", "a b  c"),
        ("QUOTES", r#"it's "quoted""#),
        ("SUBST", "$(rm -rf /) `id` ${HOME}"),
        ("BACKSLASH", r"C:\path\"),
        ("SEMI", "x; reboot"),
    ];
    let p = plan_of(
        json!({"image": "i", "pot": "p", "tag": "t"}),
        &task(&hostile),
    )
    .unwrap();
    let env = p.setup.iter().find(|a| a[0] == "set-env").unwrap();
    assert_eq!(
        env[3..],
        argv(&[
            "-E",
            r"BACKSLASH=C:\\path\\",
            "-E",
            r#"QUOTES=it's "quoted""#,
            "-E",
            "SEMI=x; reboot",
            "-E",
            "SPACES=a b  c",
            "-E",
            r"SUBST=\$(rm -rf /) \`id\` \${HOME}",
        ])[..]
    );
}

/// What pot does with a set-env value (share/pot/set-env.sh escapes `"`,
/// start.sh writes `export "K=V"`), then what a POSIX shell makes of that
/// double-quoted word: the task must see the original value.
#[test]
fn escaped_env_values_survive_pots_double_quoting() {
    fn pot_then_shell(escaped: &str) -> String {
        let pot = escaped.replace('"', "\\\"");
        // Inside "...": backslash escapes only $ ` " \ (and newline).
        let mut out = String::new();
        let mut chars = pot.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\'
                && let Some(&n) = chars.peek()
                && matches!(n, '$' | '`' | '"' | '\\')
            {
                out.push(n);
                chars.next();
                continue;
            }
            assert!(
                c != '$' && c != '`',
                "unescaped {c} would be expanded by the jail's shell"
            );
            out.push(c);
        }
        out
    }
    for v in [
        "plain",
        "a b",
        r#"q"uo'te"#,
        "$(id)",
        "`id`",
        r"back\slash\",
        r#"\"$x\""#,
    ] {
        assert_eq!(pot_then_shell(&plan::escape_env_value(v)), v);
    }
}

#[test]
fn env_value_with_a_newline_is_refused_naming_the_variable() {
    let m = invalid_msg(plan_of(
        json!({"image": "i", "pot": "p", "tag": "t"}),
        &task(&[("CERT", "line1\nline2")]),
    ));
    assert!(m.contains("\"CERT\"") && m.contains("line break"), "{m}");
}

#[test]
fn env_names_the_jail_cannot_export_are_skipped_with_a_warning() {
    let p = plan_of(
        json!({"image": "i", "pot": "p", "tag": "t"}),
        &task(&[("GOOD", "1"), ("bad.name", "2"), ("1X", "3")]),
    )
    .unwrap();
    let env = p.setup.iter().find(|a| a[0] == "set-env").unwrap();
    assert_eq!(env[3..], argv(&["-E", "GOOD=1"])[..]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("1X") || p.warnings[1].contains("1X"));
}

#[test]
fn no_env_means_no_set_env() {
    let p = plan_of(json!({"image": "i", "pot": "p", "tag": "t"}), &task(&[])).unwrap();
    assert!(p.setup.iter().all(|a| a[0] != "set-env"));
}

#[test]
fn dots_in_the_task_name_become_underscores_as_pot_does() {
    let mut t = task(&[]);
    t.name = "web.v2".into();
    t.id = format!("{ALLOC}/web.v2/aaaabbbb");
    let p = plan_of(json!({"image": "i", "pot": "p", "tag": "t"}), &t).unwrap();
    assert_eq!(p.pot_name, format!("web_v2_aaaabbbb_{ALLOC}"));
    assert!(p.setup[0].windows(2).any(|w| w == ["-n", "web.v2"]));
}

#[test]
fn rejections_name_the_field() {
    let t = task(&[]);
    let base = |extra: serde_json::Value| {
        let mut v = json!({"image": "i", "pot": "p", "tag": "t"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"image": " "}), "\"image\""),
        (json!({"pot": ""}), "\"pot\""),
        (json!({"tag": ""}), "\"tag\""),
        (json!({"args": ["x"]}), "\"args\""),
        (json!({"command": "a\nb"}), "\"command\""),
        (
            json!({"command": "a", "args": ["ok", "b\r\nc"]}),
            "\"args[1]\"",
        ),
        (json!({"network_mode": "bridge"}), "\"network_mode\""),
        (json!({"port_map": {"http": "eighty"}}), "\"port_map.http\""),
        (json!({"port_map": {"http": "70000"}}), "\"port_map.http\""),
        (json!({"port_map": {"http": "0"}}), "\"port_map.http\""),
        (json!({"port_map": {"nope": "80"}}), "\"port_map.nope\""),
        (json!({"port_map": "80"}), "\"port_map\""),
        (json!({"port_map": ["80"]}), "\"port_map[0]\""),
        (json!({"copy": ["/only-one-path"]}), "\"copy[0]\""),
        (json!({"copy": ["relative:/dst"]}), "\"copy[0]\""),
        (json!({"copy": ["/a:/b:/c"]}), "\"copy[0]\""),
        (json!({"mount": ["/a:relative"]}), "\"mount[0]\""),
        (json!({"mount": ["/a:/"]}), "\"mount[0]\""),
        (json!({"mount_read_only": ["/a"]}), "\"mount_read_only[0]\""),
        (
            json!({"attributes": ["devfs_ruleset"]}),
            "\"attributes[0]\"",
        ),
        (json!({"attributes": ["bad attr:1"]}), "\"attributes[0]\""),
        (json!({"extra_hosts": ["db"]}), "\"extra_hosts[0]\""),
        (
            json!({"extra_hosts": ["db:not-an-ip"]}),
            "\"extra_hosts[0]\"",
        ),
        (
            json!({"extra_hosts": ["a b:10.0.0.1"]}),
            "\"extra_hosts[0]\"",
        ),
    ];
    for (extra, field) in cases {
        let m = invalid_msg(plan_of(base(extra.clone()), &t));
        assert!(
            m.contains(field),
            "{extra}: message {m:?} does not name {field}"
        );
    }
}

#[test]
fn wrong_types_are_decode_errors_naming_the_field() {
    match conf(json!({"image": "i", "pot": "p", "tag": "t", "args": "not-a-list"})) {
        Err(DriverError::InvalidConfig(m)) => assert!(m.contains("args"), "{m}"),
        other => panic!("{other:?}"),
    }
    match conf(json!({"image": "i", "tag": "t"})) {
        Err(DriverError::InvalidConfig(m)) => assert!(m.contains("pot"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lifecycle_command_lines() {
    assert_eq!(
        plan::destroy_args(NAME),
        argv(&["destroy", "-p", NAME, "-F"])
    );
    assert_eq!(
        plan::signal_args(NAME, "SIGHUP"),
        argv(&["signal", "-s", "SIGHUP", "-p", NAME])
    );
    assert_eq!(
        plan::exec_args(NAME, &argv(&["sh", "-c", "echo $HOME; id"])),
        argv(&["exec", "-p", NAME, "sh", "-c", "echo $HOME; id"])
    );
    assert_eq!(
        plan::last_run_stats_args(NAME),
        argv(&["last-run-stats", "-p", NAME])
    );
    assert_eq!(
        plan::get_rss_args(NAME),
        argv(&["get-rss", "-p", NAME, "-J"])
    );
    assert_eq!(plan::list_args(), argv(&["ls", "-q"]));
}

#[test]
fn parses_pot_outputs() {
    assert_eq!(plan::parse_last_run_stats("{\"ExitCode\": 7}\n"), Ok(7));
    assert!(
        plan::parse_last_run_stats("{}")
            .unwrap_err()
            .contains("no ExitCode")
    );
    assert!(plan::parse_last_run_stats("garbage").is_err());
    assert!(plan::parse_last_run_stats("{\"ExitCode\": 99999999999}").is_err());

    let u = plan::parse_rss(
        r#"{ "ResourceUsage": { "MemoryStats": { "RSS" : 1048576, "Swap" : 0 }, "CpuStats": { "TotalTicks": 123.5, "Percent": 4 } } } "#,
    )
    .unwrap();
    assert_eq!(u.memory_rss_bytes, Some(1_048_576));
    assert_eq!(u.memory_swap_bytes, Some(0));
    assert_eq!(u.cpu_total_ticks, Some(123.5));
    assert_eq!(u.cpu_percent, Some(4.0));
    assert!(plan::parse_rss("{}").is_err());
    assert!(plan::parse_rss("{\"ResourceUsage\": {}}").is_err());

    assert_eq!(
        plan::parse_version("pot version: 0.16.0\n").as_deref(),
        Some("0.16.0")
    );
    assert_eq!(plan::parse_version("0.15.6\n").as_deref(), Some("0.15.6"));
    assert_eq!(plan::parse_version("usage: pot ...").as_deref(), None);

    assert!(plan::pot_listed("a\nwww1_x\n", "www1_x"));
    assert!(!plan::pot_listed("www1_x_longer\n", "www1_x"));
}

#[test]
fn messages_never_show_env_values() {
    let shown = plan::display_args(&argv(&[
        "set-env",
        "-p",
        "x",
        "-E",
        "TOKEN=s3cret",
        "-E",
        "A=b",
    ]));
    assert_eq!(shown, "pot set-env -p x -E TOKEN=… -E A=…");
    assert_eq!(
        plan::display_args(&argv(&["destroy", "-p", "x", "-F"])),
        "pot destroy -p x -F"
    );
}

#[test]
fn plugin_config_defaults_to_enabled() {
    assert!(plan::decode_plugin(&[]).unwrap().enabled);
    let off = rmp_serde::to_vec_named(&json!({"enabled": false})).unwrap();
    assert!(!plan::decode_plugin(&off).unwrap().enabled);
}

#[test]
fn task_ids_not_in_nomads_form_are_refused() {
    let mut t = task(&[]);
    t.id = "no-slashes".into();
    assert!(matches!(
        plan_of(json!({"image": "i", "pot": "p", "tag": "t"}), &t),
        Err(DriverError::Fatal(_))
    ));
}
