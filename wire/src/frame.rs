//! The frames and their fields.

use alloc::string::String;
use alloc::vec::Vec;

/// How an activation's values are encoded: on the wire, and in the planner's link costs (the
/// one type for both, so a plan is made for the bytes a request really sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[repr(u8)]
pub enum Encoding {
    /// Little-endian f32.
    F32 = 0,
    /// Little-endian IEEE f16.
    F16 = 1,
    /// int8 values, then one little-endian f32 scale per block of 32 values.
    #[default]
    Int8 = 2,
    /// Little-endian u32 integers: token ids (the raw input a cut before every stage sends).
    U32 = 3,
}

/// A name that is not an [`Encoding`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoding;

impl core::fmt::Display for UnknownEncoding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown encoding: expected f32, f16 or int8")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownEncoding {}

impl core::str::FromStr for Encoding {
    type Err = UnknownEncoding;
    fn from_str(s: &str) -> Result<Self, UnknownEncoding> {
        match s {
            "f32" => Ok(Encoding::F32),
            "f16" => Ok(Encoding::F16),
            "int8" => Ok(Encoding::Int8),
            "u32" => Ok(Encoding::U32),
            _ => Err(UnknownEncoding),
        }
    }
}

impl core::fmt::Display for Encoding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl Encoding {
    /// The encoding of a wire byte.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::F32),
            1 => Some(Encoding::F16),
            2 => Some(Encoding::Int8),
            3 => Some(Encoding::U32),
            _ => None,
        }
    }

    /// The encoding's name (`f32`, `f16`, `int8`), as [`FromStr`](core::str::FromStr) reads it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Int8 => "int8",
            Encoding::U32 => "u32",
        }
    }

    /// Bytes of `n` values (`None` on overflow).
    pub fn bytes(self, n: u64) -> Option<u64> {
        match self {
            Encoding::F32 | Encoding::U32 => n.checked_mul(4),
            Encoding::F16 => n.checked_mul(2),
            Encoding::Int8 => n.checked_add(n.div_ceil(32).checked_mul(4)?),
        }
    }
}

/// A client's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The model's identity hash (SHA-256 over its metadata and tensors).
    pub model_id: [u8; 32],
    /// Bit i set: the client can send and receive [`Encoding`] i.
    pub encodings: u8,
    /// The access token (empty when the server needs none).
    pub token: Vec<u8>,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// Stages of the model (a cut K is in 0..=stages).
    pub stages: u16,
    /// Largest batch the server takes in one request.
    pub max_batch: u16,
}

/// The activation at the cut, `[batch, seq, width]` values (or `[batch, width]` when
/// `seq == 0`), with each text's real length (the rest is padding).
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// Texts.
    pub batch: u16,
    /// Tokens per text (padded); 0 for per-text values.
    pub seq: u16,
    /// Values per token (per text when `seq == 0`).
    pub width: u32,
    /// Real tokens of each text (`batch` entries, each at most `seq`).
    pub lengths: Vec<u16>,
    /// How `data` is encoded.
    pub encoding: Encoding,
    /// The encoded values.
    pub data: Vec<u8>,
}

impl Activation {
    /// Values in the activation.
    pub fn values(&self) -> u64 {
        self.batch as u64 * (self.seq as u64).max(1) * self.width as u64
    }
}

/// A request: run stages `cut..` on `activation`. With `cut == 0` the activation is the raw
/// input: `width == 1`, token ids as [`Encoding::U32`].
#[derive(Debug, Clone, PartialEq)]
pub struct Infer {
    /// The client's id for the request (echoed in the answer).
    pub request_id: u64,
    /// Stages run on the device.
    pub cut: u16,
    /// The activation at the cut.
    pub activation: Activation,
}

/// The answer to an [`Infer`]: `rows x cols` f32 values (a vector or logits per text).
#[derive(Debug, Clone, PartialEq)]
pub struct InferResult {
    /// The request's id.
    pub request_id: u64,
    /// Rows (texts).
    pub rows: u16,
    /// Values per row.
    pub cols: u32,
    /// Microseconds the server held the request, from reading it to answering (queue and
    /// compute): with the round trip it measures, the client separates the link from the server.
    pub server_us: u32,
    /// `rows * cols` values.
    pub values: Vec<f32>,
}

/// Why the server refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame is malformed.
    BadFrame = 1,
    /// The token is missing or wrong.
    Unauthorized = 2,
    /// The server runs a different model.
    WrongModel = 3,
    /// The cut, shape or encoding does not fit the model.
    BadRequest = 4,
    /// The server is overloaded or shutting down; retry or run locally.
    Unavailable = 5,
    /// The server failed.
    Internal = 6,
}

impl ErrorCode {
    /// The code of a wire value (unknown codes read as `Internal`).
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::Unauthorized,
            3 => ErrorCode::WrongModel,
            4 => ErrorCode::BadRequest,
            5 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// Every frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Type 1.
    Hello(Hello),
    /// Type 2.
    HelloOk(HelloOk),
    /// Type 3.
    Infer(Infer),
    /// Type 4.
    Result(InferResult),
    /// Type 5: `request_id` 0 for connection-level errors.
    Error {
        /// The request, or 0.
        request_id: u64,
        /// What went wrong.
        code: ErrorCode,
        /// In words (UTF-8, at most 1024 bytes).
        message: String,
    },
    /// Type 6: open a decoder session.
    Open(crate::Open),
    /// Type 7: the session is open.
    Opened(crate::Opened),
    /// Type 8: hidden states at the cut.
    Step(crate::Step),
    /// Type 9: the answer to a step.
    Next(crate::Next),
    /// Type 10: close a decoder session.
    Close {
        /// The session.
        session: u64,
    },
}

impl Frame {
    /// The frame's type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Frame::Hello(_) => 1,
            Frame::HelloOk(_) => 2,
            Frame::Infer(_) => 3,
            Frame::Result(_) => 4,
            Frame::Error { .. } => 5,
            Frame::Open(_) => 6,
            Frame::Opened(_) => 7,
            Frame::Step(_) => 8,
            Frame::Next(_) => 9,
            Frame::Close { .. } => 10,
        }
    }
}
