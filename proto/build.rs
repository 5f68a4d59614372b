//! Compiles `proto/parkcast/v1/*.proto` with protox (pure Rust: no `protoc` to install), generates the
//! messages (prost) and the gRPC services (tonic), and writes the descriptor set that gRPC reflection
//! serves.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "proto/parkcast/v1/events.proto",
    "proto/parkcast/v1/forecast.proto",
    "proto/parkcast/v1/serving.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("parkcast_descriptor.bin"), encoded)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
