//! The gRPC client of `grpc://` targets, generated from the server's own
//! `proto/switchboard/v1/switchboard.proto` by protox (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "../../proto/switchboard/v1/switchboard.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
