//! Inline SVG charts for the report: line charts with axes, ticks, a legend and an optional
//! diagonal (ROC, precision–recall, reliability, training curves). Vector, so they print
//! sharp and scale to a phone's width; no script, no font files.

use std::fmt::Write as _;

/// Colours of successive series (Okabe–Ito, readable with colour-blindness).
const COLOURS: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#999999",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Thick and black (the pooled curve).
    pub bold: bool,
    /// Points marked with dots.
    pub dots: bool,
}

/// A chart's frame.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: (f64, f64),
    pub y: (f64, f64),
    /// A dashed line from (x0, y0) to (x1, y1) (chance, perfect calibration).
    pub diagonal: bool,
}

const W: f64 = 420.0;
const H: f64 = 320.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About five round tick values across `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    // Each tick from its index, rounded to the step's decimals (no accumulated error).
    let decimals = (-step.log10().floor()).max(0.0) as i32 + 1;
    let round = |x: f64| {
        let m = 10f64.powi(decimals);
        (x * m).round() / m
    };
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|k| round(k as f64 * step))
        .take_while(|&t| t <= hi + step * 1e-9)
        .map(|t| if t == 0.0 { 0.0 } else { t })
        .collect()
}

fn label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The chart as an `<svg>` element.
pub fn line_chart(chart: &Chart, series: &[Series]) -> String {
    let (x0, x1) = chart.x;
    let (y0, y1) = chart.y;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0).max(1e-12) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0).max(1e-12) * ph;
    let legend = series.iter().filter(|s| !s.points.is_empty()).count();
    let total = H + 15.0 * legend as f64 + 4.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {total}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title><text x="{cx}" y="17" text-anchor="middle" class="ct">{t}</text>"#,
        t = esc(&chart.title),
        cx = W / 2.0
    );
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{b:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"##,
            b = TOP + ph,
            ty = TOP + ph + 15.0,
            l = label(t)
        );
    }
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            r = LEFT + pw,
            tx = LEFT - 5.0,
            ty = y + 4.0,
            l = label(t)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#555"/><text x="{cx:.1}" y="{by:.1}" text-anchor="middle">{xl}</text><text transform="translate(13 {cy:.1}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
        cx = LEFT + pw / 2.0,
        by = H - 8.0,
        xl = esc(&chart.x_label),
        cy = TOP + ph / 2.0,
        yl = esc(&chart.y_label)
    );
    if chart.diagonal {
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 4"/>"##,
            sx(x0),
            sy(y0),
            sx(x1),
            sy(y1)
        );
    }
    let mut row = 0;
    for (i, ser) in series.iter().enumerate() {
        let colour = if ser.bold {
            "#000"
        } else {
            COLOURS[i % COLOURS.len()]
        };
        let width = if ser.bold { 2.6 } else { 1.6 };
        // Points that land on the previous one's half-pixel are left out: a curve of 10,000
        // images draws the same and stays a few kB.
        let mut pts: Vec<String> = vec![];
        for &(x, y) in ser
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
        {
            let p = format!(
                "{:.1},{:.1}",
                (sx(x) * 2.0).round() / 2.0,
                (sy(y) * 2.0).round() / 2.0
            );
            if pts.last() != Some(&p) {
                pts.push(p);
            }
        }
        if pts.is_empty() {
            continue;
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{}"/>"#,
            pts.join(" ")
        );
        if ser.dots || pts.len() == 1 {
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
            }
        }
        // The legend under the chart, one row per series: it never hides a curve.
        let ly = H + 4.0 + 15.0 * row as f64;
        row += 1;
        let lx = LEFT;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{a:.1}" x2="{b:.1}" y2="{a:.1}" stroke="{colour}" stroke-width="{width}"/><text x="{c:.1}" y="{d:.1}" class="lg">{n}</text>"#,
            a = ly - 4.0,
            b = lx + 18.0,
            c = lx + 22.0,
            d = ly,
            n = esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = ticks(0.1, 0.37);
        assert!(t.len() >= 3 && t.len() <= 7, "{t:?}");
        assert!(t[0] >= 0.1 && *t.last().unwrap() <= 0.37, "{t:?}");
    }

    #[test]
    fn text_is_escaped() {
        let svg = line_chart(
            &Chart {
                title: "a<b & \"c\"".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                x: (0.0, 1.0),
                y: (0.0, 1.0),
                diagonal: true,
            },
            &[Series {
                name: "<s>".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                bold: false,
                dots: false,
            }],
        );
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;") && svg.contains("&lt;s&gt;"));
        assert!(!svg.contains("<s>"));
    }
}
