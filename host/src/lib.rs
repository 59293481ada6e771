//! The host: a Nomad task-driver plugin whose driver logic lives in a
//! WebAssembly component (a *guest*).
//!
//! Nomad launches the host binary from its `plugin_dir`; the host performs
//! go-plugin's handshake, then serves Nomad's `BasePlugin` and `Driver` gRPC
//! services. Every answer that is driver policy (schemas, config parsing,
//! what to run, what an exit means) comes from the guest; everything
//! privileged or long-lived (processes, files, timers) is done here and lent
//! to the guest only through the WIT imports the operator granted.
//!
//! One module per concern:
//! - [`transport`]: handshake, Unix socket, go-plugin's internal services
//! - [`nomad`]: the gRPC services; the one place mapping Nomad's protobuf
//!   types and errors to the host's own
//! - [`runtime`]: wasmtime engine, component loading, precompile cache,
//!   per-call instances with deadlines and memory limits
//! - [`caps`]: one module per WIT import interface, each deny-by-default
//! - [`tasks`]: the task table, exit results, driver state
//! - [`logging`]: `tracing` rendered as hclog JSON lines for Nomad
//! - [`cli`]: flags and their help text, from one table

pub mod caps;
pub mod cli;
pub mod driver;
pub mod grants;
pub mod hcldec;
pub mod logging;
pub mod nomad;
pub mod runtime;
pub mod supervisor;
pub mod tasks;
pub mod transport;
