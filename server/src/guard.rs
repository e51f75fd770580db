//! Authentication: the token file, the constant-time token check, and the per-address limit on
//! failed HELLOs that keeps a client from guessing tokens at line rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgecut_wire::MAX_TOKEN;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("{} holds no token", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The token is longer than a HELLO carries.
    #[error("{} holds a token of {len} bytes; a HELLO carries at most {MAX_TOKEN}", path.display())]
    TooLong {
        /// The file.
        path: PathBuf,
        /// The token's bytes.
        len: usize,
    },
}

/// Reads an access token from a file: its bytes as they are (binary tokens allowed), less
/// leading and trailing ASCII whitespace (the newline an editor adds). Empty tokens, and tokens
/// longer than a HELLO can carry (512 bytes), are refused.
pub fn read_token_file(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    let t = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let t = t.trim_ascii();
    if t.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    if t.len() > MAX_TOKEN {
        return Err(TokenFileError::TooLong {
            path: path.to_path_buf(),
            len: t.len(),
        });
    }
    Ok(t.to_vec())
}

/// Compares without an early exit, so the time taken does not tell how much of a token matched.
pub(crate) fn same_token(a: &[u8], b: &[u8]) -> bool {
    // Every bit of a length difference counts (not only its low ones).
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Addresses kept at most; past it, addresses whose allowance has refilled are forgotten.
const MAX_ADDRESSES: usize = 1 << 16;

/// A token bucket of failed HELLOs per client address (IPv6 by its /64, the usual allocation
/// to one site): `per_minute` failures in a burst, refilled at `per_minute` a minute.
pub(crate) struct FailedHellos {
    per_minute: u32,
    buckets: Mutex<HashMap<[u8; 8], (f64, Instant)>>,
}

fn key(ip: IpAddr) -> [u8; 8] {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [4, 0, 0, 0, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let mut k = [0u8; 8];
            k.copy_from_slice(&a.octets()[..8]);
            k
        }
    }
}

impl FailedHellos {
    pub(crate) fn new(per_minute: u32) -> Self {
        FailedHellos {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, b: &(f64, Instant), now: Instant) -> f64 {
        let rate = self.per_minute as f64 / 60.0;
        (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(self.per_minute as f64)
    }

    /// `Err(wait)`: the address has no failures left; it may try again after `wait`.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = map.get(&key(ip)) else {
            return Ok(());
        };
        let level = self.level(b, Instant::now());
        if level >= 1.0 {
            Ok(())
        } else {
            let rate = self.per_minute.max(1) as f64 / 60.0;
            Err(Duration::from_secs_f64((1.0 - level) / rate))
        }
    }

    /// Counts a failed HELLO from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES {
            let full = self.per_minute as f64;
            map.retain(|_, b| self.level(b, now) < full);
        }
        let full = (self.per_minute as f64, now);
        let b = map.entry(key(ip)).or_insert(full);
        *b = ((self.level(b, now) - 1.0).max(0.0), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_waits_and_others_are_untouched() {
        let f = FailedHellos::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(a).is_ok());
            f.failed(a);
        }
        let wait = f.check(a).unwrap_err();
        // 3 a minute: one more after about 20 s.
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(f.check(b).is_ok());
        // One /64 is one client.
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let d: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            f.failed(c);
        }
        assert!(f.check(d).is_err());
    }

    #[test]
    fn tokens_match_only_when_every_byte_does() {
        assert!(same_token(b"s3cret", b"s3cret"));
        assert!(!same_token(b"s3cret", b"s3cres"));
        assert!(!same_token(b"s3cret", b"s3cret\0"));
        assert!(!same_token(b"", b"\xff"));
        assert!(!same_token(b"\xff\xfe", b"\xfe\xff"));
        // Lengths that differ only above their low 16 bits, the rest zeros.
        assert!(!same_token(&[0u8; 3], &[0u8; 3 + (1 << 16)]));
    }
}
