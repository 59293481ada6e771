//! Compiles the .proto files beside this crate with protox (pure Rust), so
//! building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "nomad/plugins/base/base.proto",
        "nomad/plugins/drivers/driver.proto",
        "nomad/plugins/shared/hclspec/hcl_spec.proto",
        "nomad/plugins/shared/structs/attribute.proto",
        "nomad/plugins/shared/structs/recoverable_error.proto",
        "nomad/plugins/shared/structs/stats.proto",
        "goplugin/grpc_controller.proto",
        "goplugin/grpc_stdio.proto",
        "goplugin/grpc_broker.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
