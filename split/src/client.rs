//! The device side of split inference, blocking (for apps and the CLI): runs the stages before
//! the cut, sends the activation to `edgecut serve`, and falls back to running everything on
//! the device when the server is unreachable, refuses, or fails.

use std::borrow::Borrow;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use edgecut::Session;
use edgecut_wire::{read_frame, write_frame, Encoding, Frame, Hello, HelloOk, Limits};
use embedded_io_adapters::std::FromStd;

use crate::SplitError;

/// Where and how to split.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of `edgecut serve`.
    pub server: String,
    /// Access token (empty: none).
    pub token: Vec<u8>,
    /// Stages run on the device (K).
    pub cut: usize,
    /// Activation encoding on the wire.
    pub encoding: Encoding,
    /// Connect and per-request timeout.
    pub timeout: Duration,
    /// TLS to the server (none: plain TCP).
    pub tls: Option<crate::TlsClient>,
    /// Choose the cut per request from profiles and the measured link (`--cut auto`); `cut`
    /// is then unused.
    pub auto: Option<crate::AutoCut>,
}

/// A byte stream to the server: plain TCP or TLS over it.
pub(crate) trait Link: Read + Write + Send {}
/// A frame reader and writer over a [`Link`].
pub(crate) type Conn = FromStd<Box<dyn Link>>;
impl<T: Read + Write + Send> Link for T {}

/// A stream to the server past its HELLO (plain TCP or TLS, per `cfg`): the stream, the
/// server's HELLO_OK, and the HELLO's round trip. The connection and the HELLO wait at most
/// `hello_timeout` (and `cfg.timeout`); requests after it, `cfg.timeout`.
pub(crate) fn open_connection(
    cfg: &ClientConfig,
    model_id: [u8; 32],
    hello_timeout: Duration,
) -> Result<(Conn, HelloOk, Duration), SplitError> {
    let unreachable = |reason: String| SplitError::Connect {
        server: cfg.server.clone(),
        reason,
    };
    let addr = cfg
        .server
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let first = hello_timeout.min(cfg.timeout);
    let s = TcpStream::connect_timeout(&addr, first)
        .map_err(|e| unreachable(format!("connect {addr}: {e}")))?;
    s.set_read_timeout(Some(first)).ok();
    s.set_write_timeout(Some(first)).ok();
    s.set_nodelay(true).ok();
    // The same socket, to set the requests' timeouts once the HELLO is answered.
    let ctl = s.try_clone().ok();
    let link: Box<dyn Link> = match &cfg.tls {
        None => Box::new(s),
        #[cfg(not(feature = "tls"))]
        Some(t) => t.never(),
        #[cfg(feature = "tls")]
        Some(t) => {
            let conn = rustls::ClientConnection::new(t.config.clone(), t.server_name.clone())
                .map_err(|e| SplitError::Tls(e.to_string()))?;
            let mut tls = rustls::StreamOwned::new(conn, s);
            // Handshake now, so a certificate problem is reported as such.
            while tls.conn.is_handshaking() {
                tls.conn
                    .complete_io(&mut tls.sock)
                    .map_err(|e| SplitError::Tls(format!("handshake with {addr}: {e}")))?;
            }
            Box::new(tls)
        }
    };
    let mut c = FromStd::new(link);
    let hello = Hello {
        model_id,
        encodings: 0b1111,
        token: cfg.token.clone(),
    };
    let sent = Instant::now();
    write_frame(&mut c, &Frame::Hello(hello)).map_err(|e| SplitError::Protocol(e.to_string()))?;
    let plain = cfg.tls.is_none();
    let answer = read_frame(&mut c, &Limits::default()).map_err(|e| {
        SplitError::Protocol(if plain {
            format!("no answer to HELLO ({e}); if the server runs with TLS, connect with TLS")
        } else {
            format!("no answer to HELLO: {e}")
        })
    })?;
    let rtt = sent.elapsed();
    if let Some(ctl) = ctl {
        ctl.set_read_timeout(Some(cfg.timeout)).ok();
        ctl.set_write_timeout(Some(cfg.timeout)).ok();
    }
    match answer {
        Some(Frame::HelloOk(ok)) => Ok((c, ok, rtt)),
        Some(Frame::Error { message, code, .. }) => Err(SplitError::Refused { code, message }),
        other => Err(SplitError::Protocol(format!(
            "unexpected answer to HELLO: {other:?}"
        ))),
    }
}

