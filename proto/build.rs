//! Compiles `proto/parkcast/v1/*.proto` with protox (pure Rust: no `protoc` to install), generates the
//! messages (prost) and the gRPC services (tonic), and writes the descriptor set that gRPC reflection
//! serves; with the `json` feature, also the messages' protobuf JSON mapping (pbjson).
//!
//! Servers and clients come from two tonic generators that differ in their codec: servers decode
//! requests with `parkcast_proto::codec::RequestCodec`, which answers an undecodable request body with
//! `INVALID_ARGUMENT` (the client sent garbage); clients keep tonic-prost's codec, for which a
//! response that does not decode stays `INTERNAL` (the server sent garbage).

use std::path::PathBuf;

use prost_build::{Service, ServiceGenerator};

const PROTO_FILES: &[&str] = &[
    "proto/parkcast/v1/events.proto",
    "proto/parkcast/v1/forecast.proto",
    "proto/parkcast/v1/serving.proto",
];

/// Clients from one generator, servers from the other, into the same module.
struct ClientsAndServers {
    clients: Box<dyn ServiceGenerator>,
    servers: Box<dyn ServiceGenerator>,
}

impl ServiceGenerator for ClientsAndServers {
    fn generate(&mut self, service: Service, buf: &mut String) {
        self.clients.generate(service.clone(), buf);
        self.servers.generate(service, buf);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.clients.finalize(buf);
        self.servers.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.clients.finalize_package(package, buf);
        self.servers.finalize_package(package, buf);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("parkcast_descriptor.bin"), encoded)?;
    let generator = ClientsAndServers {
        clients: tonic_prost_build::configure()
            .build_client(true)
            .build_server(false)
            .service_generator(),
        servers: tonic_prost_build::configure()
            .build_client(false)
            .build_server(true)
            .codec_path("crate::codec::RequestCodec")
            .service_generator(),
    };
    let mut config = prost_build::Config::new();
    config
        .out_dir(&out_dir)
        .service_generator(Box::new(generator));
    config.compile_fds(descriptors)?;
    // The protobuf JSON mapping of every message (serde impls by pbjson): what the REST face
    // answers, so JSON and gRPC clients read the same messages. Default values are written out
    // (a free count of 0 is an answer, not an absence).
    if std::env::var_os("CARGO_FEATURE_JSON").is_some() {
        let encoded = std::fs::read(out_dir.join("parkcast_descriptor.bin"))?;
        pbjson_build::Builder::new()
            .register_descriptors(&encoded)?
            .out_dir(&out_dir)
            .emit_fields()
            .build(&[".parkcast.v1"])?;
    }
    Ok(())
}
