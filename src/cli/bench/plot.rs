//! The degradation curve of `argon bench --sweep` as an SVG of four
//! panels: throughput, latency, deny rate and the fit of `retry_after`,
//! each against the offered load.

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::sweep::{StepReport, SweepReport};

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<LogCoord<f64>>, RangedCoordf64>>;
type Res = Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";

/// The sweep as an SVG document.
pub fn svg(r: &SweepReport) -> Result<String, String> {
    draw(r).map_err(|e| format!("cannot draw the plot: {e}"))
}

fn loads(r: &SweepReport) -> (f64, f64) {
    let lo = r.steps.iter().map(|s| s.load).fold(f64::MAX, f64::min);
    let hi = r.steps.iter().map(|s| s.load).fold(0.0, f64::max);
    if r.steps.is_empty() {
        (0.5, 2.0)
    } else {
        (lo / 1.3, hi * 1.3)
    }
}

fn load_label(x: &f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn chart<'a, 'b>(
    area: &'a Area<'b>,
    r: &SweepReport,
    title: &str,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let (lo, hi) = loads(r);
    let ticks = r.steps.iter().map(|s| s.load).collect();
    let c = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d((lo..hi).log_scale().with_key_points(ticks), y)?;
    Ok(c)
}

fn legend<'a, 'b: 'a>(c: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> Res {
    c.configure_series_labels()
        .position(at)
        .border_style(BLACK.mix(0.4))
        .background_style(WHITE.mix(0.9))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

fn line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

fn series<'a, 'b: 'a>(
    c: &mut Chart<'a, 'b>,
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    label: &str,
) -> Res {
    c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
        .label(label)
        .legend(line(color));
    c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    Ok(())
}

fn mesh<'a, 'b: 'a>(c: &mut Chart<'a, 'b>, y_desc: &str) -> Res {
    c.configure_mesh()
        .x_desc("offered load (x capacity)")
        .y_desc(y_desc)
        .x_label_formatter(&load_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .draw()?;
    Ok(())
}

fn dashed<'a, 'b: 'a>(
    c: &mut Chart<'a, 'b>,
    r: &SweepReport,
    y: f64,
    color: RGBColor,
    label: Option<&str>,
) -> Res {
    let (lo, hi) = loads(r);
    let s = c.draw_series(DashedLineSeries::new(
        vec![(lo, y), (hi, y)],
        8,
        5,
        color.stroke_width(1),
    ))?;
    if let Some(label) = label {
        s.label(label).legend(line(color));
    }
    Ok(())
}

fn draw(r: &SweepReport) -> Result<String, Box<dyn std::error::Error>> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (1200, 860)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!(
            "Argon degradation curve: {} slots on {} worker(s), queue bound {} (factor {:.1}), sleep {}-{} ms",
            r.capacity, r.workers, r.queue_limit, r.queue_factor, r.task_ms_min, r.task_ms_max
        );
        let root = root.titled(&title, (FONT, 20))?;
        let panels = root.split_evenly((2, 2));
        throughput(&panels[0], r)?;
        latency(&panels[1], r)?;
        denies(&panels[2], r)?;
        retry_after(&panels[3], r)?;
        root.present()?;
    }
    Ok(text)
}

fn throughput(area: &Area<'_>, r: &SweepReport) -> Res {
    let top = r
        .steps
        .iter()
        .map(|s| s.accepted_per_s)
        .fold(r.capacity_tasks_per_s, f64::max)
        * 1.25;
    let mut c = chart(area, r, "Accepted tasks per second", 0.0..top.max(1.0))?;
    mesh(&mut c, "tasks/s")?;
    dashed(
        &mut c,
        r,
        r.capacity_tasks_per_s,
        BLACK,
        Some("capacity / mean task time"),
    )?;
    let pts = r.steps.iter().map(|s| (s.load, s.accepted_per_s)).collect();
    series(&mut c, pts, BLUE, "accepted")?;
    legend(&mut c, SeriesLabelPosition::LowerRight)
}

