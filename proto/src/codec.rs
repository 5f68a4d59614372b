//! The servers' codec: tonic-prost's, except that a request body that does not decode is the
//! client's error.
//!
//! tonic-prost maps every protobuf decode error to `INTERNAL`, which is right where a client
//! decodes a server's response, and wrong where a server decodes a client's request: a client that
//! sends garbage learns it from `INVALID_ARGUMENT`, and the server's `INTERNAL` count stays a
//! measure of the server's own faults. The generated servers use [`RequestCodec`] (see
//! `build.rs`); the generated clients keep [`tonic_prost::ProstCodec`].

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Encodes responses `T` and decodes requests `U` with prost; a request that does not decode gets
/// `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            prost: self.prost.decoder(),
            _request: PhantomData,
        }
    }
}

/// Decodes a request `U`; see [`RequestCodec`].
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    prost: ProstDecoder<U>,
    _request: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The prost decoder fails only on a body that is not a `U`.
        self.prost.decode(buf).map_err(|status| {
            let full = std::any::type_name::<U>();
            let name = full.rsplit("::").next().unwrap_or(full);
            Status::invalid_argument(format!(
                "the request body is not a {name}: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}
