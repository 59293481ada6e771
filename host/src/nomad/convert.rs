//! Conversions between Nomad's protobuf types and the host's own.

use std::time::{SystemTime, UNIX_EPOCH};

use nomad_plugin_proto::drivers as pb;
use nomad_plugin_proto::structs::{Attribute as PbAttribute, attribute::Value as PbValue};

use crate::caps::TaskEvent;
use crate::caps::procstats;
use crate::runtime::bindings::nomad::driver::types as wit;
use crate::tasks::TaskResult;

/// `0001-01-01T00:00:00Z`, Go's zero time, which Nomad expects for "not yet".
pub const GO_ZERO_TIME: prost_types::Timestamp = prost_types::Timestamp {
    seconds: -62_135_596_800,
    nanos: 0,
};

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        },
        Err(_) => GO_ZERO_TIME,
    }
}

pub fn task_config(t: &pb::TaskConfig) -> wit::TaskConfig {
    let res = t.resources.clone().unwrap_or_default();
    let alloc = res.allocated_resources.unwrap_or_default();
    let linux = res.linux_resources.unwrap_or_default();
    let memory = alloc.memory.unwrap_or_default();
    let mut env: Vec<(String, String)> =
        t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.sort();
    wit::TaskConfig {
        id: t.id.clone(),
        name: t.name.clone(),
        alloc_id: t.alloc_id.clone(),
        task_group: t.task_group_name.clone(),
        job_name: t.job_name.clone(),
        job_id: t.job_id.clone(),
        namespace: t.namespace.clone(),
        node_name: t.node_name.clone(),
        node_id: t.node_id.clone(),
        driver_config: t.msgpack_driver_config.clone(),
        env,
        user: t.user.clone(),
        alloc_dir: t.alloc_dir.clone(),
        stdout_path: t.stdout_path.clone(),
        stderr_path: t.stderr_path.clone(),
        resources: wit::Resources {
            cpu_shares: alloc.cpu.map(|c| c.cpu_shares).unwrap_or(linux.cpu_shares),
            memory_mb: memory.memory_mb,
            memory_max_mb: memory.memory_max_mb,
            memory_limit_bytes: linux.memory_limit_bytes,
            cpuset_cpus: linux.cpuset_cpus.clone(),
            ports: res
                .ports
                .iter()
                .map(|p| wit::PortMapping {
                    label: p.label.clone(),
                    value: p.value,
                    to: p.to,
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
        },
        mounts: t
            .mounts
            .iter()
            .map(|m| wit::Mount {
                task_path: m.task_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation_mode: m.propagation_mode.clone(),
            })
            .collect(),
        network_namespace: t
            .network_isolation_spec
            .as_ref()
            .map(|n| n.path.clone())
            .filter(|p| !p.is_empty()),
    }
}

pub fn capabilities(c: &wit::DriverCapabilities) -> pb::DriverCapabilities {
    use pb::driver_capabilities::{FsIsolation, MountConfigs};
    use pb::network_isolation_spec::NetworkIsolationMode as Mode;
    pb::DriverCapabilities {
        send_signals: c.send_signals,
        exec: c.exec,
        fs_isolation: match c.fs_isolation {
            wit::FsIsolation::None => FsIsolation::None,
            wit::FsIsolation::Chroot => FsIsolation::Chroot,
            wit::FsIsolation::Image => FsIsolation::Image,
            wit::FsIsolation::Unveil => FsIsolation::Unveil,
        } as i32,
        network_isolation_modes: c
            .network_modes
            .iter()
            .map(|m| match m {
                wit::NetworkMode::Host => Mode::Host,
                wit::NetworkMode::Group => Mode::Group,
                wit::NetworkMode::Task => Mode::Task,
                wit::NetworkMode::None => Mode::None,
            } as i32)
            .collect(),
        must_create_network: c.must_create_network,
        mount_configs: if c.mounts {
            MountConfigs::UnknownMounts
        } else {
            MountConfigs::NoMounts
        } as i32,
        remote_tasks: c.remote_tasks,
        disable_log_collection: c.disable_log_collection,
        dynamic_workload_users: false,
    }
}

pub fn fingerprint(f: &wit::FingerprintReport) -> pb::FingerprintResponse {
    use pb::fingerprint_response::HealthState;
    pb::FingerprintResponse {
        attributes: f
            .attributes
            .iter()
            .map(|a| {
                let value = match &a.value {
                    wit::AttributeValue::Int(i) => PbValue::IntVal(*i),
                    wit::AttributeValue::Float(x) => PbValue::FloatVal(*x),
                    wit::AttributeValue::Text(s) => PbValue::StringVal(s.clone()),
                    wit::AttributeValue::Boolean(b) => PbValue::BoolVal(*b),
                };
                (
                    a.key.clone(),
                    PbAttribute {
                        value: Some(value),
                        unit: a.unit.clone(),
                    },
                )
            })
            .collect(),
        health: match f.health {
            wit::Health::Undetected => HealthState::Undetected,
            wit::Health::Unhealthy => HealthState::Unhealthy,
            wit::Health::Healthy => HealthState::Healthy,
        } as i32,
        health_description: f.description.clone(),
        err: String::new(),
    }
}

pub fn exit_result(r: &TaskResult) -> pb::ExitResult {
    pb::ExitResult {
        exit_code: r.exit_code,
        signal: r.signal,
        oom_killed: r.oom_killed,
    }
}

pub fn network_override(n: &wit::NetworkOverride) -> pb::NetworkOverride {
    pb::NetworkOverride {
        port_map: n.port_map.iter().cloned().collect(),
        addr: n.addr.clone(),
        auto_advertise: n.auto_advertise,
    }
}

pub fn task_event(e: &TaskEvent) -> pb::DriverTaskEvent {
    pb::DriverTaskEvent {
        task_id: e.task_id.clone(),
        alloc_id: e.alloc_id.clone(),
        task_name: e.task_name.clone(),
        timestamp: Some(timestamp(e.timestamp)),
        message: e.message.clone(),
        annotations: e
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// One process set's usage in Nomad's shape, with `measured_fields` naming
/// exactly what was measured.
pub fn resource_usage(u: &procstats::Usage, r: &procstats::CpuRates) -> pb::TaskResourceUsage {
    use pb::cpu_usage::Fields as C;
    use pb::memory_usage::Fields as M;
    pb::TaskResourceUsage {
        cpu: Some(pb::CpuUsage {
            system_mode: r.system_percent,
            user_mode: r.user_percent,
            total_ticks: r.total_ticks,
            throttled_periods: 0,
            throttled_time: 0,
            percent: r.percent,
            measured_fields: vec![
                C::SystemMode as i32,
                C::UserMode as i32,
                C::TotalTicks as i32,
                C::Percent as i32,
            ],
        }),
        memory: Some(pb::MemoryUsage {
            rss: u.rss_bytes,
            measured_fields: vec![M::Rss as i32],
            ..Default::default()
        }),
    }
}

/// Usage the guest measured, with only what it measured marked as such.
pub fn guest_usage(u: &wit::TaskUsage) -> pb::TaskResourceUsage {
    use pb::cpu_usage::Fields as C;
    use pb::memory_usage::Fields as M;
    let mut cpu = pb::CpuUsage::default();
    for (v, slot, field) in [
        (u.cpu_percent, &mut cpu.percent, C::Percent),
        (u.cpu_user_percent, &mut cpu.user_mode, C::UserMode),
        (u.cpu_system_percent, &mut cpu.system_mode, C::SystemMode),
        (u.cpu_total_ticks, &mut cpu.total_ticks, C::TotalTicks),
    ] {
        if let Some(v) = v {
            *slot = v;
            cpu.measured_fields.push(field as i32);
        }
    }
    let mut memory = pb::MemoryUsage::default();
    for (v, slot, field) in [
        (u.memory_rss_bytes, &mut memory.rss, M::Rss),
        (u.memory_cache_bytes, &mut memory.cache, M::Cache),
        (u.memory_swap_bytes, &mut memory.swap, M::Swap),
        (u.memory_usage_bytes, &mut memory.usage, M::Usage),
        (u.memory_max_usage_bytes, &mut memory.max_usage, M::MaxUsage),
    ] {
        if let Some(v) = v {
            *slot = v;
            memory.measured_fields.push(field as i32);
        }
    }
    pb::TaskResourceUsage {
        cpu: Some(cpu),
        memory: Some(memory),
    }
}

pub fn nomad_config(c: &nomad_plugin_proto::base::NomadConfig) -> Option<wit::NomadConfig> {
    c.driver.as_ref().map(|d| wit::NomadConfig {
        client_min_port: d.client_min_port,
        client_max_port: d.client_max_port,
    })
}

/// `google.protobuf.Duration` to std, treating negatives as zero.
pub fn duration(d: Option<&prost_types::Duration>) -> std::time::Duration {
    match d {
        Some(d) if d.seconds > 0 || (d.seconds == 0 && d.nanos > 0) => {
            std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        }
        _ => std::time::Duration::ZERO,
    }
}