fn latency(area: &Area<'_>, r: &SweepReport) -> Res {
    let top = r
        .steps
        .iter()
        .map(|s| s.first_p99_ms.max(s.accept_p99_ms))
        .fold(1.0, f64::max)
        * 1.15;
    let mut c = chart(area, r, "Latency of accepted tasks", 0.0..top)?;
    mesh(&mut c, "ms")?;
    let pick = |f: fn(&StepReport) -> f64| -> Vec<(f64, f64)> {
        r.steps.iter().map(|s| (s.load, f(s))).collect()
    };
    series(
        &mut c,
        pick(|s| s.accept_p50_ms),
        BLUE,
        "p50 from acceptance",
    )?;
    series(
        &mut c,
        pick(|s| s.accept_p99_ms),
        CYAN,
        "p99 from acceptance",
    )?;
    series(&mut c, pick(|s| s.first_p50_ms), RED, "p50 from first try")?;
    series(
        &mut c,
        pick(|s| s.first_p99_ms),
        MAGENTA,
        "p99 from first try",
    )?;
    legend(&mut c, SeriesLabelPosition::UpperLeft)
}

fn denies(area: &Area<'_>, r: &SweepReport) -> Res {
    let mut c = chart(area, r, "Tasks denied at their first submit", 0.0..100.0)?;
    mesh(&mut c, "% of tasks")?;
    let pts = r
        .steps
        .iter()
        .map(|s| (s.load, s.deny_rate * 100.0))
        .collect();
    series(&mut c, pts, RED, "deny rate")?;
    legend(&mut c, SeriesLabelPosition::UpperLeft)
}

fn retry_after(area: &Area<'_>, r: &SweepReport) -> Res {
    let fits: Vec<_> = r
        .steps
        .iter()
        .filter_map(|s| s.retry_after_needed.as_ref().map(|f| (s.load, f)))
        .collect();
    let top = fits.iter().map(|(_, f)| f.ratio_p90).fold(2.0, f64::max) * 1.1;
    let mut c = chart(area, r, "retry_after / wait a probe needed", 0.0..top)?;
    mesh(&mut c, "ratio")?;
    dashed(&mut c, r, 1.0, BLACK, Some("exact"))?;
    dashed(&mut c, r, 0.75, GREEN, Some("within 25 %"))?;
    dashed(&mut c, r, 1.25, GREEN, None)?;
    c.draw_series(fits.iter().map(|(x, f)| {
        PathElement::new(
            vec![(*x, f.ratio_p10), (*x, f.ratio_p90)],
            BLUE.mix(0.6).stroke_width(2),
        )
    }))?
    .label("p10 to p90")
    .legend(line(RGBColor(120, 120, 255)));
    let pts = fits.iter().map(|(x, f)| (*x, f.ratio_p50)).collect();
    series(&mut c, pts, BLUE, "median")?;
    legend(&mut c, SeriesLabelPosition::UpperRight)
}

#[cfg(test)]
mod tests {
    use super::super::sweep::{describe, WaitFit, PROBE_EVERY};
    use super::*;

    #[test]
    fn the_plot_is_an_svg_document() {
        let step = |load: f64| StepReport {
            load,
            clients: (load * 8.0) as u64,
            probes: 1,
            window_s: 10.0,
            accepted: 200,
            accepted_per_s: 20.0,
            completed: 200,
            completed_per_s: 20.0,
            failed: 0,
            tried: 200,
            deny_rate: 0.1,
            denials_per_denied_task: 1.2,
            abandoned: 0,
            unfinished: 0,
            errors: 0,
            error_texts: vec![],
            accept_p50_ms: 350.0,
            accept_p99_ms: 500.0,
            first_p50_ms: 400.0,
            first_p99_ms: 900.0,
            retry_after_needed: Some(WaitFit {
                samples: 10,
                predicted_p50_ms: 100.0,
                wait_p50_ms: 100.0,
                ratio_p10: 0.8,
                ratio_p50: 1.0,
                ratio_p90: 1.3,
            }),
            retry_after_taken: None,
            queued_mean: 1.0,
            queued_max: 2,
            in_flight_mean: 8.0,
            manager_avg_task_ms: 350.0,
        };
        let r = SweepReport {
            version: "0".into(),
            started_unix_s: 0,
            manager: "127.0.0.1:1".into(),
            workers: 2,
            capacity: 8,
            queue_limit: 24,
            queue_factor: 3.0,
            task: "sleep".into(),
            task_ms_min: 200,
            task_ms_max: 500,
            capacity_tasks_per_s: 22.9,
            warmup_s: 1.0,
            window_s: 10.0,
            probe_every: PROBE_EVERY,
            steps: [0.5, 1.0, 2.0, 5.0, 10.0].map(step).to_vec(),
        };
        let text = svg(&r).expect("drawn");
        assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
        assert!(text.trim_end().ends_with("</svg>"));
        assert!(text.contains("Accepted tasks per second"));
        assert!(describe(&r).lines().count() == 7, "{}", describe(&r));
    }
}
