//! Native unit tests of the plan: config -> exact argv for every field,
//! and every rejection naming its fields.

use std::collections::BTreeMap;

use nomad_driver_sdk::DriverError;
use nomad_driver_sdk::TaskConfig;
use nomad_driver_sdk::bindings::nomad::driver::types::{Mount, PortMapping, Resources};

use crate::config::{Machined, PluginConfig, TaskConf};
use crate::plan::{self, ImageKind, Leader, Mode, State, StopAction};

const ALLOC: &str = "0f3c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6";

fn task() -> TaskConfig {
    TaskConfig {
        id: format!("{ALLOC}/web/1234abcd"),
        name: "web".into(),
        alloc_id: ALLOC.into(),
        task_group: "g".into(),
        job_name: "j".into(),
        job_id: "j".into(),
        namespace: "default".into(),
        node_name: "n".into(),
        node_id: "id".into(),
        driver_config: vec![],
        env: vec![("NOMAD_TASK_DIR".into(), "/host/alloc/web/local".into())],
        user: String::new(),
        alloc_dir: "/var/nomad/alloc/x".into(),
        stdout_path: String::new(),
        stderr_path: String::new(),
        resources: Resources {
            cpu_shares: 100,
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

fn plugin() -> PluginConfig {
    PluginConfig {
        enabled: true,
        volumes: true,
        image_root: Some("/var/lib/machines".into()),
        machined: Machined::Auto,
    }
}

fn conf() -> TaskConf {
    TaskConf {
        image: "/img".into(),
        ..Default::default()
    }
}

fn argv(c: &TaskConf, t: &TaskConfig, mode: Mode) -> Vec<String> {
    match plan::plan(c, &plugin(), t, mode) {
        Ok(p) => p.args,
        Err(e) => panic!("plan failed: {e:?}"),
    }
}

fn rejected(c: &TaskConf, t: &TaskConfig) -> String {
    match plan::plan(c, &plugin(), t, Mode::Standalone) {
        Ok(p) => panic!("accepted: {:?}", p.args),
        Err(DriverError::InvalidConfig(m)) => m,
        Err(e) => panic!("not an invalid-config error: {e:?}"),
    }
}

const MACHINE: &str = "web-0f3c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const UUID: &str = "0f3c2a9e1b2c4d5e8f90a1b2c3d4e5f6";

fn task_binds(idmap: &str) -> Vec<String> {
    vec![
        format!("--bind=/var/nomad/alloc/x/alloc:/alloc{idmap}"),
        format!("--bind=/var/nomad/alloc/x/web/local:/local{idmap}"),
        format!("--bind=/var/nomad/alloc/x/web/secrets:/secrets{idmap}"),
    ]
}

fn setenv_defaults() -> Vec<String> {
    [
        "NOMAD_ALLOC_DIR",
        "NOMAD_SECRETS_DIR",
        "NOMAD_TASK_DIR",
        "PATH",
    ]
    .iter()
    .map(|k| format!("--setenv={k}"))
    .collect()
}

#[test]
fn defaults_are_the_seeds() {
    let mut want: Vec<String> = [
        "-D",
        "/img",
        "--quiet",
        &format!("--machine={MACHINE}"),
        &format!("--uuid={UUID}"),
        "--register=no",
        "--keep-unit",
        "--boot",
        "--private-users=pick",
        "--private-users-ownership=auto",
        "--network-veth",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.extend(task_binds(":idmap"));
    want.extend(setenv_defaults());
    assert_eq!(argv(&conf(), &task(), Mode::Standalone), want);
}

#[test]
fn every_field_maps_to_its_flag() {
    let mut t = task();
    t.resources.ports = vec![
        PortMapping {
            label: "http".into(),
            value: 25000,
            to: 80,
            host_ip: "10.0.0.1".into(),
        },
        PortMapping {
            label: "admin".into(),
            value: 25001,
            to: 0,
            host_ip: "10.0.0.1".into(),
        },
    ];
    t.mounts = vec![
        Mount {
            task_path: "/data".into(),
            host_path: "/srv/vol".into(),
            readonly: false,
            propagation_mode: String::new(),
        },
        Mount {
            task_path: "/ro".into(),
            host_path: "/srv/ro".into(),
            readonly: true,
            propagation_mode: String::new(),
        },
    ];
    let c = TaskConf {
        image: "debian/image".into(),
        boot: Some(false),
        ephemeral: Some(true),
        process_two: Some(true),
        read_only: Some(false),
        user_namespacing: Some(true),
        command: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        console: Some("passive".into()),
        pivot_root: Some("/sysroot:/".into()),
        resolv_conf: Some("copy-host".into()),
        user: Some("app".into()),
        volatile: None,
        working_directory: Some("/srv".into()),
        bind: BTreeMap::from([("/var/lib/postgresql".into(), "/postgres".into())]),
        bind_read_only: BTreeMap::from([("/etc/passwd".into(), "/etc/passwd".into())]),
        environment: BTreeMap::from([("FOO".into(), "bar".into())]),
        port_map: BTreeMap::new(),
        ports: vec!["http".into(), "admin".into()],
        capability: vec!["CAP_NET_ADMIN".into(), "CAP_SYS_TIME".into()],
        network_veth: Some(true),
        network_zone: Some("web".into()),
        network_bridge: None,
        private_users: Some("65536:65536".into()),
        private_users_ownership: Some("chown".into()),
    };
    let got = argv(&c, &t, Mode::Standalone);
    let want: Vec<String> = [
        "-D",
        "/var/lib/machines/debian/image",
        "--quiet",
        &format!("--machine={MACHINE}"),
        &format!("--uuid={UUID}"),
        "--register=no",
        "--keep-unit",
        "--as-pid2",
        "--ephemeral",
        "--private-users=65536:65536",
        "--private-users-ownership=chown",
        "--network-zone=web",
        "--port=tcp:25000:80",
        "--port=tcp:25001:25001",
        "--console=passive",
        "--pivot-root=/sysroot:/",
        "--resolv-conf=copy-host",
        "--user=app",
        "--chdir=/srv",
        "--capability=CAP_NET_ADMIN,CAP_SYS_TIME",
        "--bind=/var/nomad/alloc/x/alloc:/alloc:idmap",
        "--bind=/var/nomad/alloc/x/web/local:/local:idmap",
        "--bind=/var/nomad/alloc/x/web/secrets:/secrets:idmap",
        "--bind=/srv/vol:/data:idmap",
        "--bind-ro=/srv/ro:/ro:idmap",
        "--bind=/var/lib/postgresql:/postgres:idmap",
        "--bind-ro=/etc/passwd:/etc/passwd:idmap",
        "--setenv=FOO",
        "--setenv=NOMAD_ALLOC_DIR",
        "--setenv=NOMAD_SECRETS_DIR",
        "--setenv=NOMAD_TASK_DIR",
        "--setenv=PATH",
        "--",
        "/bin/sh",
        "-c",
        "echo hi",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn read_only_volatile_bridge_port_map_and_no_user_namespacing() {
    let mut t = task();
    t.resources.ports = vec![
        PortMapping {
            label: "http".into(),
            value: 25000,
            to: 0,
            host_ip: String::new(),
        },
        PortMapping {
            label: "other".into(),
            value: 25002,
            to: 0,
            host_ip: String::new(),
        },
    ];
    let c = TaskConf {
        image: "/images/disk.raw".into(),
        boot: Some(false),
        read_only: Some(true),
        user_namespacing: Some(false),
        volatile: Some("state".into()),
        network_bridge: Some("br0".into()),
        port_map: BTreeMap::from([("http".into(), 80)]),
        console: Some("pipe".into()),
        ..Default::default()
    };
    let got = argv(&c, &t, Mode::Standalone);
    assert_eq!(&got[..2], ["-i", "/images/disk.raw"]);
    for flag in [
        "--read-only",
        "--volatile=state",
        "--network-bridge=br0",
        "--port=tcp:25000:80",
        "--port=tcp:25002:25002",
        "--console=pipe",
        "--bind=/var/nomad/alloc/x/alloc:/alloc",
    ] {
        assert!(got.contains(&flag.to_string()), "{flag} missing in {got:?}");
    }
    assert!(!got.iter().any(|a| a.starts_with("--private-users")));
    assert!(!got.contains(&"--network-veth".to_string()));
    assert!(!got.contains(&"--boot".to_string()));

    // network_veth = false: the host's network, no veth.
    let c = TaskConf {
        network_veth: Some(false),
        ..conf()
    };
    assert!(!argv(&c, &task(), Mode::Standalone).contains(&"--network-veth".to_string()));
    // A block device is an image too.
    let c = TaskConf {
        image: "/dev/vdb".into(),
        ..conf()
    };
    assert_eq!(argv(&c, &task(), Mode::Standalone)[0], "-i");
}

#[test]
fn console_defaults_to_pipes_unless_booted() {
    let c = TaskConf {
        boot: Some(false),
        ..conf()
    };
    assert!(argv(&c, &task(), Mode::Standalone).contains(&"--console=pipe".to_string()));
    assert!(
        !argv(&conf(), &task(), Mode::Standalone)
            .iter()
            .any(|a| a.starts_with("--console"))
    );
}

#[test]
fn group_network_joins_the_namespace_without_user_namespacing() {
    let mut t = task();
    t.network_namespace = Some("/var/run/netns/abc".into());
    let got = argv(&conf(), &t, Mode::Standalone);
    assert!(got.contains(&"--network-namespace-path=/var/run/netns/abc".to_string()));
    assert!(!got.contains(&"--network-veth".to_string()));
    assert!(!got.iter().any(|a| a.starts_with("--private-users")));
    assert!(got.contains(&"--bind=/var/nomad/alloc/x/alloc:/alloc".to_string()));

    let zone = TaskConf {
        network_zone: Some("z".into()),
        ..conf()
    };
    let m = rejected(&zone, &t);
    assert!(
        m.contains("network_zone") && m.contains("group network mode"),
        "{m}"
    );
    let ports = TaskConf {
        ports: vec!["http".into()],
        ..conf()
    };
    let m = rejected(&ports, &t);
    assert!(
        m.contains("ports") && m.contains("group network mode"),
        "{m}"
    );
}

#[test]
fn machined_mode_registers_and_limits_memory_by_property() {
    let mut t = task();
    t.resources.memory_max_mb = 512;
    t.resources.memory_limit_bytes = 512 << 20;
    let got = argv(&conf(), &t, Mode::Machined);
    assert!(got.contains(&"--register=yes".to_string()));
    assert!(!got.contains(&"--keep-unit".to_string()));
    assert!(got.contains(&format!("--property=MemoryMax={}", 512u64 << 20)));
    assert!(got.contains(&format!("--property=MemoryHigh={}", 256u64 << 20)));
    // Standalone: limits go to the host's cgroup instead.
    let p =
        plan::plan(&conf(), &plugin(), &t, Mode::Standalone).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!p.args.iter().any(|a| a.starts_with("--property")));
    assert_eq!((p.memory_limit, p.cpu_shares), (512 << 20, 100));
}

#[test]
fn environment_values_stay_out_of_the_command_line() {
    let mut t = task();
    t.env.push(("VAULT_TOKEN".into(), "s.secret".into()));
    t.env.push(("SYSTEMD_LOG_LEVEL".into(), "debug".into()));
    let c = TaskConf {
        environment: BTreeMap::from([("FOO".into(), "from job".into())]),
        ..conf()
    };
    let p = plan::plan(&c, &plugin(), &t, Mode::Standalone).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(p.args.contains(&"--setenv=VAULT_TOKEN".to_string()));
    assert!(!p.args.iter().any(|a| a.contains("s.secret")));
    assert!(
        p.nspawn_env
            .contains(&("VAULT_TOKEN".into(), "s.secret".into()))
    );
    // nspawn reads SYSTEMD_* itself: those go on the command line only.
    assert!(
        p.args
            .contains(&"--setenv=SYSTEMD_LOG_LEVEL=debug".to_string())
    );
    assert!(!p.nspawn_env.iter().any(|(k, _)| k == "SYSTEMD_LOG_LEVEL"));
    // The task dirs as the container sees them; the job's env wins.
    let env: BTreeMap<_, _> = p.state.env.iter().cloned().collect();
    assert_eq!(env["NOMAD_TASK_DIR"], "/local");
    assert_eq!(env["NOMAD_ALLOC_DIR"], "/alloc");
    assert_eq!(env["NOMAD_SECRETS_DIR"], "/secrets");
    assert_eq!(env["FOO"], "from job");
    assert_eq!(env["PATH"], plan::CONTAINER_PATH);
}

#[test]
fn every_rejection_names_its_fields() {
    let t = task();
    let cases: Vec<(TaskConf, &[&str])> = vec![
        (
            TaskConf {
                image: " ".into(),
                ..conf()
            },
            &["image"],
        ),
        (
            TaskConf {
                process_two: Some(true),
                ..conf()
            },
            &["boot", "process_two"],
        ),
        (
            TaskConf {
                user: Some("app".into()),
                ..conf()
            },
            &["boot", "user"],
        ),
        (
            TaskConf {
                boot: Some(false),
                read_only: Some(true),
                ..conf()
            },
            &["read_only", "user_namespacing"],
        ),
        (
            TaskConf {
                boot: Some(false),
                volatile: Some("yes".into()),
                ..conf()
            },
            &["volatile", "user_namespacing"],
        ),
        (
            TaskConf {
                user_namespacing: Some(false),
                private_users: Some("pick".into()),
                ..conf()
            },
            &["private_users", "user_namespacing"],
        ),
        (
            TaskConf {
                user_namespacing: Some(false),
                private_users_ownership: Some("map".into()),
                ..conf()
            },
            &["private_users_ownership", "user_namespacing"],
        ),
        (
            TaskConf {
                console: Some("tty".into()),
                ..conf()
            },
            &["console", "tty"],
        ),
        (
            TaskConf {
                resolv_conf: Some("magic".into()),
                ..conf()
            },
            &["resolv_conf", "magic"],
        ),
        (
            TaskConf {
                user_namespacing: Some(false),
                volatile: Some("maybe".into()),
                ..conf()
            },
            &["volatile", "maybe"],
        ),
        (
            TaskConf {
                private_users_ownership: Some("x".into()),
                ..conf()
            },
            &["private_users_ownership"],
        ),
        (
            TaskConf {
                private_users: Some("lots".into()),
                ..conf()
            },
            &["private_users", "lots"],
        ),
        (
            TaskConf {
                working_directory: Some("srv".into()),
                ..conf()
            },
            &["working_directory", "absolute"],
        ),
        (
            TaskConf {
                pivot_root: Some("a:b".into()),
                ..conf()
            },
            &["pivot_root", "absolute"],
        ),
        (
            TaskConf {
                pivot_root: Some("/a:/b:/c".into()),
                ..conf()
            },
            &["pivot_root"],
        ),
        (
            TaskConf {
                boot: Some(false),
                user: Some("a b".into()),
                ..conf()
            },
            &["user"],
        ),
        (
            TaskConf {
                bind: BTreeMap::from([("rel".into(), "/x".into())]),
                ..conf()
            },
            &["bind", "host path", "absolute"],
        ),
        (
            TaskConf {
                bind_read_only: BTreeMap::from([("/x".into(), "/a:b".into())]),
                ..conf()
            },
            &["bind_read_only", "container path", "':'"],
        ),
        (
            TaskConf {
                environment: BTreeMap::from([("A=B".into(), "x".into())]),
                ..conf()
            },
            &["environment", "A=B"],
        ),
        (
            TaskConf {
                port_map: BTreeMap::from([("http".into(), 70000)]),
                ..conf()
            },
            &["port_map", "70000"],
        ),
        (
            TaskConf {
                port_map: BTreeMap::from([("http".into(), 80)]),
                ports: vec!["http".into()],
                ..conf()
            },
            &["port_map", "ports"],
        ),
        (
            TaskConf {
                capability: vec!["CAP NET".into()],
                ..conf()
            },
            &["capability"],
        ),
        (
            TaskConf {
                network_zone: Some("a".into()),
                network_bridge: Some("b".into()),
                ..conf()
            },
            &["network_zone", "network_bridge"],
        ),
        (
            TaskConf {
                network_bridge: Some("a-very-long-bridge-name".into()),
                ..conf()
            },
            &["network_bridge"],
        ),
        (
            TaskConf {
                image: "rel/../../etc".into(),
                ..conf()
            },
            &["image", ".."],
        ),
        (
            TaskConf {
                image: "/".into(),
                ..conf()
            },
            &["image", "ephemeral"],
        ),
        (
            TaskConf {
                ports: vec!["nope".into()],
                ..conf()
            },
            &["ports", "nope"],
        ),
        (
            TaskConf {
                port_map: BTreeMap::from([("nope".into(), 80)]),
                ..conf()
            },
            &["port_map", "nope"],
        ),
        (
            TaskConf {
                ports: vec!["http".into()],
                network_veth: Some(false),
                ..conf()
            },
            &["ports", "network_veth"],
        ),
    ];
    let mut t_ports = t.clone();
    t_ports.resources.ports = vec![PortMapping {
        label: "http".into(),
        value: 25000,
        to: 80,
        host_ip: String::new(),
    }];
    for (c, words) in cases {
        let m = rejected(&c, &t_ports);
        for w in words {
            assert!(m.contains(w), "{c:?}: message {m:?} does not mention {w:?}");
        }
    }

    // Relative images need the agent's image_root.
    let no_root = PluginConfig {
        image_root: None,
        ..plugin()
    };
    let rel = TaskConf {
        image: "busybox".into(),
        ..conf()
    };
    match plan::plan(&rel, &no_root, &t, Mode::Standalone) {
        Err(DriverError::InvalidConfig(m)) => {
            assert!(m.contains("image") && m.contains("image_root"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // volumes = false refuses the job's binds.
    let no_volumes = PluginConfig {
        volumes: false,
        ..plugin()
    };
    let binds = TaskConf {
        bind: BTreeMap::from([("/a".into(), "/b".into())]),
        ..conf()
    };
    match plan::plan(&binds, &no_volumes, &t, Mode::Standalone) {
        Err(DriverError::InvalidConfig(m)) => {
            assert!(m.contains("bind") && m.contains("volumes"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Nomad's task user with a booted container.
    let mut as_user = t.clone();
    as_user.user = "nobody".into();
    let m = rejected(&conf(), &as_user);
    assert!(m.contains("user") && m.contains("boot"), "{m}");
    // ... is the container's user otherwise.
    let c = TaskConf {
        boot: Some(false),
        ..conf()
    };
    assert!(argv(&c, &as_user, Mode::Standalone).contains(&"--user=nobody".to_string()));
    // A Nomad mount with a relative path.
    let mut bad_mount = t.clone();
    bad_mount.mounts = vec![Mount {
        task_path: "data".into(),
        host_path: "/srv".into(),
        readonly: false,
        propagation_mode: String::new(),
    }];
    assert!(rejected(&conf(), &bad_mount).contains("volume mount"));
}

#[test]
fn machine_names_are_valid_hostnames() {
    assert_eq!(plan::machine_name("web", ALLOC), MACHINE);
    let long = plan::machine_name(&"Very_Long.Task Name!".repeat(5), ALLOC);
    assert!(long.len() <= 64, "{long}");
    assert!(
        long.ends_with(ALLOC) && long.starts_with("very-long-task-name-"),
        "{long}"
    );
    assert!(!long.contains("--"));
    assert_eq!(plan::machine_name("--", ALLOC), ALLOC);
    assert_eq!(plan::machine_name("web", ""), "web-task");
    for name in [long, plan::machine_name("_x_", "A/B")] {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
    }
    assert!(plan::machine_uuid("not-a-uuid").is_none());
}

fn state(mode: Mode, as_pid2: bool, boot: bool) -> State {
    State {
        machine: MACHINE.into(),
        mode,
        boot,
        as_pid2,
        env: vec![("A".into(), "1".into())],
        cwd: "/srv".into(),
        user: None,
        leader: Some(Leader {
            pid: 4242,
            pidns: "4026532201".into(),
        }),
    }
}

#[test]
fn exec_enters_the_container() {
    let cmd = vec!["ls".to_string(), "-l".to_string()];
    let s = state(Mode::Standalone, true, false);
    assert_eq!(
        plan::exec_argv(&s, &cmd).unwrap_or_default(),
        ["--target=4242", "--all", "--root", "--wd", "--", "ls", "-l"]
    );
    let mut as_uid = s.clone();
    as_uid.user = Some("1000:100".into());
    assert_eq!(
        plan::exec_argv(&as_uid, &cmd).unwrap_or_default()[4..6],
        ["--setuid=1000", "--setgid=100"]
    );
    as_uid.user = Some("app".into());
    assert!(matches!(
        plan::exec_argv(&as_uid, &cmd),
        Err(DriverError::Unsupported(m)) if m.contains("app")
    ));
    let mut gone = s.clone();
    gone.leader = None;
    assert!(matches!(
        plan::exec_argv(&gone, &cmd),
        Err(DriverError::Temporary(_))
    ));
    assert!(matches!(
        plan::exec_argv(&s, &[]),
        Err(DriverError::InvalidConfig(_))
    ));

    let m = state(Mode::Machined, false, true);
    assert_eq!(
        plan::exec_argv(&m, &cmd).unwrap_or_default(),
        [
            "--wait",
            "--collect",
            "--quiet",
            "--pipe",
            "--service-type=exec",
            &format!("--machine={MACHINE}"),
            "--working-directory=/srv",
            "--setenv=A=1",
            "--",
            "ls",
            "-l"
        ]
    );
}

#[test]
fn stops_power_off_booted_containers_and_signal_commands() {
    assert_eq!(
        plan::stop_action(&state(Mode::Standalone, false, true), "SIGINT"),
        StopAction::TermNspawn
    );
    assert_eq!(
        plan::stop_action(&state(Mode::Machined, false, true), ""),
        StopAction::Poweroff
    );
    assert_eq!(
        plan::stop_action(&state(Mode::Standalone, true, false), "SIGTERM"),
        StopAction::Payload("SIGTERM".into())
    );
    assert_eq!(
        plan::stop_action(&state(Mode::Standalone, true, false), ""),
        StopAction::Payload("SIGINT".into())
    );
    assert_eq!(
        plan::kill_signal_name("SIGTERM").ok().as_deref(),
        Some("TERM")
    );
    assert_eq!(
        plan::kill_signal_name("sigrtmin+3").ok().as_deref(),
        Some("RTMIN+3")
    );
    assert_eq!(plan::kill_signal_name("hup").ok().as_deref(), Some("HUP"));
    for bad in ["", "9", "SIG TERM", "-9; rm"] {
        assert!(plan::kill_signal_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn probes_parse() {
    assert_eq!(
        plan::parse_version("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT\n"),
        Some(("252".into(), "252.39-1~deb12u2".into()))
    );
    assert_eq!(
        plan::parse_version("systemd 255 (255.4-1ubuntu8)"),
        Some(("255".into(), "255.4-1ubuntu8".into()))
    );
    assert_eq!(plan::parse_version("bash: systemd-nspawn: not found"), None);
    assert_eq!(plan::parse_pid("  4242\n4300\n"), Some(4242));
    assert_eq!(plan::parse_pid(""), None);
    assert_eq!(
        plan::machine_pattern("web-1"),
        "^[^ ]*systemd-nspawn .*--machine=web-1( |$)"
    );
}

#[test]
fn plugin_config_decodes_and_checks() {
    // Empty: the defaults.
    let d = PluginConfig::decode(&[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        d,
        PluginConfig {
            enabled: true,
            volumes: true,
            image_root: None,
            machined: Machined::Auto
        }
    );
    assert_eq!(PluginConfig::load(&d.to_bytes()).ok(), Some(d));
    // {"machined": "x"}
    let bad = [
        0x81, 0xa8, b'm', b'a', b'c', b'h', b'i', b'n', b'e', b'd', 0xa1, b'x',
    ];
    assert!(matches!(
        PluginConfig::decode(&bad),
        Err(DriverError::InvalidConfig(m)) if m.contains("machined")
    ));
    // {"image_root": "rel"}
    let mut rel = vec![0x81, 0xaa];
    rel.extend(b"image_root");
    rel.push(0xa3);
    rel.extend(b"rel");
    assert!(matches!(
        PluginConfig::decode(&rel),
        Err(DriverError::InvalidConfig(m)) if m.contains("image_root")
    ));
}

#[test]
fn the_image_kind_on_the_host_decides_the_flag() {
    let with = |kind: ImageKind| {
        plan::plan_with(&conf(), &plugin(), &task(), Mode::Standalone, &|p| {
            assert_eq!(p, "/img");
            kind
        })
    };
    assert_eq!(
        with(ImageKind::Directory)
            .map(|p| p.args[0].clone())
            .ok()
            .as_deref(),
        Some("-D")
    );
    assert_eq!(
        with(ImageKind::File)
            .map(|p| p.args[0].clone())
            .ok()
            .as_deref(),
        Some("-i")
    );
    match with(ImageKind::Missing) {
        Err(DriverError::InvalidConfig(m)) => {
            assert!(
                m.contains("\"image\"") && m.contains("/img") && m.contains("does not exist"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A file named like a directory is still a file when the host says so.
    let c = TaskConf {
        image: "/var/lib/machines/debian".into(),
        ..conf()
    };
    let p = plan::plan_with(&c, &plugin(), &task(), Mode::Standalone, &|_| {
        ImageKind::File
    });
    assert_eq!(
        p.map(|p| p.args[..2].to_vec()).ok(),
        Some(vec![
            "-i".to_string(),
            "/var/lib/machines/debian".to_string()
        ])
    );
}