/// What one request did.
#[derive(Clone, Debug)]
pub struct SplitOutcome {
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// `None`: split as asked; `Some(reason)`: ran entirely on the device.
    pub fell_back: Option<String>,
    /// Bytes sent for the request.
    pub sent_bytes: usize,
    /// Time from sending to the answer (when split).
    pub round_trip: Option<Duration>,
    /// The cut it ran at (stages on the device; the stage count: all on the device).
    pub cut: usize,
    /// With `--cut auto`: the planner's predicted latency for that cut, ms.
    pub predicted_ms: Option<f64>,
}

/// A device connected (or not) to a server, running `S` (a [`Session`], a cheap handle, or a
/// `&Session`: anything that borrows as one).
pub struct SplitClient<S: Borrow<Session>> {
    session: S,
    cfg: ClientConfig,
    model_id: [u8; 32],
    conn: Option<Conn>,
    next_id: u64,
    auto: Option<crate::auto::AutoState>,
}

impl<S: Borrow<Session>> SplitClient<S> {
    /// A client for `session`; connects lazily. The HELLO carries the identity of the
    /// session's model file.
    pub fn new(session: S, cfg: ClientConfig) -> SplitClient<S> {
        let model_id = session.borrow().model_id().0;
        let auto = cfg
            .auto
            .clone()
            .map(|a| crate::auto::AutoState::new(a, cfg.encoding));
        SplitClient {
            session,
            cfg,
            model_id,
            conn: None,
            next_id: 1,
            auto,
        }
    }

    /// With `--cut auto`: the predicted latency (ms) of every cut `K = 0..=stages` for `batch`
    /// texts of `seq` tokens, from the profiles and what has been measured so far.
    pub fn predict_all(&self, seq: usize, batch: usize) -> Option<Vec<f64>> {
        self.auto.as_ref().map(|a| {
            a.predict_all(seq, batch)
                .into_iter()
                .map(|b| b.latency_ms)
                .collect()
        })
    }

    /// With `--cut auto`: what the client has measured of the link and server so far.
    pub fn link_estimate(&self) -> Option<crate::LinkEstimate> {
        self.auto.as_ref().map(|a| a.est)
    }

    fn connect(&mut self, cut: usize) -> Result<(), SplitError> {
        let (c, ok, rtt) = open_connection(&self.cfg, self.model_id, self.cfg.timeout)?;
        if (ok.stages as usize) <= cut {
            return Err(SplitError::Protocol(format!(
                "cut {cut} is not below the server's {} stages",
                ok.stages
            )));
        }
        if let Some(a) = &mut self.auto {
            a.observe_hello(rtt.as_secs_f64());
        }
        self.conn = Some(c);
        Ok(())
    }

