//! Small, dependency-free SVG chart writer for model reports.
//!
//! Training writes `report.md` with SVG charts next to it, read by parking planners in
//! a browser or on GitHub. The SVG is written by hand instead of with a plotting crate:
//! `plotters` needs font handling (system or bundled fonts) to lay out text, which is
//! heavy and platform-dependent for a handful of report figures. Here the viewer lays
//! out the text; we only emit shapes and `<text>` elements.
//!
//! Output is deterministic (same input, same bytes) so reports diff cleanly, never
//! panics on odd input (empty, NaN, infinite, flat data), and writes coordinates with
//! at most two decimals so files stay small.

use std::fmt::Write as _;

/// Plot area (left, right, top, bottom); the right margin holds the legend.
const PL: f64 = 70.0;
const PR: f64 = 700.0;
const PT: f64 = 40.0;
const PB: f64 = 360.0;
/// Okabe-Ito palette (colour-blind friendly); its yellow is left out as too faint on white.
const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000",
];
/// Magnitude cap so that spans between extreme finite values stay finite.
const BIG: f64 = 1e300;

/// One line of a line chart, e.g. observed occupancy or a model's forecast.
///
/// Points are drawn in the given order, so pass them sorted by x. A NaN `y` leaves a
/// gap, so missing sensor data shows as missing instead of being interpolated over;
/// points with a non-finite `x` or an infinite `y` are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A shaded band such as an 80% prediction interval, drawn under the lines so the
/// uncertainty is visible without hiding the point forecast.
///
/// A band whose name starts with a line's name (e.g. "forecast 80%" and "forecast")
/// takes that line's colour, so an interval visibly belongs to its forecast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Band {
    /// Legend text.
    pub name: String,
    /// `(x, low, high)` triples in x order; a NaN low/high leaves a gap, other
    /// non-finite triples are skipped. Swapped low/high are tolerated.
    pub points: Vec<(f64, f64, f64)>,
}

/// A line chart (e.g. occupancy over time) with optional prediction bands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    /// Heading shown above the plot.
    pub title: String,
    /// Horizontal axis caption.
    pub x_label: String,
    /// Vertical axis caption (drawn rotated).
    pub y_label: String,
    /// Lines, coloured from the palette in order (cycling after 7).
    pub lines: Vec<Line>,
    /// Shaded bands, drawn beneath all lines.
    pub bands: Vec<Band>,
    /// Custom x tick labels (position, text), e.g. dates for x in hours or ms; None = nice numeric ticks.
    /// Planners read dates, not hour offsets. Ticks outside the data's x range are
    /// dropped and labels that would overlap are skipped.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// Fixed y range; None = from the data (with a little padding; include 0 when all data is >= 0 and close to 0).
    /// Fixing it (e.g. 0..1 for occupancy) keeps charts comparable; data outside is
    /// clipped, and a non-finite bound falls back to the data range.
    pub y_range: Option<(f64, f64)>,
}

/// Grouped bars (e.g. error per model per lot): one group per category on the x axis,
/// one bar per series inside each group, so series are easy to compare per category.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    /// Heading shown above the plot.
    pub title: String,
    /// Horizontal axis caption.
    pub x_label: String,
    /// Vertical axis caption (drawn rotated).
    pub y_label: String,
    /// Group labels along the x axis.
    pub categories: Vec<String>,
    /// (series name, one value per category; NaN = no bar). Negative bars go down from 0.
    pub series: Vec<(String, Vec<f64>)>,
}

/// Document start: SVG 1.1 at 900x420 (wide enough for a week of hourly data, small
/// enough for markdown), sans-serif text, white background, then the plot clip path.
const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="900" height="420" viewBox="0 0 900 420" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<defs><clipPath id="plot">"#;
/// Attribute sets shared by several elements.
const TITLE: &str = r#" text-anchor="middle" font-size="16" font-weight="bold""#;
const MID: &str = r#" text-anchor="middle""#;
const YLABEL: &str = r#" text-anchor="middle" transform="rotate(-90)""#;
const XT: &str = r#" text-anchor="middle" font-size="11""#;
const YT: &str = r#" text-anchor="end" font-size="11""#;
const NOTE: &str = r##" text-anchor="middle" font-size="14" fill="#888""##;
const INK: &str = r##"stroke="#333""##;
const GRID: &str = r##"stroke="#e5e5e5""##;
const LINE: &str = r#"fill="none" stroke-width="2" stroke-linejoin="round""#;
const CLIP: &str = "<g clip-path=\"url(#plot)\">\n";

