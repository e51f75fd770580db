//! The device's link to `edgecut serve` for split decoding: a [`DecodeLink`] that opens a
//! decoder session on the server (OPEN), sends each run's hidden states at the cut (STEP) and
//! reads the next token (NEXT). Any failure drops the connection and is returned, and the
//! device's [`edgecut::split::SplitDecoder`] goes on alone; the next call connects again.

use std::time::{Duration, Instant};

use edgecut::split::{DecodeLink, LinkError};
use edgecut::{Llm, SamplingParams};
use edgecut_wire::{encode_values, read_frame, write_frame, Frame, Limits, Open, Step, NO_TOKEN};

use crate::client::{open_connection, Conn};
use crate::{ClientConfig, SplitError};

/// What the link has carried so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    /// STEP frames answered.
    pub steps: usize,
    /// Positions sent.
    pub positions: usize,
    /// Bytes sent (frames, headers included).
    pub bytes_up: usize,
    /// Bytes received.
    pub bytes_down: usize,
    /// Round trips of the STEPs, summed.
    pub round_trips: Duration,
    /// The server's own time on them, summed.
    pub server: Duration,
    /// Of the STEPs, those of one row answered with a token (decode steps).
    pub decode: StepStats,
    /// Of the STEPs, those of several rows (a prompt's, or a conversation re-sent): they take
    /// longer on both the link and the server.
    pub prompt: StepStats,
    /// The smallest HELLO round trip (the link's round trip and little else; through
    /// `edgecut_server::shape`, which holds a new connection's first bytes for the handshake it
    /// cannot delay, two).
    pub hello_round_trip: Option<Duration>,
}

/// STEPs of one kind, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// STEP frames answered.
    pub steps: usize,
    /// Positions they carried.
    pub positions: usize,
    /// Bytes of their frames.
    pub bytes_up: usize,
    /// Their round trips.
    pub round_trips: Duration,
    /// The server's own time on them.
    pub server: Duration,
}

impl LinkStats {
    /// What was carried since `before` (the same link's stats earlier).
    pub fn since(&self, before: &LinkStats) -> LinkStats {
        let d = |a: &StepStats, b: &StepStats| StepStats {
            steps: a.steps - b.steps.min(a.steps),
            positions: a.positions - b.positions.min(a.positions),
            bytes_up: a.bytes_up - b.bytes_up.min(a.bytes_up),
            round_trips: a.round_trips.saturating_sub(b.round_trips),
            server: a.server.saturating_sub(b.server),
        };
        LinkStats {
            steps: self.steps - before.steps.min(self.steps),
            positions: self.positions - before.positions.min(self.positions),
            bytes_up: self.bytes_up - before.bytes_up.min(self.bytes_up),
            bytes_down: self.bytes_down - before.bytes_down.min(self.bytes_down),
            round_trips: self.round_trips.saturating_sub(before.round_trips),
            server: self.server.saturating_sub(before.server),
            decode: d(&self.decode, &before.decode),
            prompt: d(&self.prompt, &before.prompt),
            hello_round_trip: self.hello_round_trip,
        }
    }
}

/// How long [`DecoderLink::probe`] waits for a connection and its HELLO: a server that drops
/// packets instead of refusing must not hold a turn for the whole request timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A device's connection (or not) to a split decoding server.
pub struct DecoderLink {
    llm: Llm,
    cfg: ClientConfig,
    sampling: SamplingParams,
    /// The device draws under a guide's mask: the server sends its largest logits.
    guided: bool,
    conn: Option<Conn>,
    session: Option<u64>,
    /// Positions the session holds.
    held: usize,
    /// What it has carried.
    pub stats: LinkStats,
}

impl DecoderLink {
    /// A link for `llm` split at `cfg.cut` blocks, with the server sampling as `sampling` says
    /// (greedy by default); with a repetition penalty the server sends its largest logits and
    /// the device samples ([`edgecut::split::top_logits_for`] says how many, and which
    /// samplings cannot be split).
    pub fn new(llm: &Llm, cfg: ClientConfig, sampling: SamplingParams) -> DecoderLink {
        DecoderLink {
            llm: llm.clone(),
            cfg,
            sampling,
            guided: false,
            conn: None,
            session: None,
            held: 0,
            stats: LinkStats::default(),
        }
    }

