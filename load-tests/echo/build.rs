//! The echo service from the repository's own proto files (the same messages as Check), with
//! protox: no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/iysgate/loadtest/v1/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=../../proto/iysgate/v1/consent.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(protox::compile([proto], ["../../proto"])?)?;
    Ok(())
}
