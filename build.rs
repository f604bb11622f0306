//! Generates the gRPC service (`src/grpc/`) from `proto/switchboard/v1/switchboard.proto`.
//!
//! protox compiles the file in Rust, so a fresh machine needs no `protoc`. The descriptor set
//! is written beside the code for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/switchboard/v1/switchboard.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("switchboard_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        // The server sends an event as bytes encoded once for every subscriber
        // (`crate::wire::grpc`), never as a struct built per stream.
        .extern_path(".switchboard.v1.Event", "crate::grpc::Encoded")
        // prost's codec with smaller buffers per stream (`crate::grpc::Codec`).
        .codec_path("crate::grpc::Codec")
        .compile_fds(descriptors)?;
    Ok(())
}
