//! The report three ways: a table for people, JSON for scripts, SVG plots; and the list of
//! accepted messages (`--accepted`).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::config::{Body, TlsVerifyOpt, SEQ_DIGITS};
use crate::run::Report;
use crate::schedule::RateSchedule;
use crate::slices;
use crate::stats::{percentile_curve, Phase, Sample};

/// Quantiles shown in the table and the JSON.
const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

/// One line describing the settings.
pub fn describe(r: &Report) -> String {
    let c = &r.cfg;
    let targets: Vec<String> = c.targets.iter().map(|t| t.to_string()).collect();
    let body = match &c.body {
        Body::Size(s) => format!("{s} bytes"),
        Body::Dir(d) => format!("samples from {}", d.display()),
    };
    let load = match &c.rate {
        Some(rate) => format!("open loop at {}", rate.describe()),
        None if c.idle => "idle connections".into(),
        None => "closed loop".into(),
    };
    let per = if c.per_session == 0 {
        "unlimited".to_string()
    } else {
        c.per_session.to_string()
    };
    let mut extras = String::new();
    if let Some(tls) = &c.tls {
        extras.push_str(match tls.verify {
            TlsVerifyOpt::None => ", STARTTLS (no certificate check)",
            TlsVerifyOpt::CaFile(_) => ", STARTTLS (certificate checked)",
        });
        if tls.resume {
            extras.push_str(" with resumption");
        }
    }
    if c.auth_plain.is_some() {
        extras.push_str(", AUTH PLAIN");
    }
    format!(
        "{}, {} connections, {} threads ({}), {load}, {per} msg/session, {} rcpt, {body}, pipelining {}{}{extras}",
        targets.join(" "),
        c.connections,
        r.threads,
        r.driver,
        c.rcpts,
        if c.pipelining { "on" } else { "off" },
        match c.proxy {
            Some(v) => format!(", PROXY {v:?}").to_lowercase(),
            None => String::new(),
        }
    )
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let s = &r.stats;
    let mut o = String::new();
    let _ = writeln!(o, "smtp-loadtest: {}", describe(r));
    let _ = writeln!(
        o,
        "elapsed {:.2} s (last answer at {:.2} s){}{}",
        r.elapsed.as_secs_f64(),
        r.busy.as_secs_f64(),
        if r.interrupted { ", INTERRUPTED" } else { "" },
        if r.capped {
            ", STOPPED AT THE 10-MINUTE CAP"
        } else {
            ""
        }
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "messages attempted      {:>10}", s.attempted);
    let _ = writeln!(o, "  accepted (2xx)        {:>10}", s.accepted);
    let _ = writeln!(o, "  rejected 4xx          {:>10}", s.rejected_4xx);
    let _ = writeln!(o, "  rejected 5xx          {:>10}", s.rejected_5xx);
    let _ = writeln!(o, "  failed (no answer)    {:>10}", s.failed);
    if s.rcpt_rejected > 0 {
        let _ = writeln!(o, "recipients refused      {:>10}", s.rcpt_rejected);
    }
    let _ = writeln!(o, "sessions                {:>10}", s.sessions);
    let _ = writeln!(
        o,
        "connection errors       {:>10}  ({} failed to open, {} lost)",
        s.conn_errors(),
        s.conn_failed,
        s.conn_dropped
    );
    if s.slices.refused_421() > 0 {
        let _ = writeln!(
            o,
            "  of which refused 421  {:>10}  (before the session: the server's connection limit)",
            s.slices.refused_421()
        );
    }
    if s.slices.connect_timeouts() > 0 {
        let _ = writeln!(
            o,
            "  of which connect timed out {:>5}  (the server's listen queue was full)",
            s.slices.connect_timeouts()
        );
    }
    if s.slices.late() > 0 || s.slices.skipped() > 0 {
        let _ = writeln!(
            o,
            "started late            {:>10}  (no free connection slot at the scheduled time)",
            s.slices.late()
        );
        let _ = writeln!(
            o,
            "skipped (--skip-late)   {:>10}  (not sent: the generator's limit, not the server's)",
            s.slices.skipped()
        );
    }
    if r.cfg.tls.is_some() {
        let _ = writeln!(o, "TLS sessions            {:>10}", s.tls_sessions);
        for (kind, n) in &s.tls_kinds {
            let _ = writeln!(o, "  {kind}: {n}");
        }
    }
    if r.cfg.auth_plain.is_some() {
        let _ = writeln!(o, "sessions authenticated  {:>10}", s.auth_ok);
    }
    if s.slots_gave_up > 0 {
        let _ = writeln!(
            o,
            "connection slots that gave up after {} failures in a row: {}",
            r.cfg.max_failures, s.slots_gave_up
        );
    }
    if s.no_pipelining > 0 {
        let _ = writeln!(
            o,
            "sessions without PIPELINING offered: {}",
            s.no_pipelining
        );
    }
    let _ = writeln!(o, "messages/s (accepted)   {:>10.1}", r.rate());
    if !s.balanced() {
        let _ = writeln!(o, "WARNING: counts do not add up (a bug in smtp-loadtest)");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "latency (ms)                {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for p in Phase::ALL {
        let h = s.hist(p);
        if h.is_empty() {
            continue;
        }
        let _ = write!(o, "{:<27} {:>9}", p.label(), h.len());
        for (_, q) in QUANTILES {
            let _ = write!(o, " {:>9}", ms(h.value_at_quantile(q)));
        }
        let _ = writeln!(o, " {:>9}", ms(h.max()));
    }
    let _ = writeln!(o);
    let codes: Vec<String> = s
        .code_counts()
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    let _ = writeln!(
        o,
        "reply codes: {}",
        if codes.is_empty() {
            "none".into()
        } else {
            codes.join(", ")
        }
    );
    if !s.errors.is_empty() {
        let _ = writeln!(o, "errors:");
        for ((stage, kind), n) in &s.errors {
            let _ = writeln!(o, "  {stage}: {kind}: {n}");
        }
    }
    o
}

