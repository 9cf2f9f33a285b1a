//! Latency percentiles of the default load run, plotted to `docs/latency.svg`: for each
//! server, publish -> receive latency against the share of events delivered within it
//! (the x axis in "nines": 90 %, 99 %, 99.9 %, ...).

use plotters::prelude::*;

/// The percentiles each run reports (and the plot draws).
pub(crate) const PERCENTILES: [f64; 8] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999];

/// `sorted` latencies in microseconds -> (percentile, milliseconds) for [`PERCENTILES`].
pub(crate) fn percentiles(sorted: &[u64]) -> Vec<(f64, f64)> {
    PERCENTILES
        .iter()
        .map(|&p| (p, percentile_ms(sorted, p)))
        .collect()
}

/// The `p` percentile of `sorted_us` (microseconds), in milliseconds; 0 if empty.
pub(crate) fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    let at = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
    sorted_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

/// One panel of the plot: a title and, per server, its label and percentiles.
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// eric blue in every panel; references red; the hyper floor magenta.
fn color(label: &str) -> RGBColor {
    match label {
        "eric" => BLUE,
        l if l.contains("hyper") => MAGENTA,
        _ => RED,
    }
}

/// x = 1 / (1 - p), so that each "nine" takes the same width on a log axis.
fn nines(p: f64) -> f64 {
    1.0 / (1.0 - p)
}

pub(crate) fn plot(panels: &[Panel], path: &std::path::Path) {
    let root = SVGBackend::new(path, (1000, 460)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        let points = || panel.lines.iter().flat_map(|l| l.1.iter());
        let y_min = points()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .max(0.01)
            / 2.0;
        let y_max = points().map(|p| p.1).fold(0.1, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (1.5..nines(0.99995)).log_scale(),
                (y_min..y_max).log_scale(),
            )
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("share of events delivered within")
            .y_desc("latency, ms")
            .x_label_formatter(&|x| {
                let share = (1.0 - 1.0 / x) * 100.0;
                format!("{}%", (share * 100.0).round() / 100.0)
            })
            .draw()
            .unwrap();
        for (label, line) in &panel.lines {
            let color = color(label);
            let line: Vec<(f64, f64)> = line.iter().map(|&(p, ms)| (nines(p), ms)).collect();
            chart
                .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                .unwrap()
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .unwrap();
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}
