//! Reading and writing frames, with every length checked before use.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_io::{Read, Write};

use crate::frame::{Activation, Encoding, ErrorCode, Frame, Hello, HelloOk, Infer, InferResult};
use crate::{WireError, HEADER_BYTES, MAGIC, VERSION};

/// Hard limits a reader enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, bytes.
    pub max_frame: u32,
    /// Largest batch.
    pub max_batch: u16,
    /// Largest token count per text.
    pub max_seq: u16,
    /// Largest activation width.
    pub max_width: u32,
}

impl Default for Limits {
    /// 64 MiB frames, batches of 256, 8192 tokens, widths of 65536.
    fn default() -> Self {
        Limits {
            max_frame: 64 << 20,
            max_batch: 256,
            max_seq: 8192,
            max_width: 1 << 16,
        }
    }
}

/// Longest error message, bytes.
const MAX_MESSAGE: usize = 1024;
/// Longest access token, bytes.
pub const MAX_TOKEN: usize = 512;
/// Largest HELLO payload: model id, encodings, token length, token.
pub const MAX_HELLO_BYTES: usize = 32 + 1 + 2 + MAX_TOKEN;
/// Bytes of an INFER payload's fixed fields (request id, cut, encoding, batch, seq, width),
/// which [`parse_infer_prefix`] reads before the rest of the payload is received.
pub const INFER_PREFIX_BYTES: usize = 19;

/// The fixed fields of an INFER payload: enough to check a request against a model, and to
/// know its full size, before its lengths and activation are received or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferShape {
    /// The client's request id.
    pub request_id: u64,
    /// Stages run on the device.
    pub cut: u16,
    /// How the activation is encoded.
    pub encoding: Encoding,
    /// Texts (1..=limit).
    pub batch: u16,
    /// Tokens per text, padded (0: per-text values).
    pub seq: u16,
    /// Values per token.
    pub width: u32,
}

impl InferShape {
    /// Values in the activation: `batch * max(seq, 1) * width`.
    pub fn values(&self) -> u64 {
        self.batch as u64 * (self.seq as u64).max(1) * self.width as u64
    }

    /// Bytes of the whole payload this shape needs (fields, lengths, activation); `None` when
    /// the size overflows.
    pub fn payload_bytes(&self) -> Option<u64> {
        let data = self.encoding.bytes(self.values())?;
        data.checked_add(INFER_PREFIX_BYTES as u64 + 2 * self.batch as u64)
    }
}

/// Reads and checks (against `limits`) the fixed fields of an INFER payload.
pub fn parse_infer_prefix(p: &[u8], limits: &Limits) -> Result<InferShape, WireError> {
    let mut c = Cursor { b: p };
    infer_prefix(&mut c, limits)
}

fn infer_prefix(c: &mut Cursor<'_>, limits: &Limits) -> Result<InferShape, WireError> {
    let request_id = c.u64("infer: request id")?;
    let cut = c.u16("infer: cut")?;
    let encoding = Encoding::from_u8(c.u8("infer: encoding")?)
        .ok_or(WireError::Invalid("infer: unknown encoding"))?;
    let batch = c.u16("infer: batch")?;
    let seq = c.u16("infer: seq")?;
    let width = c.u32("infer: width")?;
    if batch == 0 || batch > limits.max_batch {
        return Err(WireError::Invalid("infer: batch is 0 or above the limit"));
    }
    if seq > limits.max_seq || width == 0 || width > limits.max_width {
        return Err(WireError::Invalid("infer: seq or width above the limit"));
    }
    Ok(InferShape {
        request_id,
        cut,
        encoding,
        batch,
        seq,
        width,
    })
}

/// A bounds-checked reader over a payload.
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.b.len() {
            return Err(WireError::Invalid(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// Bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.b.len()
    }
    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(WireError::Invalid("bytes after the last field"))
        }
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], at_start: bool) -> Result<bool, WireError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_start => return Ok(false),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => got += n,
            Err(_) => return Err(WireError::Io),
        }
    }
    Ok(true)
}

