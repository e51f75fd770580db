//! `edgecut serve` under abuse, as a real process on loopback: each test reproduces one way a
//! client can hurt the server, asserts the bound (memory, time to drop, refusal code, a
//! legitimate client's latency) and that a legitimate split client is served meanwhile. Each
//! prints its figures (`--nocapture`); `docs/benchmarks.md` has them before and after.

mod auth;
mod decode;
mod lifecycle;
mod memory;
mod support;
mod work;
