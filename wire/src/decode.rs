//! The frames of split decoding (types 6-10): a device opens a decoder session on the server,
//! sends the hidden states at its cut position by position, and gets the next token back.

use alloc::vec::Vec;

use crate::codec::Cursor;
use crate::frame::Encoding;
use crate::WireError;

/// Longest context a session may ask for, positions.
pub const MAX_CONTEXT: u32 = 1 << 20;
/// Most rows (positions) in one STEP.
pub const MAX_STEP_ROWS: u16 = 4096;
/// Most logits a NEXT may carry.
pub const MAX_TOP_LOGITS: u16 = 1024;

/// Type 6, client: open a decoder session (after HELLO_OK).
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// Blocks run on the device (K); the server runs blocks `K..` and the head.
    pub cut: u16,
    /// Positions the session may fill.
    pub context: u32,
    /// How the hidden states of its steps are encoded (f32, f16 or int8).
    pub encoding: Encoding,
    /// 0: the server samples the next token with the parameters below and sends it; k > 0:
    /// it sends the k largest logits and the device samples.
    pub top_logits: u16,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Top-k (0: all).
    pub top_k: u32,
    /// Top-p.
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

/// Type 7, server: the session is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The session's id on this connection.
    pub session: u64,
    /// Positions it may fill.
    pub context: u32,
}

/// Type 8, client: hidden states at the cut for positions `position..position + rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The session.
    pub session: u64,
    /// Position of the first row: at most what the server holds (less rewinds the session to
    /// it, for a conversation whose history changed).
    pub position: u32,
    /// Rows (positions).
    pub rows: u16,
    /// Values per row (the model's hidden size).
    pub width: u32,
    /// Whether the answer carries the next token (or logits) after the last row; a prompt's
    /// earlier chunks do not ask.
    pub sample: bool,
    /// How `data` is encoded.
    pub encoding: Encoding,
    /// `rows * width` encoded values.
    pub data: Vec<u8>,
}

/// Type 9, server: the answer to a STEP.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    /// The session.
    pub session: u64,
    /// Positions the server now holds.
    pub held: u32,
    /// The next token (`u32::MAX` when the step did not ask or the device samples).
    pub token: u32,
    /// Microseconds the server spent on the step (queue and compute).
    pub server_us: u32,
    /// The largest logits, `(token, logit)`, best first (when the session asked for them).
    pub top: Vec<(u32, f32)>,
}

/// No token in a [`Next`].
pub const NO_TOKEN: u32 = u32::MAX;

pub(crate) fn decode_open(c: &mut Cursor<'_>) -> Result<Open, WireError> {
    let o = Open {
        cut: c.u16("open: cut")?,
        context: c.u32("open: context")?,
        encoding: Encoding::from_u8(c.u8("open: encoding")?)
            .ok_or(WireError::Invalid("open: unknown encoding"))?,
        top_logits: c.u16("open: top logits")?,
        temperature: f32::from_bits(c.u32("open: temperature")?),
        top_k: c.u32("open: top-k")?,
        top_p: f32::from_bits(c.u32("open: top-p")?),
        seed: c.u64("open: seed")?,
    };
    if o.context == 0 || o.context > MAX_CONTEXT {
        return Err(WireError::Invalid("open: context is 0 or above 2^20"));
    }
    if o.top_logits > MAX_TOP_LOGITS {
        return Err(WireError::Invalid("open: more than 1024 top logits"));
    }
    let sane = o.temperature >= 0.0 && o.temperature.is_finite() && o.top_p > 0.0 && o.top_p <= 1.0;
    if !sane {
        return Err(WireError::Invalid(
            "open: temperature or top-p out of range",
        ));
    }
    Ok(o)
}

pub(crate) fn encode_open(o: &Open, p: &mut Vec<u8>) {
    p.extend_from_slice(&o.cut.to_le_bytes());
    p.extend_from_slice(&o.context.to_le_bytes());
    p.push(o.encoding as u8);
    p.extend_from_slice(&o.top_logits.to_le_bytes());
    p.extend_from_slice(&o.temperature.to_bits().to_le_bytes());
    p.extend_from_slice(&o.top_k.to_le_bytes());
    p.extend_from_slice(&o.top_p.to_bits().to_le_bytes());
    p.extend_from_slice(&o.seed.to_le_bytes());
}