/// Reads one frame. `Ok(None)`: the peer closed the stream between frames. The payload is
/// allocated only after its length passed `limits.max_frame`.
pub fn read_frame<R: Read>(r: &mut R, limits: &Limits) -> Result<Option<Frame>, WireError> {
    let mut h = [0u8; HEADER_BYTES];
    if !read_exact(r, &mut h, true)? {
        return Ok(None);
    }
    let (ty, len) = parse_header(&h, limits)?;
    let mut payload = vec![0u8; len];
    read_exact(r, &mut payload, false)?;
    decode_payload(ty, &payload, limits).map(Some)
}

/// Checks a frame header; returns the frame type and the payload length (at most
/// `limits.max_frame`). For readers that do their own I/O (async servers).
pub fn parse_header(h: &[u8; HEADER_BYTES], limits: &Limits) -> Result<(u8, usize), WireError> {
    if h[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(WireError::Version(h[4]));
    }
    let ty = h[5];
    if !(1..=10).contains(&ty) {
        return Err(WireError::FrameType(ty));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[8..16]);
    let len = u64::from_le_bytes(l);
    if h[6] != 0 || h[7] != 0 {
        return Err(WireError::Invalid("reserved header bytes are not zero"));
    }
    if len > limits.max_frame as u64 {
        return Err(WireError::TooLong {
            len,
            max: limits.max_frame as u64,
        });
    }
    Ok((ty, len as usize))
}

/// Decodes the payload of a frame of type `ty` (from [`parse_header`]).
pub fn decode_payload(ty: u8, p: &[u8], limits: &Limits) -> Result<Frame, WireError> {
    let mut c = Cursor { b: p };
    let frame = match ty {
        1 => {
            let mut model_id = [0u8; 32];
            model_id.copy_from_slice(c.take(32, "hello: model id")?);
            let encodings = c.u8("hello: encodings")?;
            let n = c.u16("hello: token length")? as usize;
            if n > MAX_TOKEN {
                return Err(WireError::Invalid("hello: token longer than 512 bytes"));
            }
            let token = c.take(n, "hello: token")?.to_vec();
            Frame::Hello(Hello {
                model_id,
                encodings,
                token,
            })
        }
        2 => Frame::HelloOk(HelloOk {
            stages: c.u16("hello-ok: stages")?,
            max_batch: c.u16("hello-ok: max batch")?,
        }),
        3 => {
            let InferShape {
                request_id,
                cut,
                encoding,
                batch,
                seq,
                width,
            } = infer_prefix(&mut c, limits)?;
            let mut lengths = Vec::with_capacity(batch as usize);
            for _ in 0..batch {
                let l = c.u16("infer: lengths")?;
                if l > seq || (seq > 0 && l == 0) {
                    return Err(WireError::Invalid("infer: a length is 0 or above seq"));
                }
                lengths.push(l);
            }
            let values = batch as u64 * (seq as u64).max(1) * width as u64;
            let bytes = encoding
                .bytes(values)
                .ok_or(WireError::Invalid("infer: activation size overflows"))?;
            if bytes != c.b.len() as u64 {
                return Err(WireError::Invalid(
                    "infer: activation bytes do not match batch x seq x width",
                ));
            }
            let data = c.take(bytes as usize, "infer: activation")?.to_vec();
            Frame::Infer(Infer {
                request_id,
                cut,
                activation: Activation {
                    batch,
                    seq,
                    width,
                    lengths,
                    encoding,
                    data,
                },
            })
        }
        4 => {
            let request_id = c.u64("result: request id")?;
            let rows = c.u16("result: rows")?;
            let cols = c.u32("result: cols")?;
            let server_us = c.u32("result: server time")?;
            let n = (rows as u64)
                .checked_mul(cols as u64)
                .and_then(|n| n.checked_mul(4));
            if n != Some(c.b.len() as u64) {
                return Err(WireError::Invalid(
                    "result: value bytes do not match rows x cols",
                ));
            }
            let values = c
                .take(c.b.len(), "result: values")?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Frame::Result(InferResult {
                request_id,
                rows,
                cols,
                server_us,
                values,
            })
        }
        6 => Frame::Open(crate::decode::decode_open(&mut c)?),
        7 => Frame::Opened(crate::decode::decode_opened(&mut c)?),
        8 => Frame::Step(crate::decode::decode_step(&mut c, limits.max_width)?),
        9 => Frame::Next(crate::decode::decode_next(&mut c)?),
        10 => Frame::Close {
            session: c.u64("close: session")?,
        },
        _ => {
            let request_id = c.u64("error: request id")?;
            let code = ErrorCode::from_u16(c.u16("error: code")?);
            let n = c.u16("error: message length")? as usize;
            if n > MAX_MESSAGE {
                return Err(WireError::Invalid("error: message longer than 1024 bytes"));
            }
            let message = String::from_utf8(c.take(n, "error: message")?.to_vec())
                .map_err(|_| WireError::Invalid("error: message is not UTF-8"))?;
            Frame::Error {
                request_id,
                code,
                message,
            }
        }
    };
    c.end()?;
    Ok(frame)
}

