//! go-plugin transport: the handshake, the private Unix socket, and
//! go-plugin's own services (health, controller, stdio, broker).
//!
//! Contract with Nomad (see NOMAD-PROTOCOL.md section 1): the process refuses
//! to run without Nomad's magic cookie, accepts app protocol 2 only, prints
//! `1|2|unix|<socket>|grpc|` as the very first stdout line, ignores SIGINT,
//! and exits within two seconds of `GRPCController.Shutdown` or SIGTERM.
//!
//! Nomad never enables go-plugin AutoMTLS, but if a go-plugin client does
//! (`PLUGIN_CLIENT_CERT` set), the socket serves mutual TLS the way go-plugin
//! does and the handshake line carries the server certificate in field 6
//! (see `mtls`). Without it, the socket is plain h2c as Nomad expects.

mod goplugin;
pub mod mtls;

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::UnixListenerStream;

use crate::nomad::NomadPlugin;
use nomad_plugin_proto::base::base_plugin_server::BasePluginServer;
use nomad_plugin_proto::drivers::driver_server::DriverServer;

pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL: u32 = 1;
/// Nomad's plugin app protocol ("0.9+ gRPC").
pub const APP_PROTOCOL: u32 = 2;

/// How long in-flight calls get after a shutdown request before the
/// process exits anyway (Nomad SIGKILLs at 2 s).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

/// Why the handshake cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not launched by Nomad (the {MAGIC_COOKIE_KEY} variable is missing or wrong)")]
    NoCookie,
    #[error(
        "Nomad offered plugin protocol version(s) {offered:?} but this plugin speaks only version {APP_PROTOCOL}; \
         use a Nomad release from 0.9 on"
    )]
    Protocol { offered: String },
    #[error("cannot create the plugin socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Mtls(#[from] mtls::MtlsError),
}

/// What a person sees when they run the binary by hand.
pub fn not_a_command_text(binary: &str) -> String {
    format!(
        "This binary is a Nomad task driver plugin, not a program to run directly.\n\
         \n\
         Nomad starts it from its plugin directory. To install it:\n\
         \x20 1. copy `{binary}` and your driver guest (.wasm) into the agent's plugin_dir\n\
         \x20 2. add to the agent config:\n\
         \x20      plugin \"{binary}\" {{\n\
         \x20        args = [\"--guest\", \"hello.wasm\", \"--allow-exec\", \"/usr/bin/bash\"]\n\
         \x20      }}\n\
         \x20 3. restart the Nomad agent.\n\
         \n\
         Run `{binary} --help` for the flags and the local commands.\n"
    )
}

/// Checks the environment Nomad's plugin loader sets (and, when a go-plugin
/// client asks for AutoMTLS, that its certificate is usable).
pub fn check_env(env: impl Fn(&str) -> Option<String>) -> Result<(), HandshakeError> {
    if env(MAGIC_COOKIE_KEY).as_deref() != Some(MAGIC_COOKIE_VALUE) {
        return Err(HandshakeError::NoCookie);
    }
    if let Some(offered) = env("PLUGIN_PROTOCOL_VERSIONS") {
        let speaks = offered
            .split(',')
            .any(|v| v.trim().parse::<u32>().ok() == Some(APP_PROTOCOL));
        if !speaks {
            return Err(HandshakeError::Protocol { offered });
        }
    }
    if let Some(pem) = env(mtls::CLIENT_CERT_ENV).filter(|p| !p.is_empty()) {
        mtls::parse_client_certs(&pem)?;
    }
    Ok(())
}

/// The AutoMTLS set-up when a go-plugin client asked for it (an empty
/// `PLUGIN_CLIENT_CERT` counts as unset, as in go-plugin).
fn auto_mtls_from_env() -> Result<Option<mtls::AutoMtls>, HandshakeError> {
    match std::env::var_os(mtls::CLIENT_CERT_ENV) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let pem = v
                .into_string()
                .map_err(|_| mtls::MtlsError::BadClientCert("the value is not UTF-8".into()))?;
            Ok(Some(mtls::AutoMtls::new(&pem)?))
        }
    }
}

/// A fresh private (0700) directory holding the plugin socket, removed when
/// dropped.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    pub fn create() -> std::io::Result<Self> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let dir = base.join(format!("nomad-driver-wasm-{:016x}", rand::random::<u64>()));
            // mkdir fails if it exists, so the directory is ours alone.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(SocketDir { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(
            "could not find a free socket directory name",
        ))
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("plugin.sock")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The handshake line go-plugin's client parses (no AutoMTLS).
pub fn handshake_line(socket: &Path) -> String {
    handshake_line_with_cert(socket, "")
}

