//! Charts drawn on the server as SVG: no script, nothing fetched.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

const W: f64 = 640.0;
const H: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// A percentage over time (the failure rate) against an optional
/// threshold, as a line with a dashed limit.
pub fn rate_over_time(points: &[(DateTime<Utc>, f64)], threshold: Option<f64>) -> Markup {
    if points.is_empty() {
        return html! { p.muted { "No vehicle has finished yet." } };
    }
    let top_value = points
        .iter()
        .map(|(_, v)| *v)
        .chain(threshold)
        .fold(1.0_f64, f64::max);
    // A round top: 5, 10, 20, 25, 50 or 100 percent.
    let max = [5.0, 10.0, 20.0, 25.0, 50.0, 100.0]
        .into_iter()
        .find(|m| top_value * 1.1 <= *m)
        .unwrap_or(100.0);
    let t0 = points[0].0.timestamp_millis() as f64;
    let t1 = points[points.len() - 1].0.timestamp_millis() as f64;
    let span = (t1 - t0).max(1.0);
    let x = |t: DateTime<Utc>| {
        if points.len() == 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (t.timestamp_millis() as f64 - t0) / span * (W - LEFT - RIGHT)
        }
    };
    let y = |v: f64| TOP + (1.0 - v.clamp(0.0, max) / max) * (H - TOP - BOTTOM);
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let last = points[points.len() - 1];
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("failure rate over time, now {:.1}%", last.1)) {
            @for i in 0..=4 {
                @let v = max * f64::from(i) / 4.0;
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y(v)) y2=(y(v)) {}
                text x=(LEFT - 6.0) y=(y(v) + 4.0) text-anchor="end" { (format!("{v:.0}%")) }
            }
            line.axis x1=(LEFT) x2=(W - RIGHT) y1=(H - BOTTOM) y2=(H - BOTTOM) {}
            @if let Some(limit) = threshold {
                line.threshold x1=(LEFT) x2=(W - RIGHT) y1=(y(limit)) y2=(y(limit)) {}
                text x=(W - RIGHT) y=(y(limit) - 4.0) text-anchor="end" { "threshold " (format!("{limit}%")) }
            }
            @if points.len() == 1 {
                circle.line cx=(x(last.0)) cy=(y(last.1)) r="3" {}
            } @else {
                polyline.line points=(line.join(" ")) {}
            }
            text x=(LEFT) y=(H - 8.0) { (points[0].0.format("%H:%M")) }
            text x=(W - RIGHT) y=(H - 8.0) text-anchor="end" { (last.0.format("%H:%M")) " UTC" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn draws_the_line_and_the_threshold() {
        let t = |m: i64| Utc.timestamp_opt(1_700_000_000 + m * 60, 0).unwrap();
        let svg =
            rate_over_time(&[(t(0), 0.0), (t(1), 4.0), (t(2), 12.5)], Some(10.0)).into_string();
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains("class=\"threshold\""));
        assert!(svg.contains("now 12.5%"));
        assert!(svg.contains(">20%<"), "the scale rounds up to 20%: {svg}");
    }

    #[test]
    fn nothing_finished_says_so() {
        assert!(rate_over_time(&[], Some(5.0))
            .into_string()
            .contains("No vehicle has finished yet"));
    }
}
