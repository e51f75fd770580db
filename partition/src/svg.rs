//! A plot of predicted cost against bandwidth for every cut, with the best cut's envelope
//! highlighted: plain SVG, no dependencies.

use std::fmt::Write;

use crate::planner::{Constraints, Objective, Planner, Scenario};

/// An SVG of `obj` (ms or mJ) against upload bandwidth from 0.1 to 1000 Mbit/s (log scale)
/// for every feasible cut (grey), the best cut at each bandwidth (red), and `marks` (the
/// bandwidths planned for, as vertical lines).
pub fn plot(
    p: &Planner<'_>,
    sc: &Scenario,
    obj: Objective,
    c: &Constraints,
    marks: &[f64],
) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 440.0, 70.0, 50.0, 30.0, 20.0);
    let xs: Vec<f64> = (0..=160)
        .map(|i| 10f64.powf(-1.0 + 4.0 * i as f64 / 160.0) * 1e6)
        .collect();
    let cuts: Vec<Vec<bool>> = p
        .graph()
        .cuts()
        .into_iter()
        .filter(|cut| p.feasible(cut, c))
        .collect();
    let scale = if obj == Objective::Energy { 1e3 } else { 1.0 };
    let val = |cut: &[bool], bps: f64| {
        p.evaluate(
            cut,
            &Scenario {
                link: sc.link.with_up_bps(bps),
                ..*sc
            },
        )
        .value(obj)
            * scale
    };
    let series: Vec<Vec<f64>> = cuts
        .iter()
        .map(|cut| xs.iter().map(|&x| val(cut, x)).collect())
        .collect();
    let best: Vec<f64> = (0..xs.len())
        .map(|i| series.iter().map(|s| s[i]).fold(f64::INFINITY, f64::min))
        .collect();
    let ymax = best.iter().cloned().fold(0.0, f64::max).max(1e-9) * 2.0;
    let px = |bps: f64| left + (bps.log10() - 5.0) / 4.0 * (w - left - right);
    let py = |v: f64| top + (1.0 - (v / ymax).min(1.0)) * (h - top - bottom);
    let unit = if obj == Objective::Energy {
        "device energy, mJ"
    } else {
        "ms"
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18">predicted {unit} per request against upload bandwidth; red: the best cut</text>"#
    );
    for d in 0..=4 {
        let bps = 10f64.powi(d + 5);
        let x = px(bps);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{} Mbit/s</text>"##,
            h - bottom,
            h - bottom + 18.0,
            bps / 1e6
        );
    }
    for f in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let v = ymax * f;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0
        );
    }
    let path = |ys: &[f64]| {
        xs.iter()
            .zip(ys)
            .enumerate()
            .fold(String::new(), |mut acc, (i, (&x, &y))| {
                let _ = write!(
                    acc,
                    "{}{:.1},{:.1} ",
                    if i == 0 { "M" } else { "L" },
                    px(x),
                    py(y)
                );
                acc
            })
    };
    for (cut, ys) in cuts.iter().zip(&series) {
        let label = cut.iter().filter(|&&d| d).count();
        let _ = writeln!(
            s,
            r##"<path d="{}" fill="none" stroke="#999" stroke-width="1"><title>{} stages on the device</title></path>"##,
            path(ys),
            label
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#d22" stroke-width="3"/>"##,
        path(&best)
    );
    for &m in marks {
        let x = px(m.clamp(1e5, 1e9));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#36c" stroke-dasharray="4 3"/>"##,
            h - bottom
        );
    }
    s.push_str("</svg>\n");
    s
}