/// The handshake line with `server_cert` (go-plugin AutoMTLS: the server
/// certificate's DER in unpadded base64, or empty) as field 6.
pub fn handshake_line_with_cert(socket: &Path, server_cert: &str) -> String {
    format!(
        "{CORE_PROTOCOL}|{APP_PROTOCOL}|unix|{}|grpc|{server_cert}\n",
        socket.display()
    )
}

/// Binds the socket, prints the handshake line and serves until Shutdown
/// or SIGTERM. Returns when it is time to exit.
pub async fn serve(plugin: NomadPlugin) -> Result<(), HandshakeError> {
    let auto_mtls = auto_mtls_from_env()?;
    let dir = SocketDir::create().map_err(HandshakeError::Socket)?;
    let socket = dir.socket_path();
    let listener = UnixListener::bind(&socket).map_err(HandshakeError::Socket)?;

    let shutdown = Arc::new(Notify::new());
    spawn_signal_handlers(shutdown.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(goplugin::controller(shutdown.clone()))
        .add_service(goplugin::stdio())
        .add_service(goplugin::broker())
        .add_service(BasePluginServer::new(plugin.clone()).max_decoding_message_size(usize::MAX))
        .add_service(DriverServer::new(plugin).max_decoding_message_size(usize::MAX));

    // Nothing may reach stdout before this line.
    {
        let mut out = std::io::stdout().lock();
        let server_cert = auto_mtls.as_ref().map_or("", |m| m.handshake_field());
        let _ = out.write_all(handshake_line_with_cert(&socket, server_cert).as_bytes());
        let _ = out.flush();
    }
    tracing::info!(socket = %socket.display(), auto_mtls = auto_mtls.is_some(), "plugin serving");

    let stop = shutdown.clone();
    let stop_signal = async move {
        stop.notified().await;
    };
    let mut server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &auto_mtls {
            None => Box::pin(
                router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop_signal),
            ),
            Some(m) => {
                Box::pin(router.serve_with_incoming_shutdown(m.incoming(listener), stop_signal))
            }
        };
    tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }
        _ = async {
            shutdown.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::debug!("in-flight calls did not finish in time; exiting anyway");
        }
    }
    tracing::info!("plugin exiting");
    drop(dir);
    Ok(())
}

/// SIGTERM shuts down; SIGINT is ignored (it is meant for the agent, whose
/// process group the plugin shares). A handler, not SIG_IGN: an ignored
/// disposition would be inherited by every task the host starts.
fn spawn_signal_handlers(shutdown: Arc<Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::spawn(async move {
                term.recv().await;
                tracing::info!("SIGTERM received; shutting down");
                shutdown.notify_waiters();
                shutdown.notify_one();
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGTERM"),
    }
    match signal(SignalKind::interrupt()) {
        Ok(mut int) => {
            tokio::spawn(async move {
                while int.recv().await.is_some() {
                    tracing::debug!("SIGINT ignored (it belongs to the Nomad agent)");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGINT"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cookie_is_required() {
        assert!(matches!(check_env(env(&[])), Err(HandshakeError::NoCookie)));
        assert!(matches!(
            check_env(env(&[(MAGIC_COOKIE_KEY, "nope")])),
            Err(HandshakeError::NoCookie)
        ));
        assert!(check_env(env(&[(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)])).is_ok());
    }

    #[test]
    fn protocol_2_must_be_offered() {
        let ok = check_env(env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "1, 2"),
        ]));
        assert!(ok.is_ok());
        let err = check_env(env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("version(s) \"1\""), "{err}");
    }

    #[test]
    fn bad_auto_mtls_client_cert_is_refused_up_front() {
        let cookie = (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE);
        // Empty counts as unset (go-plugin does the same).
        assert!(check_env(env(&[cookie, (mtls::CLIENT_CERT_ENV, "")])).is_ok());
        let err = check_env(env(&[cookie, (mtls::CLIENT_CERT_ENV, "garbage")])).unwrap_err();
        assert!(matches!(err, HandshakeError::Mtls(_)), "{err:?}");
        assert!(err.to_string().contains("PLUGIN_CLIENT_CERT"), "{err}");
    }

    #[test]
    fn handshake_line_carries_the_server_cert_in_field_6() {
        let line = handshake_line_with_cert(Path::new("/tmp/x/plugin.sock"), "QUJD");
        assert_eq!(line, "1|2|unix|/tmp/x/plugin.sock|grpc|QUJD\n");
        assert_eq!(handshake_line(Path::new("/s")), "1|2|unix|/s|grpc|\n");
    }

    #[test]
    fn socket_dir_is_private_and_removed() {
        let dir = SocketDir::create().unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            handshake_line(&dir.socket_path()),
            format!("1|2|unix|{}/plugin.sock|grpc|\n", path.display())
        );
        drop(dir);
        assert!(!path.exists());
    }
}
