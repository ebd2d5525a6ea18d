//! The benchmark report: a table with raw, ours and the ratio for every test, printed to
//! stdout and written as markdown, plus a PNG bar chart of "ours as a share of raw".

use crate::stats::RunStats;
use plotters::prelude::*;
use std::path::Path;

/// Which number of a run a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Average latency in microseconds (lower is better).
    LatencyUs,
    Iops,
    BandwidthMbS,
}

/// A target on the ratio ours / raw of a row's metric.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub metric: Metric,
    pub raw: RunStats,
    pub ours: RunStats,
    pub target: Option<Target>,
}

impl Metric {
    /// The compared number of a run.
    pub fn value(self, stats: &RunStats) -> f64 {
        match self {
            Metric::LatencyUs => stats.lat_avg_us,
            Metric::Iops => stats.iops,
            Metric::BandwidthMbS => stats.bandwidth_mb_s,
        }
    }

    /// The unit of [`Metric::value`]: `us`, `iops` or `MB/s`.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::LatencyUs => "us",
            Metric::Iops => "iops",
            Metric::BandwidthMbS => "MB/s",
        }
    }

    /// The value with its unit (and p99 latency where the row has one).
    pub fn format(self, stats: &RunStats) -> String {
        match self {
            Metric::LatencyUs => {
                format!("{:.1} us (p99 {:.0})", stats.lat_avg_us, stats.lat_p99_us)
            }
            Metric::Iops => format!("{:.0} iops (p99 {:.0} us)", stats.iops, stats.lat_p99_us),
            Metric::BandwidthMbS => format!("{:.0} MB/s", stats.bandwidth_mb_s),
        }
    }
}

impl Row {
    /// ours / raw of the row's metric.
    pub fn ratio(&self) -> f64 {
        let raw = self.metric.value(&self.raw);
        if raw == 0.0 {
            return f64::NAN;
        }
        self.metric.value(&self.ours) / raw
    }

    /// Ours as a share of raw performance (1.0 = as fast as raw; higher is better).
    pub fn performance_share(&self) -> f64 {
        match self.metric {
            Metric::LatencyUs => 1.0 / self.ratio(),
            _ => self.ratio(),
        }
    }

    pub fn target_met(&self) -> Option<bool> {
        let ratio = self.ratio();
        self.target.map(|target| match target {
            Target::AtMost(limit) => ratio <= limit,
            Target::AtLeast(limit) => ratio >= limit,
        })
    }

    fn target_text(&self) -> String {
        match (self.target, self.target_met()) {
            (Some(Target::AtMost(limit)), Some(met)) => {
                format!("<= {limit:.2}x {}", if met { "met" } else { "MISSED" })
            }
            (Some(Target::AtLeast(limit)), Some(met)) => {
                format!(">= {limit:.2}x {}", if met { "met" } else { "MISSED" })
            }
            _ => "-".to_string(),
        }
    }
}

/// The markdown table (also what is printed to stdout).
pub fn markdown(title: &str, configuration: &[String], rows: &[Row]) -> String {
    let mut out = format!("## {title}\n\n");
    for line in configuration {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str(
        "\n| test | raw | ours | ours/raw | cpu/op (ours) | target |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let cpu = row
            .ours
            .cpu_us_per_op
            .map_or("-".to_string(), |us| format!("{us:.1} us"));
        out.push_str(&format!(
            "| {} | {} | {} | {:.2}x | {} | {} |\n",
            row.name,
            row.metric.format(&row.raw),
            row.metric.format(&row.ours),
            row.ratio(),
            cpu,
            row.target_text()
        ));
    }
    out
}

/// A bar per test: ours as a percentage of raw performance, with the target marked.
pub fn write_chart(path: &Path, title: &str, rows: &[Row]) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_share = rows
        .iter()
        .map(|r| r.performance_share())
        .filter(|v| v.is_finite())
        .fold(1.2f64, f64::max)
        * 100.0
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0..rows.len().saturating_sub(1)).into_segmented(),
            0.0..max_share,
        )
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("ours as % of raw performance")
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, row)| {
            let share = row.performance_share() * 100.0;
            let color = match row.target_met() {
                Some(false) => RED.mix(0.7),
                _ => BLUE.mix(0.7),
            };
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), share),
                ],
                color.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, row)| {
            let share = row.performance_share() * 100.0;
            Text::new(
                format!("{share:.0}%"),
                (SegmentValue::CenterOf(i), share + max_share * 0.02),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| e.to_string())?;
    // Raw parity and each row's target, as horizontal marks.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![
                (SegmentValue::Exact(0), 100.0),
                (SegmentValue::Exact(rows.len()), 100.0),
            ],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().filter_map(|(i, row)| {
            let limit = match row.target? {
                Target::AtMost(limit) if row.metric == Metric::LatencyUs => 100.0 / limit,
                Target::AtMost(limit) | Target::AtLeast(limit) => limit * 100.0,
            };
            Some(PathElement::new(
                vec![
                    (SegmentValue::Exact(i), limit),
                    (SegmentValue::Exact(i + 1), limit),
                ],
                GREEN.stroke_width(3),
            ))
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// A grouped bar chart for benchmarks that compare implementations rather than ours with
/// raw: one group of bars per label in `groups`, one bar per series in each group (with a
/// legend), values on a linear axis described by `y_desc`.
pub fn write_grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), String> {
    assert!(!groups.is_empty(), "a chart needs at least one group");
    assert!(series
        .iter()
        .all(|(_, values)| values.len() == groups.len()));
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    // Two charts on the same area with the same margins: one draws the axes with a label
    // centred under each group, the other the bars at fractional positions inside groups.
    let build = || {
        let mut builder = ChartBuilder::on(&area);
        builder
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70);
        builder
    };
    let mut axes = build()
        .build_cartesian_2d((0..groups.len() - 1).into_segmented(), 0.0..max)
        .map_err(|e| e.to_string())?;
    axes.configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len())
        .y_desc(y_desc)
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) => groups.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut bars = build()
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..max)
        .map_err(|e| e.to_string())?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(s).mix(0.85);
        bars.draw_series(
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(g, &value)| {
                    let left = g as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(left, 0.0), (left + width, value)], color.filled())
                }),
        )
        .map_err(|e| e.to_string())?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    bars.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Loads a system TrueType font for chart text (Debian: fonts-dejavu-core).
fn register_font() -> Result<(), String> {
    const CANDIDATES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let bytes = CANDIDATES
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .ok_or("no TrueType font found for the chart (install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font could not be loaded".to_string())
}

/// Writes `report.md` and `chart.png` into `dir` and prints the table.
pub fn publish(
    dir: &Path,
    title: &str,
    configuration: &[String],
    rows: &[Row],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let table = markdown(title, configuration, rows);
    println!("{table}");
    std::fs::write(dir.join("report.md"), &table).map_err(|e| e.to_string())?;
    write_chart(&dir.join("chart.png"), title, rows)?;
    println!(
        "wrote {} and {}",
        dir.join("report.md").display(),
        dir.join("chart.png").display()
    );
    Ok(())
}
