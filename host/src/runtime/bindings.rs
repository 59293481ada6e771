//! Host-side bindings for the `nomad:driver` WIT package (`wit/`).
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "driver-guest",
});
