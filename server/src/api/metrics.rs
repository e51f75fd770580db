//! The API's Prometheus metrics: requests by route and status (`rate()` of
//! `edgecut_http_requests_total` is requests per second), request, queue and inference
//! durations, batch sizes, time to first token and generated tokens (per model), named after
//! text-embeddings-inference's `te_*` and llama.cpp's `llamacpp:*` where they have one
//! (the README's HTTP API section lists them).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Bucket bounds of the duration histograms, in seconds.
const SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds of the batch-size histograms.
const SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram with fixed bounds.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, in millionths.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn seconds() -> Histogram {
        Histogram::new(&SECONDS)
    }

    pub fn sizes() -> Histogram {
        Histogram::new(&SIZES)
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b);
        self.counts[i.unwrap_or(self.bounds.len())].fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
    }

    pub fn time(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut acc = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.bounds.iter().enumerate() {
            acc += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {acc}");
        }
        acc += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {acc}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {acc}", braces(labels));
    }
}

/// One model's figures.
#[derive(Debug)]
pub(crate) struct ModelMetrics {
    /// Time requests waited for a place and in the model's queue.
    pub queue: Histogram,
    /// Time of each batch's (or decode step's) model run.
    pub inference: Histogram,
    /// Inputs per embedding batch, or turns per decode step.
    pub batch: Histogram,
    /// Time to the first generated token.
    pub first_token: Histogram,
    /// Prompt (input) tokens run.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Generations stopped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests refused for want of a place (429).
    pub refused: AtomicU64,
    /// Decode time summed, microseconds (generated tokens / this = tokens per second).
    pub decode_us: AtomicU64,
}

impl ModelMetrics {
    pub fn new() -> ModelMetrics {
        ModelMetrics {
            queue: Histogram::seconds(),
            inference: Histogram::seconds(),
            batch: Histogram::sizes(),
            first_token: Histogram::seconds(),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            decode_us: AtomicU64::new(0),
        }
    }
}

/// Requests by route and status, and their durations by route.
#[derive(Debug, Default)]
pub(crate) struct RouteMetrics {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
    durations: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl RouteMetrics {
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((route.to_string(), status)).or_default() += 1;
        drop(c);
        let h = self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_string())
            .or_insert_with(|| std::sync::Arc::new(Histogram::seconds()))
            .clone();
        h.time(took);
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP edgecut_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE edgecut_http_requests_total counter"
        );
        for ((route, status), n) in self.counts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "edgecut_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgecut_http_request_duration_seconds Time from a request's arrival to its \
             answer's headers (a stream's start), by route.\n\
             # TYPE edgecut_http_request_duration_seconds histogram"
        );
        for (route, h) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.render(
                out,
                "edgecut_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
    }
}

/// Renders the figures of every model (`(name, figures, waiting, running)`).
pub(crate) fn render_models(out: &mut String, models: &[(&str, &ModelMetrics, usize, usize)]) {
    type Hist = fn(&ModelMetrics) -> &Histogram;
    let hists: [(&str, &str, Hist); 4] = [
        (
            "edgecut_queue_duration_seconds",
            "Time requests waited for a place and in the model's queue (te_request_queue_duration).",
            |m| &m.queue,
        ),
        (
            "edgecut_inference_duration_seconds",
            "Time of each model run: an embedding batch or a decode step (te_request_inference_duration).",
            |m| &m.inference,
        ),
        (
            "edgecut_batch_size",
            "Inputs per embedding batch, or generations per decode step (te_batch_next_size).",
            |m| &m.batch,
        ),
        (
            "edgecut_time_to_first_token_seconds",
            "Time from a generation's start in a slot to its first token.",
            |m| &m.first_token,
        ),
    ];
    for (name, help, get) in hists {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (model, m, _, _) in models {
            get(m).render(out, name, &format!("model=\"{model}\""));
        }
    }
    type Count = fn(&ModelMetrics) -> f64;
    let counters: [(&str, &str, Count); 5] = [
        (
            "edgecut_prompt_tokens_total",
            "Input and prompt tokens run (llamacpp:prompt_tokens_total).",
            |m| m.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "edgecut_generated_tokens_total",
            "Tokens generated (llamacpp:tokens_predicted_total).",
            |m| m.generated_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "edgecut_generation_seconds_total",
            "Time generations spent decoding after their first token (tokens/s = \
             rate(generated) / rate(this) per slot).",
            |m| m.decode_us.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "edgecut_cancelled_total",
            "Generations stopped because their client went away.",
            |m| m.cancelled.load(Ordering::Relaxed) as f64,
        ),
        (
            "edgecut_refused_total",
            "Requests refused with 429 because every place and queue place was taken.",
            |m| m.refused.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (model, m, _, _) in models {
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", get(m));
        }
    }
    let gauges: [(&str, &str, bool); 2] = [
        (
            "edgecut_queue_size",
            "Requests waiting for a place (te_queue_size, llamacpp:requests_deferred).",
            true,
        ),
        (
            "edgecut_requests_running",
            "Requests holding a place: in a batch or a generation slot (llamacpp:requests_processing).",
            false,
        ),
    ];
    for (name, help, waiting) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (model, _, w, r) in models {
            let v = if waiting { w } else { r };
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {v}");
        }
    }
}
