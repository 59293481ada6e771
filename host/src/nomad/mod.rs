//! Nomad's `BasePlugin` and `Driver` gRPC services, answered from the guest.
//!
//! This module and its children are the only place that knows Nomad's
//! protobuf types: requests are converted to the host's own types, the
//! [`Driver`](crate::driver::Driver) core does the work, and errors become
//! statuses in [`errors`].

pub mod convert;
pub mod errors;
pub mod hclspec;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nomad_plugin_proto::base::{self as base_pb, base_plugin_server::BasePlugin};
use nomad_plugin_proto::drivers::{self as pb, driver_server::Driver as DriverService};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::caps::procstats;
use crate::driver::{Driver, GuestManifest};
use errors::to_status;

/// The driver API version Nomad negotiates with every task driver.
pub const API_VERSION: &str = "v0.1.0";

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Both Nomad services over one [`Driver`].
#[derive(Debug, Clone)]
pub struct NomadPlugin {
    driver: Arc<Driver>,
    fingerprint_interval: Duration,
}

/// A guest's schemas as Nomad's protobuf.
struct Schemas {
    config: Option<nomad_plugin_proto::hclspec::Spec>,
    task_config: nomad_plugin_proto::hclspec::Spec,
}

fn schemas(m: &GuestManifest) -> Result<Schemas, String> {
    let config = match &m.config_schema {
        Some(s) => Some(hclspec::to_proto(s).map_err(|e| format!("config schema: {e}"))?),
        None => None,
    };
    let task_config =
        hclspec::to_proto(&m.task_config_schema).map_err(|e| format!("task config schema: {e}"))?;
    Ok(Schemas {
        config,
        task_config,
    })
}

impl NomadPlugin {
    /// Checks the guest's schemas at load, so a malformed schema is a load
    /// error rather than a failure on every task.
    pub fn new(driver: Arc<Driver>, fingerprint_interval: Duration) -> Result<Self, String> {
        Self::check_manifest(&driver.manifest())?;
        Ok(NomadPlugin {
            driver,
            fingerprint_interval,
        })
    }

    /// What a guest build must satisfy to be served (also on reload).
    pub fn check_manifest(m: &GuestManifest) -> Result<(), String> {
        schemas(m).map(|_| ())
    }

    /// The current guest's schemas (checked at load, so this cannot fail
    /// in practice; a failure is reported rather than a panic).
    fn current_schemas(&self) -> Result<Schemas, Status> {
        schemas(&self.driver.manifest()).map_err(Status::internal)
    }

    fn task_id(id: &str) -> Result<&str, Status> {
        if id.is_empty() {
            Err(Status::invalid_argument("task_id is empty"))
        } else {
            Ok(id)
        }
    }
}

#[tonic::async_trait]
impl BasePlugin for NomadPlugin {
    async fn plugin_info(
        &self,
        _: Request<base_pb::PluginInfoRequest>,
    ) -> Result<Response<base_pb::PluginInfoResponse>, Status> {
        let info = &self.driver.manifest().info;
        Ok(Response::new(base_pb::PluginInfoResponse {
            r#type: base_pb::PluginType::Driver as i32,
            plugin_api_versions: vec![API_VERSION.into()],
            plugin_version: info.version.clone(),
            name: info.name.clone(),
        }))
    }

    async fn config_schema(
        &self,
        _: Request<base_pb::ConfigSchemaRequest>,
    ) -> Result<Response<base_pb::ConfigSchemaResponse>, Status> {
        Ok(Response::new(base_pb::ConfigSchemaResponse {
            spec: self.current_schemas()?.config,
        }))
    }

    async fn set_config(
        &self,
        req: Request<base_pb::SetConfigRequest>,
    ) -> Result<Response<base_pb::SetConfigResponse>, Status> {
        let req = req.into_inner();
        let nomad = req.nomad_config.as_ref().and_then(convert::nomad_config);
        self.driver
            .set_config(req.msgpack_config, nomad)
            .await
            .map_err(to_status)?;
        Ok(Response::new(base_pb::SetConfigResponse {}))
    }
}

#[tonic::async_trait]
impl DriverService for NomadPlugin {
    async fn task_config_schema(
        &self,
        _: Request<pb::TaskConfigSchemaRequest>,
    ) -> Result<Response<pb::TaskConfigSchemaResponse>, Status> {
        Ok(Response::new(pb::TaskConfigSchemaResponse {
            spec: Some(self.current_schemas()?.task_config),
        }))
    }

