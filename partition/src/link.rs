//! The network link and the device's power model.

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// A link between device and server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Upload bandwidth, bits per second.
    pub up_bps: f64,
    /// Download bandwidth, bits per second.
    pub down_bps: f64,
    /// Round-trip time, seconds.
    pub rtt_s: f64,
    /// Fixed cost per message (framing, system calls), seconds.
    pub per_message_s: f64,
}

fn rate(s: &str) -> Result<f64, PlanError> {
    let s = s.trim().to_ascii_lowercase();
    let units = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)];
    for (u, f) in units {
        if let Some(n) = s.strip_suffix(u) {
            let v: f64 = n
                .trim()
                .parse()
                .map_err(|_| PlanError::Link(format!("bandwidth {s:?}")))?;
            if v > 0.0 && v.is_finite() {
                return Ok(v * f);
            }
        }
    }
    Err(PlanError::Link(format!(
        "bandwidth {s:?}: expected a positive number with kbit, mbit or gbit (per second)"
    )))
}

fn time(s: &str) -> Result<f64, PlanError> {
    let s = s.trim().to_ascii_lowercase();
    for (u, f) in [("ms", 1e-3), ("us", 1e-6), ("s", 1.0)] {
        if let Some(n) = s.strip_suffix(u) {
            if let Ok(v) = n.trim().parse::<f64>() {
                if v >= 0.0 && v.is_finite() {
                    return Ok(v * f);
                }
            }
            break;
        }
    }
    Err(PlanError::Link(format!(
        "time {s:?}: expected a number with ms, us or s"
    )))
}

impl Link {
    /// Parses `BANDWIDTH[/DOWNLOAD],RTT[,PER_MESSAGE]`: `10mbit,40ms`, `5mbit/50mbit,30ms,0.2ms`.
    pub fn parse(s: &str) -> Result<Link, PlanError> {
        let parts: Vec<&str> = s.split(',').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(PlanError::Link(format!(
                "{s:?}: expected BANDWIDTH[/DOWNLOAD],RTT[,PER_MESSAGE], e.g. 10mbit,40ms"
            )));
        }
        let (up, down) = match parts[0].split_once('/') {
            Some((u, d)) => (rate(u)?, rate(d)?),
            None => (rate(parts[0])?, rate(parts[0])?),
        };
        Ok(Link {
            up_bps: up,
            down_bps: down,
            rtt_s: time(parts[1])?,
            per_message_s: parts.get(2).map_or(Ok(100e-6), |p| time(p))?,
        })
    }

    /// The same link with both bandwidths scaled so the upload is `up_bps`.
    pub fn with_up_bps(&self, up_bps: f64) -> Link {
        Link {
            up_bps,
            down_bps: self.down_bps * up_bps / self.up_bps,
            ..*self
        }
    }
}

/// What the device spends in energy: compute power while it runs stages, radio energy per byte
/// sent or received, idle power while it waits for the server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    /// Watts while computing.
    pub compute_w: f64,
    /// Joules per byte through the radio (either direction).
    pub radio_j_per_byte: f64,
    /// Watts while waiting (round trip, server compute, download).
    pub idle_w: f64,
}

impl PowerModel {
    /// A phone on WiFi: 3 W computing (a big core cluster), 0.16 uJ per byte (about 1 W of
    /// transmit power at 50 Mbit/s), 0.3 W idle with the screen off. Rough textbook figures,
    /// for comparing cuts, not for absolute joules.
    pub const PHONE_WIFI: PowerModel = PowerModel {
        compute_w: 3.0,
        radio_j_per_byte: 0.16e-6,
        idle_w: 0.3,
    };
    /// A phone on LTE: the same compute, 2 uJ per byte (about 2.5 W at 10 Mbit/s), 0.5 W idle
    /// (the radio's tail state).
    pub const PHONE_LTE: PowerModel = PowerModel {
        compute_w: 3.0,
        radio_j_per_byte: 2.0e-6,
        idle_w: 0.5,
    };

    /// A preset by name: `phone-wifi` or `phone-lte`.
    pub fn preset(name: &str) -> Result<PowerModel, PlanError> {
        match name {
            "phone-wifi" => Ok(Self::PHONE_WIFI),
            "phone-lte" => Ok(Self::PHONE_LTE),
            _ => Err(PlanError::Link(format!(
                "power model {name:?}: expected phone-wifi or phone-lte"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links_and_rejects_nonsense() {
        let l = Link::parse("10mbit,40ms").unwrap();
        assert_eq!((l.up_bps, l.down_bps, l.rtt_s), (10e6, 10e6, 0.04));
        let l = Link::parse("5Mbit/50mbit, 30ms, 0.2ms").unwrap();
        assert_eq!((l.up_bps, l.down_bps, l.per_message_s), (5e6, 50e6, 0.2e-3));
        assert_eq!(l.with_up_bps(10e6).down_bps, 100e6);
        for bad in [
            "10mbit",
            "fast,40ms",
            "10mbit,soon",
            "0mbit,1ms",
            "-1mbit,1ms",
            "1mbit,1ms,1ms,1ms",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
        assert!(PowerModel::preset("phone-5g").is_err());
    }
}
