//! The protobuf and gRPC code generated from `proto/iysgate/v1` (protox in `build.rs`), the
//! descriptor set served by reflection, and the codec our services decode with. A leaf: the
//! API services, the write path's input and the command-line client all speak these types.

pub mod codec;
pub mod convert;

#[allow(clippy::pedantic, missing_docs)]
mod generated {
    tonic::include_proto!("iysgate.v1");
}

pub use generated::*;

/// The encoded descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/iysgate_descriptor.bin"));