pub(crate) fn decode_opened(c: &mut Cursor<'_>) -> Result<Opened, WireError> {
    Ok(Opened {
        session: c.u64("opened: session")?,
        context: c.u32("opened: context")?,
    })
}

pub(crate) fn encode_opened(o: &Opened, p: &mut Vec<u8>) {
    p.extend_from_slice(&o.session.to_le_bytes());
    p.extend_from_slice(&o.context.to_le_bytes());
}

/// Bytes of a STEP payload before its data.
pub const STEP_PREFIX_BYTES: usize = 8 + 4 + 2 + 4 + 1 + 1;

pub(crate) fn decode_step(c: &mut Cursor<'_>, max_width: u32) -> Result<Step, WireError> {
    let session = c.u64("step: session")?;
    let position = c.u32("step: position")?;
    let rows = c.u16("step: rows")?;
    let width = c.u32("step: width")?;
    let sample = match c.u8("step: sample")? {
        0 => false,
        1 => true,
        _ => return Err(WireError::Invalid("step: sample is not 0 or 1")),
    };
    let encoding = Encoding::from_u8(c.u8("step: encoding")?)
        .ok_or(WireError::Invalid("step: unknown encoding"))?;
    if rows == 0 || rows > MAX_STEP_ROWS {
        return Err(WireError::Invalid("step: rows is 0 or above 4096"));
    }
    if width == 0 || width > max_width {
        return Err(WireError::Invalid("step: width is 0 or above the limit"));
    }
    if encoding == Encoding::U32 {
        return Err(WireError::Invalid(
            "step: hidden states are f32, f16 or int8",
        ));
    }
    let bytes = encoding
        .bytes(rows as u64 * width as u64)
        .ok_or(WireError::Invalid("step: size overflows"))?;
    if bytes != c.left() as u64 {
        return Err(WireError::Invalid(
            "step: data bytes do not match rows x width",
        ));
    }
    let data = c.take(bytes as usize, "step: data")?.to_vec();
    Ok(Step {
        session,
        position,
        rows,
        width,
        sample,
        encoding,
        data,
    })
}

pub(crate) fn encode_step(s: &Step, p: &mut Vec<u8>) -> Result<(), WireError> {
    if s.encoding.bytes(s.rows as u64 * s.width as u64) != Some(s.data.len() as u64) {
        return Err(WireError::Invalid("step: data does not match rows x width"));
    }
    p.extend_from_slice(&s.session.to_le_bytes());
    p.extend_from_slice(&s.position.to_le_bytes());
    p.extend_from_slice(&s.rows.to_le_bytes());
    p.extend_from_slice(&s.width.to_le_bytes());
    p.push(s.sample as u8);
    p.push(s.encoding as u8);
    p.extend_from_slice(&s.data);
    Ok(())
}

pub(crate) fn decode_next(c: &mut Cursor<'_>) -> Result<Next, WireError> {
    let session = c.u64("next: session")?;
    let held = c.u32("next: held")?;
    let token = c.u32("next: token")?;
    let server_us = c.u32("next: server time")?;
    let n = c.u16("next: top count")?;
    if n > MAX_TOP_LOGITS {
        return Err(WireError::Invalid("next: more than 1024 top logits"));
    }
    if c.left() != n as usize * 8 {
        return Err(WireError::Invalid(
            "next: top logits do not match their count",
        ));
    }
    let mut top = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let id = c.u32("next: top id")?;
        let logit = f32::from_bits(c.u32("next: top logit")?);
        top.push((id, logit));
    }
    Ok(Next {
        session,
        held,
        token,
        server_us,
        top,
    })
}

pub(crate) fn encode_next(n: &Next, p: &mut Vec<u8>) -> Result<(), WireError> {
    if n.top.len() > MAX_TOP_LOGITS as usize {
        return Err(WireError::Invalid("next: more than 1024 top logits"));
    }
    p.extend_from_slice(&n.session.to_le_bytes());
    p.extend_from_slice(&n.held.to_le_bytes());
    p.extend_from_slice(&n.token.to_le_bytes());
    p.extend_from_slice(&n.server_us.to_le_bytes());
    p.extend_from_slice(&(n.top.len() as u16).to_le_bytes());
    for (id, l) in &n.top {
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&l.to_bits().to_le_bytes());
    }
    Ok(())
}
