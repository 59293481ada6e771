//! go-plugin's internal services: controller (Shutdown), stdio and broker.

use std::pin::Pin;
use std::sync::Arc;

use nomad_plugin_proto::goplugin::{
    ConnInfo, Empty, StdioData,
    grpc_broker_server::{GrpcBroker, GrpcBrokerServer},
    grpc_controller_server::{GrpcController, GrpcControllerServer},
    grpc_stdio_server::{GrpcStdio, GrpcStdioServer},
};
use tokio::sync::Notify;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug)]
pub struct Controller {
    shutdown: Arc<Notify>,
}

pub fn controller(shutdown: Arc<Notify>) -> GrpcControllerServer<Controller> {
    GrpcControllerServer::new(Controller { shutdown })
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("shutdown requested by the plugin client");
        let shutdown = self.shutdown.clone();
        // Answer first, then stop: the client waits for this reply.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            shutdown.notify_waiters();
            shutdown.notify_one();
        });
        Ok(Response::new(Empty {}))
    }
}

/// Stdio forwarding: the host never writes task output to its own stdio,
/// so the stream stays open and silent until the client leaves.
#[derive(Debug)]
pub struct Stdio;

pub fn stdio() -> GrpcStdioServer<Stdio> {
    GrpcStdioServer::new(Stdio)
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = RpcStream<StdioData>;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

/// The connection broker: Nomad drivers never dial through it; incoming
/// messages are read and dropped so the client's stream stays healthy.
#[derive(Debug)]
pub struct Broker;

pub fn broker() -> GrpcBrokerServer<Broker> {
    GrpcBrokerServer::new(Broker)
}

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = RpcStream<ConnInfo>;

    async fn start_stream(
        &self,
        req: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = req.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(info)) = incoming.next().await {
                tracing::debug!(service_id = info.service_id, "broker message ignored");
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}