    /// One split request at `cut`: the vectors, bytes sent, round trip, and the server's time.
    fn split(&mut self, inputs: Inputs<'_>, cut: usize) -> Result<Split, SplitError> {
        if self.conn.is_none() {
            self.connect(cut)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let dev_start = Instant::now();
        let (enc, s) = (self.cfg.encoding, self.session.borrow());
        let req = match inputs {
            Inputs::Texts(t) => s.run_device_part(t, cut, enc, id)?,
            Inputs::Images(i) => s.run_device_part_images(i, cut, enc, id)?,
        };
        let count = inputs.len();
        let sent = req.activation.data.len();
        let c = self.conn.as_mut().expect("connected above");
        let device = dev_start.elapsed();
        let t = Instant::now();
        let broken = |e: edgecut_wire::WireError| SplitError::Protocol(e.to_string());
        write_frame(c, &Frame::Infer(req)).map_err(broken)?;
        let answer = read_frame(c, &Limits::default()).map_err(broken)?;
        let rtt = t.elapsed();
        match answer {
            Some(Frame::Result(r)) if r.request_id == id && r.rows as usize == count => {
                let cols = r.cols as usize;
                Ok(Split {
                    vectors: r
                        .values
                        .chunks_exact(cols.max(1))
                        .map(<[f32]>::to_vec)
                        .collect(),
                    sent,
                    received: r.values.len() * 4,
                    rtt,
                    server: Duration::from_micros(r.server_us.into()),
                    device,
                })
            }
            Some(Frame::Error { message, code, .. }) => Err(SplitError::Refused { code, message }),
            other => Err(SplitError::Protocol(format!(
                "unexpected answer: {other:?}"
            ))),
        }
    }

    /// Embeds `texts`, split at the configured cut, or entirely on the device when splitting
    /// fails (the outcome says why). A failed connection is dropped and retried next call.
    pub fn embed(&mut self, texts: &[&str]) -> edgecut::Result<SplitOutcome> {
        let shape = self.shape(texts)?;
        let (cut, predicted_ms) = match (&mut self.auto, shape) {
            (Some(a), Some((seq, batch))) => {
                let (k, ms) = a.choose(seq, batch);
                (k, Some(ms))
            }
            _ => (self.cfg.cut, None),
        };
        self.run_at(texts, cut, predicted_ms, shape)
    }

    /// Embeds `texts` split at `cut` whatever the configuration says (with `--cut auto`, the
    /// request's measurements still update the link estimate): for calibration and
    /// measurement.
    pub fn embed_at(&mut self, texts: &[&str], cut: usize) -> edgecut::Result<SplitOutcome> {
        let shape = self.shape(texts)?;
        self.run_at(texts, cut, None, shape)
    }

    /// With `--cut auto`: the request's shape for the planner, `(tokens of the longest text,
    /// texts)`; `None` otherwise (nothing is tokenized for it then).
    fn shape(&self, texts: &[&str]) -> edgecut::Result<Option<(usize, usize)>> {
        if self.auto.is_none() {
            return Ok(None);
        }
        let mut seq = 1;
        for t in texts {
            seq = seq.max(self.session.borrow().tokenize(t)?.len());
        }
        Ok(Some((seq, texts.len().max(1))))
    }

    /// Embeds pictures (PNG or JPEG file bytes) with a CLIP model, the image tower split at
    /// the configured cut (`--cut auto` plans texts; pictures take the configured cut), or
    /// entirely on the device when splitting fails (the outcome says why). A picture that
    /// cannot be read is an error, not a fallback.
    pub fn embed_images(&mut self, images: &[&[u8]]) -> edgecut::Result<SplitOutcome> {
        self.run_inputs(Inputs::Images(images), self.cfg.cut, None, None)
    }

    fn run_at(
        &mut self,
        texts: &[&str],
        cut: usize,
        predicted_ms: Option<f64>,
        shape: Option<(usize, usize)>,
    ) -> edgecut::Result<SplitOutcome> {
        self.run_inputs(Inputs::Texts(texts), cut, predicted_ms, shape)
    }

    /// Everything on the device.
    fn local(&self, inputs: Inputs<'_>) -> edgecut::Result<Vec<Vec<f32>>> {
        match inputs {
            Inputs::Texts(t) => Ok(self.session.borrow().embed(t)?.vectors),
            Inputs::Images(i) => self.session.borrow().embed_images(i),
        }
    }

    fn run_inputs(
        &mut self,
        inputs: Inputs<'_>,
        cut: usize,
        predicted_ms: Option<f64>,
        shape: Option<(usize, usize)>,
    ) -> edgecut::Result<SplitOutcome> {
        let n = self.session.borrow().stage_count();
        if cut >= n {
            // The plan (or the configured cut) runs everything here.
            let t = Instant::now();
            let vectors = self.local(inputs)?;
            if let (Some(a), Some((seq, batch))) = (&mut self.auto, shape) {
                a.observe_device(n, seq, batch, t.elapsed().as_secs_f64());
            }
            return Ok(SplitOutcome {
                vectors,
                fell_back: None,
                sent_bytes: 0,
                round_trip: None,
                cut: n,
                predicted_ms,
            });
        }
        match self.split(inputs, cut) {
            Ok(s) => {
                if let (Some(a), Some((seq, batch))) = (&mut self.auto, shape) {
                    a.observe_device(cut, seq, batch, s.device.as_secs_f64());
                    a.observe_split(
                        cut,
                        seq,
                        batch,
                        s.sent,
                        s.received,
                        s.rtt.as_secs_f64(),
                        s.server.as_secs_f64(),
                    );
                }
                Ok(SplitOutcome {
                    vectors: s.vectors,
                    fell_back: None,
                    sent_bytes: s.sent,
                    round_trip: Some(s.rtt),
                    cut,
                    predicted_ms,
                })
            }
            // A picture the device cannot read is the caller's error, not the link's.
            Err(SplitError::Model(e @ edgecut::Error::Image { .. })) => Err(e),
            Err(reason) => {
                self.conn = None;
                Ok(SplitOutcome {
                    vectors: self.local(inputs)?,
                    fell_back: Some(reason.to_string()),
                    sent_bytes: 0,
                    round_trip: None,
                    cut: n,
                    predicted_ms,
                })
            }
        }
    }
}

/// What a request embeds.
#[derive(Clone, Copy)]
enum Inputs<'a> {
    Texts(&'a [&'a str]),
    Images(&'a [&'a [u8]]),
}

impl Inputs<'_> {
    fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Images(i) => i.len(),
        }
    }
}

/// One split request's answer and measurements.
struct Split {
    vectors: Vec<Vec<f32>>,
    sent: usize,
    received: usize,
    rtt: Duration,
    server: Duration,
    device: Duration,
}
