//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is needed. The
//! load test's echo service is compiled only with the `dev-tools` feature, so a production
//! build neither generates it nor lists it in the reflection descriptor set.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/iysgate/v1/consent.proto",
        "proto/iysgate/v1/admin.proto",
    ];
    let echo = "proto/iysgate/loadtest/v1/echo.proto";
    // Cargo sets CARGO_FEATURE_<NAME> for every enabled feature of the package.
    let dev_tools = std::env::var_os("CARGO_FEATURE_DEV_TOOLS").is_some();
    for proto in protos.iter().chain([&echo]) {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Reflection's descriptor set: the shipped services, and the echo with dev-tools.
    let served: Vec<&str> = if dev_tools {
        protos.iter().copied().chain([echo]).collect()
    } else {
        protos.to_vec()
    };
    let all = protox::compile(&served, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("iysgate_descriptor.bin"),
        prost::Message::encode_to_vec(&all),
    )?;
    if dev_tools {
        // The load test's echo is the bare-tonic baseline: tonic-prost's codec, as shipped. It
        // imports consent.proto, so this also writes an iysgate.v1.rs (consent.proto alone,
        // with tonic-prost's codec), which the next step overwrites: keep this order.
        tonic_prost_build::configure()
            .bytes(".iysgate.v1.FilterResponse.allowed")
            .bytes(".iysgate.v1.FilterResponse.reason_codes")
            .bytes(".iysgate.v1.FilterRequest.recipient_lines")
            .compile_fds(protox::compile([echo], ["proto"])?)?;
    }
    // Our services decode with our codec: a malformed message is INVALID_ARGUMENT.
    tonic_prost_build::configure()
        .codec_path("crate::pb::codec::ProtoCodec")
        .bytes(".iysgate.v1.FilterResponse.allowed")
        .bytes(".iysgate.v1.FilterResponse.reason_codes")
        .bytes(".iysgate.v1.FilterRequest.recipient_lines")
        .compile_fds(protox::compile(protos, ["proto"])?)?;
    Ok(())
}