/// Maps the data range `.0..=.1` onto pixels `.2..=.3` for one axis.
#[derive(Debug, Clone, Copy)]
struct Scale(f64, f64, f64, f64);

impl Scale {
    /// Pixel for `v`; clamped so far-out values (clipped anyway) keep numbers short.
    fn px(self, v: f64) -> f64 {
        let t = (v.clamp(-BIG, BIG) - self.0) / (self.1 - self.0);
        (self.2 + t * (self.3 - self.2)).clamp(-1e6, 1e6)
    }
}

/// Legend swatch kind, so each entry looks like the mark it stands for.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Line,
    Band,
    Bar,
}

/// Renders a line chart as a standalone SVG document.
///
/// The x range comes from the data; the y range from `y_range` or the data. Without
/// any drawable point the axes, title and a "no data" note are still drawn, so a
/// report never shows a broken image.
#[must_use]
pub fn line_chart_svg(chart: &LineChart) -> String {
    let (mut line_runs, mut band_runs) = (Vec::new(), Vec::new());
    for l in &chart.lines {
        line_runs.push(runs(l.points.iter().map(|&(x, y)| (x, y, y))));
    }
    for b in &chart.bands {
        band_runs.push(runs(b.points.iter().copied()));
    }
    let all = || line_runs.iter().chain(&band_runs).flatten().flatten();
    let x_ext = extent(all().map(|p| p.0));
    let (xlo, xhi) = x_ext.map_or((0.0, 1.0), |(a, b)| widen(a, b));
    let (ylo, yhi) = match chart.y_range {
        Some((a, b)) if a.is_finite() && b.is_finite() => widen(a, b),
        _ => auto_range(extent(all().flat_map(|p| [p.1, p.2])), false),
    };
    let (x, y) = (Scale(xlo, xhi, PL, PR), Scale(ylo, yhi, PB, PT));
    let mut o = open(&chart.title, &chart.x_label, &chart.y_label, y);
    let ticks = match &chart.x_ticks {
        Some(t) => t.clone(),
        None => {
            let t = nice_ticks(xlo, xhi, 8);
            t.iter().copied().zip(tick_labels(&t)).collect()
        }
    };
    x_axis(&mut o, x, ticks, true);
    let (mut legend, mut band_legend) = (Vec::new(), Vec::new());
    o.push_str(CLIP);
    for (j, (band, rs)) in chart.bands.iter().zip(&band_runs).enumerate() {
        let c = colour(owner(&chart.lines, &band.name).unwrap_or(chart.lines.len() + j));
        band_legend.push((band.name.as_str(), c, Mark::Band));
        for r in rs {
            let top = r.iter().map(|p| (p.0, p.1.max(p.2)));
            let pts = pairs(top.chain(r.iter().rev().map(|p| (p.0, p.1.min(p.2)))), x, y);
            let _ = writeln!(
                o,
                r#"<polygon points="{pts}" fill="{c}" fill-opacity=".2"/>"#
            );
        }
    }
    for (i, (line, rs)) in chart.lines.iter().zip(&line_runs).enumerate() {
        let c = colour(i);
        legend.push((line.name.as_str(), c, Mark::Line));
        for r in rs {
            if let [(px, py, _)] = r.as_slice() {
                let (cx, cy) = (num(x.px(*px)), num(y.px(*py)));
                let _ = writeln!(o, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>"#);
            } else {
                let pts = pairs(r.iter().map(|p| (p.0, p.1)), x, y);
                let _ = writeln!(o, r#"<polyline points="{pts}" stroke="{c}" {LINE}/>"#);
            }
        }
    }
    o.push_str("</g>\n");
    legend.extend(band_legend);
    close(o, &legend, x_ext.is_some())
}

/// Renders a grouped bar chart as a standalone SVG document.
///
/// The y range always includes 0 because bar length encodes the value; negative
/// values hang down from a zero line.
#[must_use]
pub fn bar_chart_svg(chart: &BarChart) -> String {
    let n = chart.categories.len();
    let values = chart.series.iter().flat_map(|(_, v)| v.iter().take(n));
    let ext = extent(values.copied());
    let (lo, hi) = auto_range(ext, true);
    let (x, y) = (Scale(0.0, n.max(1) as f64, PL, PR), Scale(lo, hi, PB, PT));
    let mut o = open(&chart.title, &chart.x_label, &chart.y_label, y);
    let ticks = (0..n).map(|i| i as f64 + 0.5).zip(chart.categories.clone());
    x_axis(&mut o, x, ticks.collect(), false);
    // Each group uses 80% of its slot, split evenly between the series.
    let w = 0.8 / chart.series.len().max(1) as f64;
    let (bw, zero) = (x.px(w) - PL, y.px(0.0));
    let mut legend = Vec::new();
    o.push_str(CLIP);
    for (si, (name, vals)) in chart.series.iter().enumerate() {
        let c = colour(si);
        legend.push((name.as_str(), c, Mark::Bar));
        let fill = format!(r#"fill="{c}""#);
        for (ci, v) in vals.iter().take(n).enumerate().filter(|p| p.1.is_finite()) {
            let (bx, top) = (x.px(ci as f64 + 0.1 + w * si as f64), y.px(*v));
            rect(&mut o, (bx, top.min(zero)), (bw, (top - zero).abs()), &fill);
        }
    }
    o.push_str("</g>\n");
    if lo < 0.0 {
        seg(&mut o, (PL, zero), (PR, zero), INK);
    }
    close(o, &legend, ext.is_some())
}

/// Palette colour for series `i`, cycling so any number of series gets a colour.
fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Index of the line whose (non-empty) name is the longest prefix of a band's name,
/// so a band "forecast 80%" is drawn in the colour of its line "forecast".
fn owner(lines: &[Line], band: &str) -> Option<usize> {
    let fits = |(_, l): &(usize, &Line)| !l.name.is_empty() && band.starts_with(&l.name);
    let hits = lines.iter().enumerate().filter(fits);
    hits.max_by_key(|(_, l)| l.name.len()).map(|(i, _)| i)
}

/// Starts the document and draws what both chart kinds share: title, horizontal
/// grid with y ticks and labels, and the axis captions.
fn open(title: &str, x_label: &str, y_label: &str, y: Scale) -> String {
    let mut o = String::from(HEAD);
    rect(&mut o, (PL, PT), (PR - PL, PB - PT), "");
    o.push_str("</clipPath></defs>\n");
    let mid = (PL + PR) / 2.0;
    text(&mut o, mid, 24.0, TITLE, title);
    let ticks = nice_ticks(y.0, y.1, 5);
    for (v, label) in ticks.iter().zip(tick_labels(&ticks)) {
        let py = y.px(*v);
        seg(&mut o, (PL, py), (PR, py), GRID);
        seg(&mut o, (PL - 5.0, py), (PL, py), INK);
        text(&mut o, PL - 8.0, py + 4.0, YT, &label);
    }
    text(&mut o, mid, PB + 40.0, MID, x_label);
    text(&mut o, -(PT + PB) / 2.0, 18.0, YLABEL, y_label);
    o
}

/// Draws x tick marks and labels inside the plot (plus vertical grid lines if `grid`),
/// skipping labels that would overlap the previous one so dense dates stay legible.
fn x_axis(o: &mut String, x: Scale, mut ticks: Vec<(f64, String)>, grid: bool) {
    ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut right = f64::NEG_INFINITY;
    for (px, label) in ticks.into_iter().map(|(v, s)| (x.px(v), s)) {
        if !(PL - 0.5..=PR + 0.5).contains(&px) {
            continue;
        }
        seg(o, (px, PB), (px, PB + 5.0), INK);
        // Rough text width at 11px: ~6.6px per character.
        let half = label.chars().count() as f64 * 3.3;
        if px - half >= right + 6.0 {
            right = px + half;
            if grid {
                seg(o, (px, PT), (px, PB), GRID);
            }
            text(o, px, PB + 18.0, XT, &label);
        }
    }
}

/// Finishes the document: axis lines, a "no data" note when nothing was drawn, and
/// the legend (17 rows at most, then "+N more", so it never runs off the canvas).
fn close(mut o: String, legend: &[(&str, &str, Mark)], has_data: bool) -> String {
    let _ = writeln!(o, r#"<path d="M{PL} {PT}V{PB}H{PR}" fill="none" {INK}/>"#);
    if !has_data {
        text(&mut o, (PL + PR) / 2.0, (PT + PB) / 2.0, NOTE, "no data");
    }
    let x = PR + 14.0;
    for (i, &(name, c, mark)) in legend.iter().enumerate() {
        let y = PT + 8.0 + 18.0 * i as f64;
        if i == 16 && legend.len() > 17 {
            text(
                &mut o,
                x,
                y + 4.0,
                "",
                &format!("+{} more", legend.len() - i),
            );
            break;
        }
        let (h, opacity) = match mark {
            Mark::Line => (3.0, 1.0),
            Mark::Band => (10.0, 0.3),
            Mark::Bar => (10.0, 1.0),
        };
        let style = format!(r#"fill="{c}" fill-opacity="{opacity}""#);
        rect(&mut o, (x, y - h / 2.0), (18.0, h), &style);
        let cut = if name.chars().count() > 24 { 23 } else { 24 };
        let tail = (cut == 23).then_some('…');
        let shown: String = name.chars().take(cut).chain(tail).collect();
        text(&mut o, x + 24.0, y + 4.0, "", &shown);
    }
    o.push_str("</svg>\n");
    o
}

/// Writes one `<text>` element with escaped content.
fn text(o: &mut String, x: f64, y: f64, attrs: &str, s: &str) {
    let (x, y, s) = (num(x), num(y), esc(s));
    let _ = writeln!(o, r#"<text x="{x}" y="{y}"{attrs}>{s}</text>"#);
}

/// Writes one `<line>` element from `a` to `b`.
fn seg(o: &mut String, a: (f64, f64), b: (f64, f64), s: &str) {
    let (x1, y1, x2, y2) = (num(a.0), num(a.1), num(b.0), num(b.1));
    let _ = writeln!(o, r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {s}/>"#);
}

/// Writes one `<rect>` element at `p` with size `d`.
fn rect(o: &mut String, p: (f64, f64), d: (f64, f64), s: &str) {
    let (x, y, w, h) = (num(p.0), num(p.1), num(d.0), num(d.1));
    let _ = writeln!(o, r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" {s}/>"#);
}

/// Splits points into drawable runs: a NaN y (or low/high) ends a run, other
/// non-finite points are skipped, matching the documented gap semantics.
fn runs(pts: impl Iterator<Item = (f64, f64, f64)>) -> Vec<Vec<(f64, f64, f64)>> {
    let mut out = vec![Vec::new()];
    for p in pts {
        let ok = p.0.is_finite() && p.1.is_finite() && p.2.is_finite();
        match out.last_mut() {
            Some(run) if ok => run.push(p),
            _ if p.1.is_nan() || p.2.is_nan() => out.push(Vec::new()),
            _ => {}
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// `x,y x,y ...` pixel list for polylines and polygons.
fn pairs(pts: impl Iterator<Item = (f64, f64)>, x: Scale, y: Scale) -> String {
    let xy = |(a, b): (f64, f64)| format!("{},{}", num(x.px(a)), num(y.px(b)));
    pts.map(xy).collect::<Vec<_>>().join(" ")
}

/// Min and max of the finite values (clamped to `BIG`), or None if there are none.
fn extent(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut r: Option<(f64, f64)> = None;
    for v in vals.filter(|v| v.is_finite()).map(|v| v.clamp(-BIG, BIG)) {
        r = Some(r.map_or((v, v), |(a, b)| (a.min(v), b.max(v))));
    }
    r
}

/// Orders a range and widens it when (almost) empty, so a single value or a flat
/// line still gets a usable axis instead of a division by zero.
fn widen(a: f64, b: f64) -> (f64, f64) {
    let (lo, hi) = (a.min(b).clamp(-BIG, BIG), a.max(b).clamp(-BIG, BIG));
    if hi - lo > lo.abs().max(hi.abs()) * 1e-9 {
        return (lo, hi);
    }
    let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
    (lo - d, hi + d)
}

/// Value range from data: pulled to 0 when forced or when 0 is no further below the
/// minimum than the data's own span (so occupancy charts start at 0), padded 5%
/// without crossing 0, then rounded out to whole tick steps so grid lines frame the data.
fn auto_range(ext: Option<(f64, f64)>, force_zero: bool) -> (f64, f64) {
    let Some((lo, hi)) = ext else {
        return (0.0, 1.0);
    };
    let (nonneg, nonpos) = (lo >= 0.0, hi <= 0.0 && lo < 0.0);
    let zero = force_zero || (nonneg && lo <= hi / 2.0);
    let z = if zero { 0.0 } else { lo };
    let (lo, hi) = widen(lo.min(z), hi.max(z));
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let lo = if nonneg { lo.max(0.0) } else { lo };
    let hi = if nonpos { hi.min(0.0) } else { hi };
    // Repeat because widening can raise the tick step (2 -> 5), which must align too.
    let (mut a, mut b) = (lo, hi);
    for _ in 0..3 {
        let step = nice_step(b - a, 5);
        // Adding 0.0 turns a -0.0 bound into 0.0.
        let na = (a / step + 1e-9).floor() * step + 0.0;
        let nb = (b / step - 1e-9).ceil() * step + 0.0;
        if !(na.is_finite() && nb.is_finite() && na < nb) {
            break;
        }
        (a, b) = (na, nb);
    }
    (a, b)
}

/// A 1, 2 or 5 x 10^k step giving about `target` intervals over `span`; round steps
/// make grid lines readable at a glance. 0 if the span is unusable.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 0.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|m| raw <= m * mag * (1.0 + 1e-9));
    m.unwrap_or(10.0) * mag
}

/// Multiples of the nice step inside `lo..=hi`; empty if the range is unusable or
/// would need more than 100 ticks (guards against huge loops on odd ranges).
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step(hi - lo, target);
    let (first, last) = ((lo / step - 1e-9).ceil(), (hi / step + 1e-9).floor());
    let n = last - first;
    if !(step > 0.0 && (0.0..=100.0).contains(&n)) {
        return Vec::new();
    }
    let snap = |v: f64| if v.abs() < step * 1e-6 { 0.0 } else { v };
    (0..=n as usize)
        .map(|i| snap((first + i as f64) * step))
        .collect()
}

/// Labels for evenly spaced ticks with just enough decimals for the step ("0.3", not
/// "0.30000000000000004"); very large or tiny values switch to exponent form.
fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let step = if let [a, b, ..] = ticks { b - a } else { 1.0 };
    let max = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let sd = (max.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
    let dp = (-(step.log10() + 1e-9).floor()).clamp(0.0, 6.0) as usize;
    let exp = max >= 1e6 || step < 1e-4;
    let label = |&v: &f64| if exp { sci(v, sd) } else { format!("{v:.dp$}") };
    ticks.iter().map(label).collect()
}

/// Exponent notation with up to `d` mantissa decimals ("1.5e6"); 0 stays "0".
fn sci(v: f64, d: usize) -> String {
    let s = format!("{v:.d$e}");
    match s.split_once('e') {
        Some((m, e)) if v != 0.0 => format!("{}e{e}", trim(m)),
        _ => "0".into(),
    }
}

/// Coordinate with at most 2 decimals and no trailing zeros, keeping files small;
/// non-finite values (only possible from degenerate input) become 0.
fn num(v: f64) -> String {
    let s = format!("{:.2}", if v.is_finite() { v } else { 0.0 });
    match trim(&s) {
        "-0" => "0".into(),
        t => t.into(),
    }
}

/// Drops trailing zeros after a decimal point ("1.50" -> "1.5", "2.00" -> "2").
fn trim(s: &str) -> &str {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.')
}

/// XML-escapes text and drops control characters, which XML 1.0 forbids.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: f64 = f64::NAN;
    const I: f64 = f64::INFINITY;

    /// Tiny well-formedness check: prolog, final `</svg>`, balanced element tags, and
    /// no leaked non-finite numbers.
    fn well_formed(svg: &str) -> bool {
        let (mut stack, mut rest) = (Vec::new(), svg);
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else {
                return false;
            };
            let tag = &rest[i + 1..i + j];
            rest = &rest[i + j + 1..];
            match tag.strip_prefix('/') {
                _ if tag.starts_with(['?', '!']) || tag.ends_with('/') => {}
                Some(name) if stack.pop() != Some(name) => return false,
                Some(_) => {}
                None => stack.push(tag.split([' ', '\n']).next().unwrap_or_default()),
            }
        }
        let clean = !svg.contains("NaN") && !svg.contains("inf") && !rest.contains('>');
        svg.starts_with("<?xml") && svg.ends_with("</svg>\n") && stack.is_empty() && clean
    }

    fn chart(lines: &[(&str, &[(f64, f64)])]) -> LineChart {
        let line = |&(name, pts): &(&str, &[(f64, f64)])| Line {
            name: name.into(),
            points: pts.into(),
        };
        LineChart {
            lines: lines.iter().map(line).collect(),
            ..Default::default()
        }
    }

    fn bars(categories: &[&str], series: &[(&str, &[f64])]) -> BarChart {
        let series = series.iter().map(|&(s, v)| (s.into(), v.into())).collect();
        let categories = categories.iter().map(|c| c.to_string()).collect();
        BarChart {
            categories,
            series,
            ..Default::default()
        }
    }

    fn sample() -> LineChart {
        let mut c = chart(&[
            ("observed", &[(0.0, 0.2), (1.0, 0.5), (2.0, 0.7)]),
            ("forecast", &[(2.0, 0.7), (3.0, 0.8)]),
        ]);
        let points = vec![(2.0, 0.6, 0.8), (3.0, 0.65, 0.95)];
        c.bands.push(Band {
            name: "forecast 80%".into(),
            points,
        });
        c.title = "Lot <A> & \"B\"".into();
        (c.x_label, c.y_label) = ("hour's index".into(), "occupancy".into());
        c
    }

    #[test]
    fn labels_and_legend_appear_escaped() {
        let svg = line_chart_svg(&sample());
        let want = [
            "Lot &lt;A&gt; &amp; &quot;B&quot;",
            "hour&apos;s index",
            ">occupancy<",
            ">observed<",
        ];
        for s in want.into_iter().chain([">forecast<", ">forecast 80%<"]) {
            assert!(svg.contains(s), "missing {s}");
        }
        assert!(!svg.contains("<A>"));
        // The band shares its forecast line's colour.
        assert!(svg.contains(&format!(r#"fill="{}" fill-opacity=".2""#, PALETTE[1])));
        let mut b = bars(&["P&R"], &[("naive'", &[1.0])]);
        b.title = "MAE <by lot>".into();
        let svg = bar_chart_svg(&b);
        for s in [">MAE &lt;by lot&gt;<", ">P&amp;R<", ">naive&apos;<"] {
            assert!(svg.contains(s), "missing {s}");
        }
    }

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            esc("a&b<c>d\"e'f\u{1}g"),
            "a&amp;b&lt;c&gt;d&quot;e&apos;fg"
        );
        assert_eq!(
            [num(-0.001), num(12.3456), num(100.0), num(N)],
            ["0", "12.35", "100", "0"]
        );
        assert_eq!(
            [sci(1.5e7, 2), sci(0.0, 2), sci(-2e-5, 1)],
            ["1.5e7", "0", "-2e-5"]
        );
    }

    #[test]
    fn nice_ticks_ranges_and_labels() {
        let near = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        let ticks = nice_ticks(0.0, 0.37, 5);
        assert!(
            ticks.len() == 4 && near(&ticks, &[0.0, 0.1, 0.2, 0.3]),
            "{ticks:?}"
        );
        assert_eq!(tick_labels(&ticks), ["0.0", "0.1", "0.2", "0.3"]);
        assert_eq!(nice_ticks(-3.0, 7.0, 5), [-2.0, 0.0, 2.0, 4.0, 6.0]);
        assert!(nice_ticks(1.0, 1.0, 5).is_empty() && nice_ticks(0.0, I, 5).is_empty());
        assert_eq!(tick_labels(&[0.0, 2e6, 4e6]), ["0", "2e6", "4e6"]);
        assert_eq!(auto_range(Some((0.2, 0.9)), false), (0.0, 1.0));
        assert_eq!(auto_range(Some((0.6, 0.9)), false), (0.5, 1.0));
        assert_eq!(auto_range(Some((-2.0, -2.0)), true), (-2.5, 0.0));
        // A tick step that grows while rounding out (2 -> 5) still frames the range.
        assert_eq!(auto_range(Some((42.0, 42.0)), false), (35.0, 50.0));
    }

    #[test]
    fn gaps_split_polylines() {
        let pts = [
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, N),
            (3.0, 1.0),
            (4.0, I),
            (5.0, 2.0),
            (6.0, N),
            (7.0, 3.0),
        ];
        let svg = line_chart_svg(&chart(&[("a", &pts)]));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(well_formed(&svg));
    }

    #[test]
    fn degenerate_inputs_are_well_formed() {
        let m = f64::MAX;
        let mut charts = [
            chart(&[]),
            chart(&[("empty", &[])]),
            chart(&[("nan", &[(N, N), (1.0, N), (I, 1.0), (2.0, -I)])]),
            chart(&[("one", &[(5.0, 3.0)])]),
            chart(&[("flat", &[(1.0, 0.0), (2.0, 0.0)]), ("neg", &[(1.0, -1.0)])]),
            chart(&[("huge", &[(-m, m), (m, -m), (1e-320, 1e-320)])]),
            chart(&[]),
            sample(),
        ];
        (charts[6].y_range, charts[7].y_range) = (Some((1.0, 1.0)), Some((N, 1.0)));
        charts[6].x_ticks = Some(vec![(N, "<x>".into()), (0.5, "mid".into())]);
        let points = vec![(0.0, 2.0, 1.0), (1.0, I, 1.0), (2.0, 1.0, N)];
        charts[7].bands.push(Band {
            name: String::new(),
            points,
        });
        for (i, c) in charts.iter().enumerate() {
            let svg = line_chart_svg(c);
            assert!(well_formed(&svg), "line chart {i}:\n{svg}");
            assert_eq!(svg.contains("no data"), i < 3 || i == 6, "line chart {i}");
        }
        let many: Vec<String> = (0..500).map(|i| format!("lot {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let zeros: Vec<(&str, &[f64])> = (0..30).map(|_| ("s", &[0.0; 500][..])).collect();
        let cases = [
            bars(&[], &[]),
            bars(&["a"], &[]),
            bars(&["a", "b"], &[("s", &[N, I])]),
            bars(&["a", "b"], &[("s", &[-2.0]), ("t", &[1.0, 2.0, 3.0])]),
            bars(&many, &zeros),
        ];
        for (i, b) in cases.iter().enumerate() {
            let svg = bar_chart_svg(b);
            assert!(well_formed(&svg), "bar chart {i}:\n{svg}");
            assert_eq!(svg.contains("no data"), i < 3, "bar chart {i}");
        }
        assert!(bar_chart_svg(&cases[4]).contains("+14 more"));
    }

    #[test]
    fn negative_bars_hang_from_zero() {
        let svg = bar_chart_svg(&bars(&["a"], &[("s", &[-2.0])]));
        let zero = num(Scale(-2.5, 0.0, PB, PT).px(0.0));
        assert!(svg.contains(&format!(r#"y="{zero}" width="#)), "{svg}");
    }

    #[test]
    fn deterministic() {
        assert_eq!(line_chart_svg(&sample()), line_chart_svg(&sample()));
        let b = bars(&["x", "y"], &[("s", &[0.5, 0.25])]);
        assert_eq!(bar_chart_svg(&b), bar_chart_svg(&b.clone()));
    }
}
