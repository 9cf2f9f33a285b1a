//! How each cost grows: broadcast cost and memory from 10 to 1,000,000 listeners and up
//! to 1,000,000 unread messages, plotted log-log.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use eric_core::{Channel, Message, MessageQueueListener};

use super::{LIVE_BYTES, RawMessage, docs_path, payload};

/// Issue 10: how each cost grows with listeners and with unread messages.
pub(crate) fn bench_growth() {
    let msg = Message::new("news", payload());
    println!("\n## how costs grow: listeners\n");
    println!(
        "| listeners | eric ns per broadcast | reference ns per broadcast (a push per listener) | heap bytes per idle listener |"
    );
    println!("|---:|---:|---:|---:|");
    let mut summary = String::new();
    let mut points = Vec::new();
    for listeners in [10usize, 100, 1_000, 10_000, 100_000, 1_000_000] {
        let channel = Channel::default();
        let mut handles = Vec::with_capacity(listeners);
        let counted = LIVE_BYTES.load(Ordering::Relaxed);
        for _ in 0..listeners {
            handles.push(channel.add_listener().unwrap());
        }
        let per_listener = (LIVE_BYTES.load(Ordering::Relaxed) - counted) as f64 / listeners as f64;
        // Idle listeners: every broadcast stays unread, in the channel's one log.
        let broadcasts = 1_000;
        let t = Instant::now();
        for _ in 0..broadcasts {
            black_box(channel.broadcast(msg.clone()).unwrap());
        }
        let eric_ns = t.elapsed().as_nanos() as f64 / broadcasts as f64;

        let reference_broadcasts = (10_000_000 / listeners).clamp(5, 1_000);
        let raw = Arc::new(RawMessage {
            message_type: "news".into(),
            payload: payload(),
        });
        let mut reference: Vec<VecDeque<Arc<RawMessage>>> =
            (0..listeners).map(|_| VecDeque::new()).collect();
        let t = Instant::now();
        for _ in 0..reference_broadcasts {
            for queue in reference.iter_mut() {
                queue.push_back(Arc::clone(&raw));
            }
        }
        let reference_ns = t.elapsed().as_nanos() as f64 / reference_broadcasts as f64;
        println!("| {listeners} | {eric_ns:.0} | {reference_ns:.0} | {per_listener:.0} |");
        if listeners == 1_000_000 {
            summary = format!(
                "summary: | core: broadcast to 1,000,000 listeners | {eric_ns:.0} ns | a push per listener: {:.1} ms | **{:.0}x** |",
                reference_ns / 1e6,
                reference_ns / eric_ns
            );
        }
        points.push((listeners as f64, eric_ns, reference_ns));
        drop(reference);
        channel.close();
        drop(handles);
    }

    let svg = docs_path("growth.svg");
    plot_log_log(
        &svg,
        "time per broadcast against listeners (log-log)",
        ("listeners", "ns per broadcast"),
        &[
            (
                "eric: one append to the channel's log",
                plotters::style::BLUE,
                points.iter().map(|p| (p.0, p.1)).collect(),
            ),
            (
                "reference: a push to every listener's queue",
                plotters::style::RED,
                points.iter().map(|p| (p.0, p.2)).collect(),
            ),
        ],
    );
    println!("\nplot: {}\n\n{summary}", svg.display());

    println!("\n## how costs grow: unread messages\n");
    println!(
        "| unread | listeners | heap bytes per unread broadcast | heap bytes per unread dispatch |"
    );
    println!("|---:|---:|---:|---:|");
    for listeners in [1usize, 1_000] {
        for unread in [10_000usize, 100_000, 1_000_000] {
            let per_broadcast = heap_per_unread(listeners, unread, |channel, _, n| {
                channel.broadcast(Message::new("news", n)).unwrap();
            });
            let per_dispatch = heap_per_unread(listeners, unread, |channel, handles, n| {
                let to = handles[n % handles.len()].id();
                channel.dispatch(to, Message::new("dm", n)).unwrap();
            });
            println!("| {unread} | {listeners} | {per_broadcast:.0} | {per_dispatch:.0} |");
        }
    }
}

/// Heap bytes per message, after `send(channel, listeners, n)` for n in 0..`unread` on a
/// channel of `listeners` idle listeners (so everything sent stays unread).
pub(crate) fn heap_per_unread(
    listeners: usize,
    unread: usize,
    send: impl Fn(&Channel, &[Arc<MessageQueueListener>], usize),
) -> f64 {
    let channel = Channel::default();
    let handles: Vec<_> = (0..listeners)
        .map(|_| channel.add_listener().unwrap())
        .collect();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for n in 0..unread {
        send(&channel, &handles, n);
    }
    let per_message = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / unread as f64;
    channel.close();
    per_message
}

/// A plotted line: its label, its colour, its points.
type Series<'a> = (&'a str, plotters::style::RGBColor, Vec<(f64, f64)>);

/// One line per series, both axes logarithmic (docs/growth.svg, docs/throughput.svg).
pub(crate) fn plot_log_log(
    path: &std::path::Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series<'_>],
) {
    use plotters::prelude::*;

    let points = || series.iter().flat_map(|s| s.2.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let y_min = points().map(|p| p.1).fold(f64::INFINITY, f64::min) / 3.0;
    let y_max = points().map(|p| p.1).fold(1.0, f64::max) * 3.0;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d((5.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| human(*x))
        .y_label_formatter(&|y| human(*y))
        .draw()
        .unwrap();
    for (label, color, line) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .unwrap()
            .label(*label)
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
    root.present().unwrap();
}

/// 1500 -> "1.5k", 2e6 -> "2M": axis labels a reader takes in at a glance.
pub(crate) fn human(v: f64) -> String {
    let (scaled, unit) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}