    fn exchange(&mut self, f: &Frame) -> Result<Frame, SplitError> {
        let c = self.conn.as_mut().expect("connected");
        // Encoded once: its length is counted, its bytes sent.
        let bytes =
            edgecut_wire::encode_frame(f).map_err(|e| SplitError::Protocol(e.to_string()))?;
        self.stats.bytes_up += bytes.len();
        let stream = c.inner_mut();
        std::io::Write::write_all(stream, &bytes)
            .and_then(|_| std::io::Write::flush(stream))
            .map_err(|e| SplitError::Protocol(format!("sending a frame: {e}")))?;
        match read_frame(c, &Limits::default()) {
            Ok(Some(Frame::Error { code, message, .. })) => {
                Err(SplitError::Refused { code, message })
            }
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(SplitError::Protocol(
                "the server closed the connection".into(),
            )),
            Err(e) => Err(SplitError::Protocol(e.to_string())),
        }
    }

    /// Whether the server is there, and the smallest HELLO round trip so far: how `--cut auto`
    /// measures the link's round trip before a turn. Without an open session it says HELLO
    /// again on a new connection (an idle one may be gone), waiting at most [`PROBE_TIMEOUT`]
    /// for the connection and the answer; with one, the session is the proof.
    pub fn probe(&mut self) -> Result<Duration, SplitError> {
        if self.session.is_none() {
            self.conn = None;
            self.connect_within(PROBE_TIMEOUT)?;
        }
        Ok(self.stats.hello_round_trip.unwrap_or_default())
    }

    fn connect(&mut self) -> Result<(), SplitError> {
        self.connect_within(self.cfg.timeout)
    }

    /// Connects unless connected, the connection and the HELLO within `hello_timeout`.
    fn connect_within(&mut self, hello_timeout: Duration) -> Result<(), SplitError> {
        if self.conn.is_none() {
            let (c, ok, hello) = open_connection(&self.cfg, self.llm.model_id().0, hello_timeout)?;
            let best = self.stats.hello_round_trip.map_or(hello, |b| b.min(hello));
            self.stats.hello_round_trip = Some(best);
            if ok.stages as usize != self.llm.blocks() {
                return Err(SplitError::Protocol(format!(
                    "the server's model has {} blocks, this one {}",
                    ok.stages,
                    self.llm.blocks()
                )));
            }
            self.conn = Some(c);
            self.session = None;
        }
        Ok(())
    }

    fn ensure_session(&mut self) -> Result<u64, SplitError> {
        self.connect()?;
        if let Some(s) = self.session {
            return Ok(s);
        }
        let p = &self.sampling;
        // With a repetition penalty or a guide the device samples, from the server's largest
        // logits.
        let top = self.top_logits()?;
        let open = Frame::Open(Open {
            cut: self.cfg.cut as u16,
            context: self.llm.context_len() as u32,
            encoding: self.cfg.encoding,
            top_logits: top.unwrap_or(0) as u16,
            temperature: p.temperature,
            top_k: p.top_k as u32,
            top_p: p.top_p,
            seed: p.seed,
        });
        match self.exchange(&open)? {
            Frame::Opened(o) => {
                self.session = Some(o.session);
                self.held = 0;
                Ok(o.session)
            }
            other => Err(SplitError::Protocol(format!(
                "unexpected answer to OPEN: {other:?}"
            ))),
        }
    }

    fn try_step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> Result<Option<u32>, SplitError> {
        if sample && self.sampling.repetition_penalty != 1.0 {
            return Err(SplitError::Protocol(
                "with a repetition penalty the device samples: ask for the logits".into(),
            ));
        }
        let n = self.exchange_step(position, hidden, sample)?;
        match (sample, n.token) {
            (false, _) => Ok(None),
            (true, NO_TOKEN) => Err(SplitError::Protocol("NEXT without a token".into())),
            (true, t) if (t as usize) < self.llm.vocab_size() => Ok(Some(t)),
            (true, t) => Err(SplitError::Protocol(format!(
                "token {t} outside the vocabulary"
            ))),
        }
    }

    /// A sampled STEP answered with the server's largest logits (the session was opened
    /// asking for them).
    fn try_step_top(
        &mut self,
        position: usize,
        hidden: &[f32],
    ) -> Result<Vec<(u32, f32)>, SplitError> {
        let want = self.top_logits()?.ok_or_else(|| {
            SplitError::Protocol("no repetition penalty or guide: the server samples".into())
        })?;
        let n = self.exchange_step(position, hidden, true)?;
        let vocab = self.llm.vocab_size();
        if n.token != NO_TOKEN || n.top.len() != want.min(vocab) {
            return Err(SplitError::Protocol(format!(
                "asked for {want} logits, the server sent {} (token {})",
                n.top.len(),
                n.token
            )));
        }
        if let Some(&(t, _)) = n
            .top
            .iter()
            .find(|&&(t, l)| t as usize >= vocab || !l.is_finite())
        {
            return Err(SplitError::Protocol(format!(
                "logit of token {t}: outside the vocabulary or not finite"
            )));
        }
        Ok(n.top)
    }

