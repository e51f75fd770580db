//! edgecut's split-inference wire protocol: versioned, length-prefixed frames between a device
//! and `edgecut serve` (specification: `docs/wire.md`).
//!
//! `no_std` with `alloc`, over [`embedded_io`] readers and writers, so the device side builds
//! for microcontrollers; the `std` feature adds adapters for sockets. The decoder trusts
//! nothing: the header is checked (magic, version, type, length against [`Limits`]) before the
//! payload is allocated, and every count, dimension and product inside the payload is checked
//! against the bytes present and the limits before anything sized by it is allocated.
//! The opposite of llama.cpp's RPC server, whose network-supplied tensor descriptors were
//! trusted.

#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod codec;
mod decode;
mod frame;
mod values;

pub use codec::{
    decode_payload, encode_frame, parse_header, parse_infer_prefix, read_frame, write_frame,
    InferShape, Limits, INFER_PREFIX_BYTES, MAX_HELLO_BYTES, MAX_TOKEN,
};
pub use decode::{
    Next, Open, Opened, Step, MAX_CONTEXT, MAX_STEP_ROWS, MAX_TOP_LOGITS, NO_TOKEN,
    STEP_PREFIX_BYTES,
};
pub use frame::{
    Activation, Encoding, ErrorCode, Frame, Hello, HelloOk, Infer, InferResult, UnknownEncoding,
};
pub use values::{decode_ids, decode_values, encode_ids, encode_values, INT8_BLOCK};

/// Frame magic, the first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"ECW1";
/// Protocol version this crate speaks (3: token ids at cut 0 travel as u32).
pub const VERSION: u8 = 3;
/// Bytes of a frame header: magic, version, type, two reserved bytes, payload length (u64 LE).
pub const HEADER_BYTES: usize = 16;

/// What is wrong with a frame or the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The peer closed the stream or a read/write failed.
    Io,
    /// The stream ended inside a frame.
    Truncated,
    /// The first bytes are not [`MAGIC`].
    BadMagic,
    /// A protocol version this side does not speak.
    Version(u8),
    /// An unknown frame type.
    FrameType(u8),
    /// A payload longer than [`Limits::max_frame`].
    TooLong {
        /// Bytes announced.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A field of the payload is invalid (its name and why).
    Invalid(&'static str),
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Io => f.write_str("connection closed or I/O error"),
            WireError::Truncated => f.write_str("stream ended inside a frame"),
            WireError::BadMagic => f.write_str("not an edgecut frame (bad magic)"),
            WireError::Version(v) => write!(f, "protocol version {v} (this side speaks {VERSION})"),
            WireError::FrameType(t) => write!(f, "unknown frame type {t}"),
            WireError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            WireError::Invalid(why) => write!(f, "invalid frame: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}
