//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/iysgate/v1/consent.proto",
        "proto/iysgate/v1/admin.proto",
        "proto/iysgate/loadtest/v1/echo.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("iysgate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".iysgate.v1.FilterResponse.allowed")
        .bytes(".iysgate.v1.FilterRequest.recipient_lines")
        .compile_fds(fds)?;
    Ok(())
}
