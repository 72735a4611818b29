//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/iysgate/v1/consent.proto",
        "proto/iysgate/v1/admin.proto",
    ];
    let echo = "proto/iysgate/loadtest/v1/echo.proto";
    for proto in protos.iter().chain([&echo]) {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Reflection's descriptor set holds all three files, as before.
    let all = protox::compile(protos.iter().chain([&echo]), ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("iysgate_descriptor.bin"),
        prost::Message::encode_to_vec(&all),
    )?;
    // The load test's echo is the bare-tonic baseline: tonic-prost's codec, as shipped. It
    // imports consent.proto, so this also writes an iysgate.v1.rs (consent.proto alone, with
    // tonic-prost's codec), which the next step overwrites: keep this order.
    tonic_prost_build::configure()
        .bytes(".iysgate.v1.FilterResponse.allowed")
        .bytes(".iysgate.v1.FilterRequest.recipient_lines")
        .compile_fds(protox::compile([echo], ["proto"])?)?;
    // Our services decode with our codec: a malformed message is INVALID_ARGUMENT.
    tonic_prost_build::configure()
        .codec_path("crate::pb::codec::ProtoCodec")
        .bytes(".iysgate.v1.FilterResponse.allowed")
        .bytes(".iysgate.v1.FilterRequest.recipient_lines")
        .compile_fds(protox::compile(protos, ["proto"])?)?;
    Ok(())
}
