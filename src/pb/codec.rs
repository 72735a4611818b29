//! The protobuf codec of every iysgate service (selected in `build.rs`): tonic-prost's, except
//! that a message that does not decode is the sender's fault, `INVALID_ARGUMENT`, rather than
//! tonic-prost's `INTERNAL` (which tells a caller to retry or page someone, and hides that
//! the request itself is wrong). Encoding is tonic-prost's, unchanged.
//!
//! The generated clients use it too: there a response that does not decode is answered
//! `INVALID_ARGUMENT` with the same "malformed message" text.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `application/grpc+proto` via prost; decode errors are `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes a `U`; a malformed message is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's message names the message and field and what is wrong (e.g.
        // "CheckRequest.brand_code: invalid varint"), never a field's value.
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prost_errors_name_no_value() {
        // The error text is what a caller sees: message and field, no content.
        let err = <crate::pb::CheckRequest as prost::Message>::decode(&[0x12u8, 0x05, b'5'][..])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CheckRequest.recipient"), "{text}");
        assert!(!text.contains('5'), "{text}");
    }
}