    async fn capabilities(
        &self,
        _: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        Ok(Response::new(pb::CapabilitiesResponse {
            capabilities: Some(convert::capabilities(&self.driver.manifest().capabilities)),
        }))
    }

    type FingerprintStream = RpcStream<pb::FingerprintResponse>;

    /// First message at once, then one per interval, until the client goes
    /// away. The stream never ends on its own: Nomad re-calls a closed
    /// fingerprint stream in a tight loop and marks the driver unhealthy.
    async fn fingerprint(
        &self,
        _: Request<pb::FingerprintRequest>,
    ) -> Result<Response<Self::FingerprintStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let driver = self.driver.clone();
        let interval = self.fingerprint_interval;
        tokio::spawn(async move {
            loop {
                let msg = match driver.fingerprint().await {
                    Ok(f) => convert::fingerprint(&f),
                    Err(e) => {
                        tracing::error!(error = %e, "fingerprint failed");
                        pb::FingerprintResponse {
                            health: pb::fingerprint_response::HealthState::Unhealthy as i32,
                            health_description: e.to_string(),
                            ..Default::default()
                        }
                    }
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn recover_task(
        &self,
        req: Request<pb::RecoverTaskRequest>,
    ) -> Result<Response<pb::RecoverTaskResponse>, Status> {
        let req = req.into_inner();
        let handle = req
            .handle
            .ok_or_else(|| Status::invalid_argument("RecoverTask without a handle"))?;
        // Nomad leaves task_id empty; the id is in the handle's config.
        let id = handle
            .config
            .as_ref()
            .map(|c| c.id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or(req.task_id);
        Self::task_id(&id)?;
        let mut config = handle.config.unwrap_or_default();
        config.id = id;
        self.driver
            .recover_task(config, &handle.driver_state)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        req: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let task = req
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("StartTask without a task config"))?;
        let spec = convert::task_config(&task);
        let started = self
            .driver
            .start_task(spec, task.clone())
            .await
            .map_err(to_status)?;
        let handle = pb::TaskHandle {
            version: crate::tasks::HANDLE_VERSION,
            config: Some(task),
            state: pb::TaskState::Running as i32,
            driver_state: started.driver_state,
        };
        Ok(Response::new(pb::StartTaskResponse {
            result: pb::start_task_response::Result::Success as i32,
            driver_error_msg: String::new(),
            handle: Some(handle),
            network_override: started
                .network_override
                .as_ref()
                .map(convert::network_override),
        }))
    }

    async fn wait_task(
        &self,
        req: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        let req = req.into_inner();
        let result = self
            .driver
            .wait_task(Self::task_id(&req.task_id)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::WaitTaskResponse {
            result: Some(convert::exit_result(&result)),
            err: result.err.unwrap_or_default(),
        }))
    }

    async fn stop_task(
        &self,
        req: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let req = req.into_inner();
        let timeout = convert::duration(req.timeout.as_ref());
        self.driver
            .stop_task(Self::task_id(&req.task_id)?, timeout, req.signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        req: Request<pb::DestroyTaskRequest>,
    ) -> Result<Response<pb::DestroyTaskResponse>, Status> {
        let req = req.into_inner();
        self.driver
            .destroy_task(Self::task_id(&req.task_id)?, req.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        req: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        let req = req.into_inner();
        let task = self
            .driver
            .inspect_task(Self::task_id(&req.task_id)?)
            .map_err(to_status)?;
        let exit = task.exit();
        let status = pb::TaskStatus {
            id: task.id.clone(),
            name: task.name.clone(),
            state: if exit.is_some() {
                pb::TaskState::Exited
            } else {
                pb::TaskState::Running
            } as i32,
            started_at: Some(convert::timestamp(task.started_at)),
            completed_at: Some(
                exit.as_ref()
                    .map_or(convert::GO_ZERO_TIME, |(_, at)| convert::timestamp(*at)),
            ),
            result: Some(
                exit.as_ref()
                    .map(|(r, _)| convert::exit_result(r))
                    .unwrap_or_default(),
            ),
        };
        Ok(Response::new(pb::InspectTaskResponse {
            task: Some(status),
            driver: Some(pb::TaskDriverStatus::default()),
            network_override: task
                .network_override()
                .as_ref()
                .map(convert::network_override),
        }))
    }

    type TaskStatsStream = RpcStream<pb::TaskStatsResponse>;

    /// Usage of the task's process groups every `collection_interval`
    /// (default 1 s), until the client cancels. After the task exits the
    /// stream stays open and silent: Nomad re-calls a closed stats stream
    /// every interval and logs each ending.
    async fn task_stats(
        &self,
        req: Request<pb::TaskStatsRequest>,
    ) -> Result<Response<Self::TaskStatsStream>, Status> {
        let req = req.into_inner();
        let task = self
            .driver
            .inspect_task(Self::task_id(&req.task_id)?)
            .map_err(to_status)?;
        let interval = match convert::duration(req.collection_interval.as_ref()) {
            d if d.is_zero() => Duration::from_secs(1),
            d => d.max(Duration::from_millis(50)),
        };
        let processes = self.driver.host().processes.clone();
        let driver = self.driver.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut total_rates = procstats::RateTracker::default();
            let mut pid_rates: HashMap<u32, procstats::RateTracker> = HashMap::new();
            // Until the guest says it does not measure this task itself.
            let mut ask_guest = true;
            loop {
                if task.exit().is_none() && ask_guest {
                    match driver.task_stats(&task.id).await {
                        Ok(Some(usage)) => {
                            let msg = pb::TaskStatsResponse {
                                stats: Some(pb::TaskStats {
                                    id: task.id.clone(),
                                    timestamp: Some(convert::timestamp(
                                        std::time::SystemTime::now(),
                                    )),
                                    agg_resource_usage: Some(convert::guest_usage(&usage)),
                                    resource_usage_by_pid: HashMap::new(),
                                }),
                            };
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => ask_guest = false,
                        // A failed sample is skipped, not fatal to the stream.
                        Err(e) => {
                            tracing::warn!(task_id = %task.id, error = %e, "task-stats failed")
                        }
                    }
                }
                if task.exit().is_none() && !ask_guest {
                    let groups: HashSet<u32> =
                        processes.of_task(&task.id).iter().map(|p| p.pid).collect();
                    let sampled =
                        tokio::task::spawn_blocking(move || procstats::sample_groups(&groups))
                            .await;
                    if let Ok((total, by_pid)) = sampled {
                        let now = Instant::now();
                        let agg = convert::resource_usage(&total, &total_rates.rates(now, total));
                        pid_rates.retain(|pid, _| by_pid.contains_key(pid));
                        let per_pid = by_pid
                            .iter()
                            .map(|(pid, u)| {
                                let r = pid_rates.entry(*pid).or_default().rates(now, *u);
                                (pid.to_string(), convert::resource_usage(u, &r))
                            })
                            .collect();
                        let msg = pb::TaskStatsResponse {
                            stats: Some(pb::TaskStats {
                                id: task.id.clone(),
                                timestamp: Some(convert::timestamp(std::time::SystemTime::now())),
                                agg_resource_usage: Some(agg),
                                resource_usage_by_pid: per_pid,
                            }),
                        };
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TaskEventsStream = RpcStream<pb::DriverTaskEvent>;

    async fn task_events(
        &self,
        _: Request<pb::TaskEventsRequest>,
    ) -> Result<Response<Self::TaskEventsStream>, Status> {
        let mut events = self.driver.host().events.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            if tx.send(Ok(convert::task_event(&ev))).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(dropped = n, "task events stream fell behind; events dropped");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn signal_task(
        &self,
        req: Request<pb::SignalTaskRequest>,
    ) -> Result<Response<pb::SignalTaskResponse>, Status> {
        let req = req.into_inner();
        self.driver
            .signal_task(Self::task_id(&req.task_id)?, req.signal)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        req: Request<pb::ExecTaskRequest>,
    ) -> Result<Response<pb::ExecTaskResponse>, Status> {
        let req = req.into_inner();
        let timeout = convert::duration(req.timeout.as_ref());
        let (stdout, stderr, result) = self
            .driver
            .exec_task(Self::task_id(&req.task_id)?, req.command, timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ExecTaskResponse {
            stdout,
            stderr,
            result: Some(convert::exit_result(&result)),
        }))
    }

    type ExecTaskStreamingStream = RpcStream<pb::ExecTaskStreamingResponse>;

    /// `nomad alloc exec`: the first message carries the setup; later ones
    /// carry stdin, terminal sizes or nothing (heartbeats). Output goes back
    /// as it comes, each stream's end is marked, and the last message
    /// carries the exit result.
    async fn exec_task_streaming(
        &self,
        req: Request<Streaming<pb::ExecTaskStreamingRequest>>,
    ) -> Result<Response<Self::ExecTaskStreamingStream>, Status> {
        use crate::caps::exec::{self, ExecInput, ExecOutput};
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("exec stream ended before its setup message")
        })?;
        let setup = first
            .setup
            .ok_or_else(|| Status::invalid_argument("the first exec message must carry setup"))?;
        let cmd = self
            .driver
            .exec_command(Self::task_id(&setup.task_id)?, setup.command)
            .await
            .map_err(to_status)?;

        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let (resp_tx, resp_rx) = mpsc::channel(64);
        let to_input = |m: pb::ExecTaskStreamingRequest| {
            let mut inputs = Vec::new();
            if let Some(size) = m.tty_size {
                inputs.push(ExecInput::Resize {
                    rows: size.height.clamp(0, u16::MAX as i32) as u16,
                    cols: size.width.clamp(0, u16::MAX as i32) as u16,
                });
            }
            if let Some(stdin) = m.stdin {
                if !stdin.data.is_empty() {
                    inputs.push(ExecInput::Stdin(stdin.data));
                }
                if stdin.close {
                    inputs.push(ExecInput::CloseStdin);
                }
            }
            inputs
        };
        let initial_size = first.tty_size.map(|size| {
            (
                size.height.clamp(0, u16::MAX as i32) as u16,
                size.width.clamp(0, u16::MAX as i32) as u16,
            )
        });
        for i in to_input(pb::ExecTaskStreamingRequest {
            setup: None,
            tty_size: None,
            ..first
        }) {
            let _ = in_tx.send(i).await;
        }
        // Set once the response side is finished (command done, or client
        // gone); until then a half-closed input keeps the command running.
        let (finished_tx, mut finished_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        for i in to_input(m) {
                            if in_tx.send(i).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Half-close: keep the command's input open until it ends.
                    Ok(None) => {
                        let _ = finished_rx.wait_for(|done| *done).await;
                        return;
                    }
                    // The client cancelled: dropping the input stops the command.
                    Err(_) => return,
                }
            }
        });
        tokio::spawn(async move {
            let runner = tokio::spawn(exec::run(cmd, setup.tty, initial_size, in_rx, out_tx));
            let io =
                |data: Vec<u8>, close: bool| Some(pb::ExecTaskStreamingIoOperation { data, close });
            while let Some(o) = out_rx.recv().await {
                let msg = match o {
                    ExecOutput::Stdout(d) => pb::ExecTaskStreamingResponse {
                        stdout: io(d, false),
                        ..Default::default()
                    },
                    ExecOutput::Stderr(d) => pb::ExecTaskStreamingResponse {
                        stderr: io(d, false),
                        ..Default::default()
                    },
                    ExecOutput::StdoutClosed => pb::ExecTaskStreamingResponse {
                        stdout: io(vec![], true),
                        ..Default::default()
                    },
                    ExecOutput::StderrClosed => pb::ExecTaskStreamingResponse {
                        stderr: io(vec![], true),
                        ..Default::default()
                    },
                };
                if resp_tx.send(Ok(msg)).await.is_err() {
                    let _ = finished_tx.send(true);
                    return;
                }
            }
            let _ = finished_tx.send(true);
            let last = match runner.await {
                Ok(Ok(exit)) => Ok(pb::ExecTaskStreamingResponse {
                    exited: true,
                    result: Some(pb::ExitResult {
                        exit_code: exit.code,
                        signal: exit.signal,
                        oom_killed: exit.oom_killed,
                    }),
                    ..Default::default()
                }),
                Ok(Err(e)) => Err(Status::internal(format!("exec: {e}"))),
                Err(e) => Err(Status::internal(format!("exec was lost: {e}"))),
            };
            let _ = resp_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(resp_rx))))
    }

    async fn create_network(
        &self,
        _: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "this driver does not create networks",
        ))
    }

    async fn destroy_network(
        &self,
        _: Request<pb::DestroyNetworkRequest>,
    ) -> Result<Response<pb::DestroyNetworkResponse>, Status> {
        Err(Status::unimplemented(
            "this driver does not create networks",
        ))
    }

    async fn init(
        &self,
        _: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        Ok(Response::new(pb::InitResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        Ok(Response::new(pb::ShutdownResponse {}))
    }
}