/// The JSON report. Latencies are in microseconds.
pub fn json(r: &Report) -> Value {
    let s = &r.stats;
    let mut phases = serde_json::Map::new();
    for p in Phase::ALL {
        let h = s.hist(p);
        let mut v = json!({
            "label": p.label(),
            "count": h.len(),
        });
        if !h.is_empty() {
            v["mean_us"] = json!(h.mean().round() as u64);
            for (name, q) in QUANTILES {
                v[format!("{name}_us").replace('.', "")] = json!(h.value_at_quantile(q));
            }
            v["max_us"] = json!(h.max());
            v["curve"] = json!(percentile_curve(h)
                .iter()
                .map(|(x, us)| json!([(x * 100.0).round() / 100.0, us]))
                .collect::<Vec<_>>());
        }
        phases.insert(p.name().into(), v);
    }
    let codes: serde_json::Map<String, Value> = s
        .code_counts()
        .iter()
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    let errors: Vec<Value> = s
        .errors
        .iter()
        .map(|((stage, kind), n)| json!({"stage": stage, "kind": kind, "count": n}))
        .collect();
    let timeline: Vec<Value> = r
        .timeline
        .iter()
        .map(|p| {
            json!([
                (p.t * 1000.0).round() / 1000.0,
                p.accepted,
                p.rejected,
                p.failed,
                p.conn_errors
            ])
        })
        .collect();
    let c = &r.cfg;
    json!({
        "settings": {
            "targets": c.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "threads": r.threads,
            "driver": r.driver,
            "connections": c.connections,
            "messages": c.messages,
            "duration_s": c.duration.map(|d| d.as_secs_f64()),
            "per_session": c.per_session,
            "rcpts": c.rcpts,
            "size": match &c.body { Body::Size(s) => json!(s), Body::Dir(_) => Value::Null },
            "messages_dir": match &c.body { Body::Dir(d) => json!(d.display().to_string()), Body::Size(_) => Value::Null },
            "pipelining": c.pipelining,
            "rate": c.rate.as_ref().and_then(RateSchedule::single),
            "rate_steps": c.rate.as_ref().map(|r| r.steps().iter()
                .map(|&(r, secs)| json!([r, if secs.is_finite() { json!(secs) } else { Value::Null }]))
                .collect::<Vec<_>>()),
            "idle": c.idle,
            "proxy": c.proxy.map(|v| format!("{v:?}").to_lowercase()),
            "starttls": c.tls.is_some(),
            "tls_verify": c.tls.as_ref().map(|t| match &t.verify {
                TlsVerifyOpt::None => "none".to_string(),
                TlsVerifyOpt::CaFile(p) => p.display().to_string(),
            }),
            "tls_resume": c.tls.as_ref().is_some_and(|t| t.resume),
            "auth_plain": c.auth_plain.is_some(),
            "description": describe(r),
        },
        "run_id": r.run_id,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "busy_s": r.busy.as_secs_f64(),
        "interrupted": r.interrupted,
        "capped": r.capped,
        "messages": {
            "attempted": s.attempted,
            "accepted": s.accepted,
            "rejected_4xx": s.rejected_4xx,
            "rejected_5xx": s.rejected_5xx,
            "failed": s.failed,
            "rcpt_rejected": s.rcpt_rejected,
            "balanced": s.balanced(),
            "late": s.slices.late(),
            "skipped": s.slices.skipped(),
        },
        "connections": {
            "sessions": s.sessions,
            "failed": s.conn_failed,
            "dropped": s.conn_dropped,
            "errors": s.conn_errors(),
            "slots_gave_up": s.slots_gave_up,
            "no_pipelining": s.no_pipelining,
            "refused_421": s.slices.refused_421(),
            "connect_timeouts": s.slices.connect_timeouts(),
            "tls_sessions": s.tls_sessions,
            "tls_kinds": s.tls_kinds,
            "authenticated": s.auth_ok,
        },
        "rate_per_s": r.rate(),
        "phases": phases,
        "codes": codes,
        "errors": errors,
        "timeline_columns": ["t_s", "accepted", "rejected", "failed", "conn_errors"],
        "timeline": timeline,
        "slices_columns": slices::COLUMNS,
        "slices": s.slices.rows(),
    })
}