/// The payload of `f`.
fn encode_payload(f: &Frame) -> Result<Vec<u8>, WireError> {
    let mut p = Vec::new();
    match f {
        Frame::Hello(h) => {
            if h.token.len() > MAX_TOKEN {
                return Err(WireError::Invalid("hello: token longer than 512 bytes"));
            }
            p.extend_from_slice(&h.model_id);
            p.push(h.encodings);
            p.extend_from_slice(&(h.token.len() as u16).to_le_bytes());
            p.extend_from_slice(&h.token);
        }
        Frame::HelloOk(h) => {
            p.extend_from_slice(&h.stages.to_le_bytes());
            p.extend_from_slice(&h.max_batch.to_le_bytes());
        }
        Frame::Infer(i) => {
            let a = &i.activation;
            if a.lengths.len() != a.batch as usize
                || a.encoding.bytes(a.values()) != Some(a.data.len() as u64)
            {
                return Err(WireError::Invalid(
                    "infer: activation does not match its shape",
                ));
            }
            p.extend_from_slice(&i.request_id.to_le_bytes());
            p.extend_from_slice(&i.cut.to_le_bytes());
            p.push(a.encoding as u8);
            p.extend_from_slice(&a.batch.to_le_bytes());
            p.extend_from_slice(&a.seq.to_le_bytes());
            p.extend_from_slice(&a.width.to_le_bytes());
            for l in &a.lengths {
                p.extend_from_slice(&l.to_le_bytes());
            }
            p.extend_from_slice(&a.data);
        }
        Frame::Result(r) => {
            if r.values.len() as u64 != r.rows as u64 * r.cols as u64 {
                return Err(WireError::Invalid(
                    "result: values do not match rows x cols",
                ));
            }
            p.extend_from_slice(&r.request_id.to_le_bytes());
            p.extend_from_slice(&r.rows.to_le_bytes());
            p.extend_from_slice(&r.cols.to_le_bytes());
            p.extend_from_slice(&r.server_us.to_le_bytes());
            for v in &r.values {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        Frame::Open(o) => crate::decode::encode_open(o, &mut p),
        Frame::Opened(o) => crate::decode::encode_opened(o, &mut p),
        Frame::Step(st) => crate::decode::encode_step(st, &mut p)?,
        Frame::Next(n) => crate::decode::encode_next(n, &mut p)?,
        Frame::Close { session } => p.extend_from_slice(&session.to_le_bytes()),
        Frame::Error {
            request_id,
            code,
            message,
        } => {
            // Long messages are cut at a character boundary.
            let mut end = message.len().min(MAX_MESSAGE);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            p.extend_from_slice(&request_id.to_le_bytes());
            p.extend_from_slice(&(*code as u16).to_le_bytes());
            p.extend_from_slice(&(end as u16).to_le_bytes());
            p.extend_from_slice(&message.as_bytes()[..end]);
        }
    }
    Ok(p)
}

/// The bytes of one frame, header included (for writers that do their own I/O).
pub fn encode_frame(f: &Frame) -> Result<Vec<u8>, WireError> {
    let p = encode_payload(f)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + p.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, f.type_byte(), 0, 0]);
    out.extend_from_slice(&(p.len() as u64).to_le_bytes());
    out.extend_from_slice(&p);
    Ok(out)
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write>(w: &mut W, f: &Frame) -> Result<(), WireError> {
    let bytes = encode_frame(f)?;
    w.write_all(&bytes).map_err(|_| WireError::Io)?;
    w.flush().map_err(|_| WireError::Io)
}
