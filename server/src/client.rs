//! The device side of split inference, blocking (for apps and the CLI): runs the stages before
//! the cut, sends the activation to `edgecut serve`, and falls back to running everything on
//! the device when the server is unreachable, refuses, or fails.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use edgecut::Session;
use edgecut_wire::{read_frame, write_frame, Encoding, Frame, Hello, Limits};
use embedded_io_adapters::std::FromStd;

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
}

/// A byte stream to the server: plain TCP or TLS over it.
trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

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
}

/// A device connected (or not) to a server.
pub struct SplitClient<'s> {
    session: &'s Session,
    cfg: ClientConfig,
    model_id: [u8; 32],
    conn: Option<FromStd<Box<dyn Link>>>,
    next_id: u64,
}

impl<'s> SplitClient<'s> {
    /// A client for `session`; connects lazily. The HELLO carries the identity of the
    /// session's model file.
    pub fn new(session: &'s Session, cfg: ClientConfig) -> SplitClient<'s> {
        let model_id = session.model_id().0;
        SplitClient {
            session,
            cfg,
            model_id,
            conn: None,
            next_id: 1,
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        let addr = self
            .cfg
            .server
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.cfg.server))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.cfg.server))?;
        let s = TcpStream::connect_timeout(&addr, self.cfg.timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(self.cfg.timeout)).ok();
        s.set_write_timeout(Some(self.cfg.timeout)).ok();
        s.set_nodelay(true).ok();
        let link: Box<dyn Link> = match &self.cfg.tls {
            None => Box::new(s),
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                // Handshake now, so a certificate problem is reported as such.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                }
                Box::new(tls)
            }
        };
        let mut c = FromStd::new(link);
        let hello = Hello {
            model_id: self.model_id,
            encodings: 0b111,
            token: self.cfg.token.clone(),
        };
        write_frame(&mut c, &Frame::Hello(hello)).map_err(|e| e.to_string())?;
        let plain = self.cfg.tls.is_none();
        let answer = read_frame(&mut c, &Limits::default()).map_err(|e| {
            if plain {
                format!(
                    "no answer to HELLO ({e}); if the server runs with TLS, connect with TLS \
                     (--tls-ca)"
                )
            } else {
                format!("no answer to HELLO: {e}")
            }
        })?;
        match answer {
            Some(Frame::HelloOk(ok)) if (ok.stages as usize) > self.cfg.cut => {
                self.conn = Some(c);
                Ok(())
            }
            Some(Frame::HelloOk(ok)) => Err(format!(
                "cut {} is not below the server's {} stages",
                self.cfg.cut, ok.stages
            )),
            Some(Frame::Error { message, code, .. }) => {
                Err(format!("server refused ({code:?}): {message}"))
            }
            other => Err(format!("unexpected answer to HELLO: {other:?}")),
        }
    }

    fn split(&mut self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, usize, Duration), String> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let req = self
            .session
            .run_device_part(texts, self.cfg.cut, self.cfg.encoding, id)
            .map_err(|e| e.to_string())?;
        let sent = req.activation.data.len();
        let c = self.conn.as_mut().expect("connected above");
        let t = Instant::now();
        write_frame(c, &Frame::Infer(req)).map_err(|e| e.to_string())?;
        let answer = read_frame(c, &Limits::default()).map_err(|e| e.to_string())?;
        let rtt = t.elapsed();
        match answer {
            Some(Frame::Result(r)) if r.request_id == id && r.rows as usize == texts.len() => {
                let cols = r.cols as usize;
                Ok((
                    r.values
                        .chunks_exact(cols.max(1))
                        .map(<[f32]>::to_vec)
                        .collect(),
                    sent,
                    rtt,
                ))
            }
            Some(Frame::Error { message, code, .. }) => {
                Err(format!("server error ({code:?}): {message}"))
            }
            other => Err(format!("unexpected answer: {other:?}")),
        }
    }

    /// Embeds `texts`, split at the configured cut, or entirely on the device when splitting
    /// fails (the outcome says why). A failed connection is dropped and retried next call.
    pub fn embed(&mut self, texts: &[&str]) -> edgecut::Result<SplitOutcome> {
        match self.split(texts) {
            Ok((vectors, sent_bytes, rtt)) => Ok(SplitOutcome {
                vectors,
                fell_back: None,
                sent_bytes,
                round_trip: Some(rtt),
            }),
            Err(reason) => {
                self.conn = None;
                let e = self.session.embed(texts)?;
                Ok(SplitOutcome {
                    vectors: e.vectors,
                    fell_back: Some(reason),
                    sent_bytes: 0,
                    round_trip: None,
                })
            }
        }
    }
}
