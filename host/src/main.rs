//! `nomad-driver-wasm`: the host binary Nomad launches from its plugin_dir.

use std::process::ExitCode;
use std::sync::Arc;

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::driver::Driver;
use nomad_wasm_host::nomad::NomadPlugin;
use nomad_wasm_host::runtime::{self, CallLimits, Guest};
use nomad_wasm_host::{cli, logging, transport};

fn main() -> ExitCode {
    // Supervisor mode first: it must stay tiny (no runtime, no wasmtime).
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref()
        == Some(std::ffi::OsStr::new(
            nomad_wasm_host::supervisor::SUBCOMMAND,
        ))
    {
        return match args.next() {
            Some(dir) => nomad_wasm_host::supervisor::run(std::path::Path::new(&dir)),
            None => ExitCode::from(2),
        };
    }
    let exe =
        std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("nomad-driver-wasm"));
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "nomad-driver-wasm".into());

    let opts = match cli::parse_invocation(std::env::args().skip(1)) {
        Ok(cli::Invocation::Plugin(o)) => o,
        Ok(cli::Invocation::Command {
            command,
            args,
            options,
        }) => return run_command(&binary, command, &args, &options),
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{}", cli::help(&binary));
        return ExitCode::SUCCESS;
    }
    if opts.version {
        println!("{binary} {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = transport::check_env(|k| std::env::var(k).ok()) {
        match e {
            transport::HandshakeError::NoCookie => {
                eprint!("{}", transport::not_a_command_text(&binary));
                eprint!("\nLocal commands:\n{}", cli::commands_list());
            }
            other => eprintln!("{binary}: {other}"),
        }
        return ExitCode::from(1);
    }
    logging::init(opts.log_level.as_deref());
    raise_open_files_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(opts, &exe)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// A local command (no Nomad): human-readable logs on stderr, warnings
/// and errors only unless --log-level or NOMAD_WASM_LOG says otherwise.
fn run_command(
    binary: &str,
    command: &cli::Command,
    args: &[String],
    options: &cli::Options,
) -> ExitCode {
    if options.help {
        print!("{}", cli::command_help(binary, command));
        return ExitCode::SUCCESS;
    }
    let filter = match options.log_level.as_deref() {
        Some(l) => tracing_subscriber::EnvFilter::try_new(l).ok(),
        None => tracing_subscriber::EnvFilter::try_from_env(logging::LOG_ENV).ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
    match cli::commands::dispatch(binary, command, args, options) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(opts: cli::Options, exe: &std::path::Path) -> Result<(), String> {
    let guest_path = cli::resolve_guest(opts.guest.as_deref(), exe)?;
    let cache_dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(cli::default_cache_dir);
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(cli::default_state_dir);
    let host = cli::commands::host_context(&guest_path, &opts, state_dir)?;
    let limits = CallLimits {
        deadline: opts.call_timeout,
        max_memory: opts.max_memory_mib << 20,
    };
    let engine = runtime::engine().map_err(|e| e.to_string())?;
    let guest = Guest::load(
        &engine,
        &guest_path,
        cache_dir.as_deref(),
        host.clone(),
        limits,
    )
    .map_err(|e| e.to_string())?;
    let driver = Arc::new(Driver::new(Arc::new(guest)).map_err(|e| e.to_string())?);
    let plugin = NomadPlugin::new(driver.clone(), opts.fingerprint_interval)?;
    reload_on_sighup(driver, engine, guest_path, cache_dir, host, limits);
    transport::serve(plugin).await.map_err(|e| e.to_string())
}

/// SIGHUP re-reads the guest file: new tasks get the new build, running
/// tasks keep theirs. A build that fails to load, renames the driver or
/// rejects the agent config is refused and the old one stays.
fn reload_on_sighup(
    driver: Arc<Driver>,
    engine: wasmtime::Engine,
    path: std::path::PathBuf,
    cache_dir: Option<std::path::PathBuf>,
    host: Arc<HostContext>,
    limits: CallLimits,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; guest reload is off");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(guest = %path.display(), "SIGHUP: reloading the guest");
            let (engine, path2, cache, host) = (
                engine.clone(),
                path.clone(),
                cache_dir.clone(),
                host.clone(),
            );
            let loaded = tokio::task::spawn_blocking(move || {
                Guest::load(&engine, &path2, cache.as_deref(), host, limits)
            })
            .await;
            let guest = match loaded {
                Ok(Ok(g)) => g,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload refused; the running guest stays");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload was lost; the running guest stays");
                    continue;
                }
            };
            if let Err(e) = driver
                .reload(Arc::new(guest), NomadPlugin::check_manifest)
                .await
            {
                tracing::error!(error = %e, "reload refused; the running guest stays");
            }
        }
    });
}

/// Each running task holds a few descriptors in the host (its supervisor's
/// pipe, pidfds); the default soft limit of 1024 would cap a node near a
/// thousand tasks. Raise the soft limit to the hard one, as Go programs do.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}