// ---------------------------------------------------------------- SVG

/// A plotted line: legend text, color, points.
pub type Series<'a, T> = (String, &'a str, Vec<(f64, T)>);

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plot area inside an SVG document.
pub struct Panel {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Label for a percentile-plot x position (x = -log10(1 - q)).
pub fn percentile_label(x: u32) -> String {
    match x {
        0 => "0%".into(),
        1 => "90%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)).replace("99.%", "99%"),
    }
}

/// Draws latency-by-percentile curves: `series` = (name, color, points (x, µs)).
pub fn latency_panel(out: &mut String, p: &Panel, title: &str, series: &[Series<'_, u64>]) {
    let pts = series.iter().flat_map(|s| s.2.iter());
    let x_max = pts
        .clone()
        .map(|(x, _)| *x)
        .fold(1.0f64, f64::max)
        .ceil()
        .max(1.0);
    let lo = pts.clone().map(|(_, v)| *v).min().unwrap_or(1).max(1) as f64;
    let hi = pts.map(|(_, v)| *v).max().unwrap_or(10).max(2) as f64;
    // Log scale in µs, whole decades.
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let sx = |x: f64| p.x + x / x_max * p.w;
    let sy = |v: f64| p.y + p.h - ((v.max(1.0).log10() - d0) / (d1 - d0)) * p.h;
    frame(out, p, title, "latency (ms, log scale)", "percentile");
    for k in 0..=(x_max as u32) {
        let x = sx(k as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            p.y,
            p.y + p.h,
            p.y + p.h + 14.0,
            percentile_label(k)
        );
    }
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let y = sy(10f64.powf(d));
        let label = ms_label(10f64.powf(d));
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{label}</text>"##,
            p.x,
            p.x + p.w,
            p.x - 4.0,
            y + 4.0
        );
        d += 1.0;
    }
    for (i, (name, color, curve)) in series.iter().enumerate() {
        if curve.is_empty() {
            continue;
        }
        let path: Vec<String> = curve
            .iter()
            .map(|(x, v)| format!("{:.1},{:.1}", sx(*x), sy(*v as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        legend(out, p, i, name, color);
    }
}

fn ms_label(us: f64) -> String {
    let ms = us / 1000.0;
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        let s = format!("{ms:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// Draws rate-over-time lines: `series` = (name, color, points (t seconds, per second)).
pub fn rate_panel(
    out: &mut String,
    p: &Panel,
    title: &str,
    y_label: &str,
    series: &[Series<'_, f64>],
) {
    let pts = series.iter().flat_map(|s| s.2.iter());
    let t_max = pts.clone().map(|(t, _)| *t).fold(1.0f64, f64::max);
    let y_max = nice_ceiling(pts.map(|(_, v)| *v).fold(1.0f64, f64::max));
    let sx = |t: f64| p.x + t / t_max * p.w;
    let sy = |v: f64| p.y + p.h - v / y_max * p.h;
    frame(out, p, title, y_label, "seconds");
    for k in 0..=5 {
        let v = y_max * k as f64 / 5.0;
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            p.x,
            p.x + p.w,
            p.x - 4.0,
            y + 4.0,
            human(v)
        );
    }
    let step = nice_ceiling(t_max / 8.0).max(0.25);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            p.y + p.h + 14.0,
            human(t)
        );
        t += step;
    }
    for (i, (name, color, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", sx(*t), sy(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        legend(out, p, i, name, color);
    }
}

fn frame(out: &mut String, p: &Panel, title: &str, y_label: &str, x_label: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>
<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>
<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>
<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##,
        p.x,
        p.y,
        p.w,
        p.h,
        p.x,
        p.y - 8.0,
        escape(title),
        p.x - 46.0,
        p.y + p.h / 2.0,
        p.x - 46.0,
        p.y + p.h / 2.0,
        escape(y_label),
        p.x + p.w / 2.0,
        p.y + p.h + 30.0,
        escape(x_label)
    );
}

/// Legends go to the right of the plot, where they hide no curve.
fn legend(out: &mut String, p: &Panel, i: usize, name: &str, color: &str) {
    let y = p.y + 10.0 + 18.0 * i as f64;
    let x = p.x + p.w + 14.0;
    let _ = writeln!(
        out,
        r##"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
        y - 4.0,
        x + 18.0,
        y,
        escape(name)
    );
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn human(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Per-interval rates from cumulative samples, in buckets of about `bucket` seconds.
pub fn rates(timeline: &[Sample], bucket: f64, f: impl Fn(&Sample) -> u64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut prev = Sample::default();
    for s in timeline {
        if s.t - prev.t + 1e-6 < bucket {
            continue;
        }
        let dt = s.t - prev.t;
        if dt > 0.0 {
            out.push((s.t, f(s).saturating_sub(f(&prev)) as f64 / dt));
        }
        prev = *s;
    }
    out
}

/// `--accepted FILE`: the sequence number of every message answered 250, one a line,
/// ascending, as written in its `X-Loadtest-Seq` header (zero-padded).
pub fn accepted(r: &Report) -> String {
    let mut seqs = r.stats.accepted_seqs.clone();
    seqs.sort_unstable();
    let mut out = String::with_capacity(seqs.len() * (SEQ_DIGITS + 1));
    for seq in seqs {
        let _ = writeln!(out, "{seq:0w$}", w = SEQ_DIGITS);
    }
    out
}

/// The report's plots: latency by percentile per phase, and throughput over time.
pub fn svg(r: &Report) -> String {
    let (w, h) = (1060.0, 760.0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="24" font-size="13">{}</text>"#,
        escape(&format!("smtp-loadtest: {}", describe(r)))
    );
    let series: Vec<Series<'_, u64>> = Phase::ALL
        .iter()
        .enumerate()
        .filter(|(_, p)| !r.stats.hist(**p).is_empty())
        .map(|(i, p)| {
            let hgram = r.stats.hist(*p);
            (
                format!(
                    "{} (n={}, p99 {} ms)",
                    p.label(),
                    hgram.len(),
                    ms(hgram.value_at_quantile(0.99))
                ),
                COLORS[i % COLORS.len()],
                percentile_curve(hgram),
            )
        })
        .collect();
    latency_panel(
        &mut o,
        &Panel {
            x: 80.0,
            y: 60.0,
            w: 640.0,
            h: 300.0,
        },
        "Latency by percentile",
        &series,
    );
    let bucket = if r.elapsed.as_secs_f64() >= 10.0 {
        1.0
    } else {
        0.25
    };
    let mut rs = vec![(
        format!("accepted/s (mean {:.0})", r.rate()),
        COLORS[0],
        rates(&r.timeline, bucket, |s| s.accepted),
    )];
    if r.stats.rejected() + r.stats.failed > 0 {
        rs.push((
            "rejected+failed/s".into(),
            COLORS[3],
            rates(&r.timeline, bucket, |s| s.rejected + s.failed),
        ));
    }
    rate_panel(
        &mut o,
        &Panel {
            x: 80.0,
            y: 440.0,
            w: 640.0,
            h: 260.0,
        },
        "Throughput over time",
        "messages/s",
        &rs,
    );
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(5), "99.999%");
        assert_eq!(nice_ceiling(7300.0), 10000.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }

    #[test]
    fn rates_from_cumulative_samples() {
        let tl: Vec<Sample> = (1..=8)
            .map(|i| Sample {
                t: i as f64 * 0.25,
                accepted: i * 100,
                ..Default::default()
            })
            .collect();
        let r = rates(&tl, 1.0, |s| s.accepted);
        assert_eq!(r, vec![(1.0, 400.0), (2.0, 400.0)]);
    }
}