    /// Sends one STEP and takes its NEXT, counting both.
    fn exchange_step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> Result<edgecut_wire::Next, SplitError> {
        let session = self.ensure_session()?;
        let h = self.llm.hidden_size();
        let rows = hidden.len() / h;
        let step = Frame::Step(Step {
            session,
            position: position as u32,
            rows: rows as u16,
            width: h as u32,
            sample,
            encoding: self.cfg.encoding,
            data: encode_values(hidden, self.cfg.encoding),
        });
        let (t, before) = (Instant::now(), self.stats.bytes_up);
        let answer = self.exchange(&step)?;
        let (rtt, frame_bytes) = (t.elapsed(), self.stats.bytes_up - before);
        match answer {
            Frame::Next(n) if n.session == session && n.held as usize == position + rows => {
                self.held = position + rows;
                self.stats.steps += 1;
                self.stats.positions += rows;
                self.stats.bytes_down += edgecut_wire::HEADER_BYTES + 22 + 8 * n.top.len();
                self.stats.round_trips += rtt;
                let server = Duration::from_micros(n.server_us.into());
                self.stats.server += server;
                // A one-row STEP that samples is a decode step; one that does not re-sends a
                // conversation (no head on the server), counted in the totals only.
                let kind = match (rows, sample) {
                    (1, true) => Some(&mut self.stats.decode),
                    (1, false) => None,
                    _ => Some(&mut self.stats.prompt),
                };
                if let Some(kind) = kind {
                    kind.steps += 1;
                    kind.positions += rows;
                    kind.bytes_up += frame_bytes;
                    kind.round_trips += rtt;
                    kind.server += server;
                }
                Ok(n)
            }
            other => Err(SplitError::Protocol(format!(
                "unexpected answer to STEP: {other:?}"
            ))),
        }
    }

    /// How many logits the server sends per step (`None`: it samples): the most it sends
    /// under a guide, else as the sampling needs ([`edgecut::split::top_logits_for`]).
    fn top_logits(&self) -> Result<Option<usize>, SplitError> {
        if self.guided {
            return Ok(Some(edgecut::split::MAX_TOP as usize));
        }
        edgecut::split::top_logits_for(&self.sampling)
            .map_err(|e| SplitError::Protocol(e.to_string()))
    }

    /// The sampling the server uses from the next turn on (a change opens a new session: the
    /// device re-sends the conversation).
    pub fn set_sampling(&mut self, sampling: SamplingParams) {
        if sampling != self.sampling {
            self.close();
            self.sampling = sampling;
        }
    }

    /// Blocks the device runs from the next turn on (a new cut opens a new session: the device
    /// re-sends the conversation at the new cut).
    pub fn set_cut(&mut self, cut: usize) {
        if cut != self.cfg.cut {
            // The cut travels in OPEN, not in HELLO: the connection stays.
            if let (Some(c), Some(session)) = (self.conn.as_mut(), self.session.take()) {
                if write_frame(c, &Frame::Close { session }).is_err() {
                    self.conn = None;
                }
            }
            self.cfg.cut = cut;
        }
    }

    /// Blocks the device runs.
    pub fn cut(&self) -> usize {
        self.cfg.cut
    }

    /// Closes the session on the server (when there is one) and the connection.
    pub fn close(&mut self) {
        if let (Some(c), Some(session)) = (self.conn.as_mut(), self.session) {
            let _ = write_frame(c, &Frame::Close { session });
        }
        self.conn = None;
        self.session = None;
    }
}

impl Drop for DecoderLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl DecodeLink for DecoderLink {
    fn step(
        &mut self,
        position: usize,
        hidden: &[f32],
        sample: bool,
    ) -> Result<Option<u32>, LinkError> {
        self.try_step(position, hidden, sample).map_err(|e| {
            self.conn = None;
            self.session = None;
            e.into()
        })
    }

    fn held(&self) -> Option<usize> {
        Some(if self.session.is_some() { self.held } else { 0 })
    }

    fn step_top(&mut self, position: usize, hidden: &[f32]) -> Result<Vec<(u32, f32)>, LinkError> {
        self.try_step_top(position, hidden).map_err(|e| {
            self.conn = None;
            self.session = None;
            e.into()
        })
    }

    fn set_guided(&mut self, guided: bool) {
        // The logits sent travel in OPEN: a change opens a new session.
        if guided != self.guided {
            self.close();
            self.guided = guided;
        }
    }
}
