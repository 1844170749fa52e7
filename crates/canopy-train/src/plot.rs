//! PNG plots: training curves and confusion matrices, drawn with plotters' bitmap backend.
//!
//! No system font is used: text is rendered through plotters' `ab_glyph` support with DejaVu
//! Sans embedded in the library (a subset to printable ASCII, about 10 kB; licence in
//! `assets/DejaVuSans-LICENSE.txt`).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::invalid;
use crate::trainer::History;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
/// The font family name under which [`register_font`] makes the embedded font available.
pub const FAMILY: &str = "sans-serif";

/// Registers the embedded font (a DejaVu Sans subset) with plotters as [`FAMILY`], once per
/// process, so PNGs render text without system fonts. Other canopy crates that draw with
/// plotters call it before drawing.
///
/// # Errors
/// When the embedded font cannot be parsed.
pub fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid("plot", "the embedded font could not be loaded"))
    }
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::File {
        path: path.to_path_buf(),
        message: format!("drawing failed: {e}"),
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws named `(x, y)` series as lines with markers into a PNG of 800 x 500 pixels.
///
/// # Errors
/// When no series has a finite point, or the file cannot be written.
pub fn plot_series(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let path = path.as_ref();
    register_font()?;
    let finite = || {
        series
            .iter()
            .flat_map(|(_, s)| s.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let Some(&(x0, y0)) = finite().next() else {
        return Err(invalid(
            "plot_series",
            format!("{}: no finite point to draw", path.display()),
        ));
    };
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (x0, x0, y0, y0);
    for &(x, y) in finite() {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmax - xmin < 1e-12 {
        xmin -= 0.5;
        xmax += 0.5;
    }
    let pad = ((ymax - ymin) * 0.08).max(1e-9 * ymax.abs().max(1.0));
    let (ymin, ymax) = (ymin - pad, ymax + pad);

    crate::atomic::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, (800, 500)).into_drawing_area();
        let err = draw_err(path);
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(xmin..xmax, ymin..ymax)
            .map_err(&err)?;
        let integral_x = finite().all(|(x, _)| x.fract() == 0.0);
        let x_fmt = |x: &f64| {
            if integral_x {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            } else {
                format!("{x}")
            }
        };
        chart
            .configure_mesh()
            .x_label_formatter(&x_fmt)
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(&err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(&err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(&err)?;
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// Plots `train_<metric>` and `val_<metric>` per epoch from a training history.
///
/// # Errors
/// When the history has no value of that metric, or the file cannot be written.
pub fn plot_history(path: impl AsRef<Path>, history: &History, metric: &str) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = ["train", "val"]
        .iter()
        .map(|p| {
            (
                format!("{p} {metric}"),
                history.series(&format!("{p}_{metric}")),
            )
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    plot_series(
        path,
        &format!("{metric} per epoch"),
        "epoch",
        metric,
        &series,
    )
}

/// How a confusion matrix is coloured and labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfusionNorm {
    /// Raw counts.
    Counts,
    /// Each row divided by its sum (the recall of each true class on the diagonal).
    Rows,
}

/// Draws a confusion matrix (`counts[true][predicted]`) as a heatmap with the value in every
/// cell, true classes down, predicted classes across.
///
/// # Errors
/// When the matrix is empty or not square, the names do not match its size, or the file cannot
/// be written.
pub fn plot_confusion(
    path: impl AsRef<Path>,
    counts: &[Vec<u64>],
    class_names: &[String],
    norm: ConfusionNorm,
    title: &str,
) -> Result<()> {
    let path = path.as_ref();
    let k = counts.len();
    if k == 0 || counts.iter().any(|r| r.len() != k) || class_names.len() != k {
        return Err(crate::error::shape(
            "plot_confusion",
            format!(
                "a non-empty square matrix with one class name per row ({} names)",
                class_names.len()
            ),
            counts.iter().map(Vec::len).collect::<Vec<_>>(),
        ));
    }
    register_font()?;
    let values: Vec<Vec<f64>> = counts
        .iter()
        .map(|r| {
            let sum: u64 = r.iter().sum();
            r.iter()
                .map(|&c| match norm {
                    ConfusionNorm::Counts => c as f64,
                    ConfusionNorm::Rows if sum > 0 => c as f64 / sum as f64,
                    ConfusionNorm::Rows => 0.0,
                })
                .collect()
        })
        .collect();
    let vmax = values
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let side = (120 + 60 * k as u32).clamp(420, 1400);
    crate::atomic::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, (side + 120, side + 60)).into_drawing_area();
        let err = draw_err(path);
        root.fill(&WHITE).map_err(&err)?;
        let kf = k as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..kf, 0.0..kf)
            .map_err(&err)?;
        // No numeric ticks: class names are drawn at the cell centres below.
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("predicted")
            .y_desc("true")
            .axis_desc_style((FAMILY, 17))
            .draw()
            .map_err(&err)?;
        let font_size = (32.0 - 1.5 * kf).clamp(11.0, 22.0);
        // True class i is drawn in row k - 1 - i so that class 0 is at the top.
        for (i, row) in values.iter().enumerate() {
            let y = (k - 1 - i) as f64;
            for (j, &v) in row.iter().enumerate() {
                let x = j as f64;
                let t = v / vmax;
                let shade = |lo: f64, hi: f64| (lo + (hi - lo) * t).round() as u8;
                let fill = RGBColor(shade(247.0, 8.0), shade(251.0, 48.0), shade(255.0, 107.0));
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(&err)?;
                let label = match norm {
                    ConfusionNorm::Counts => format!("{}", counts[i][j]),
                    ConfusionNorm::Rows => format!("{v:.2}"),
                };
                let color = if t > 0.5 { WHITE } else { BLACK };
                let style = TextStyle::from((FAMILY, font_size).into_font())
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(label, (x + 0.5, y + 0.5), style)))
                    .map_err(&err)?;
            }
        }
        let tick = TextStyle::from((FAMILY, 15).into_font()).color(&BLACK);
        for (c, name) in class_names.iter().enumerate() {
            let centre = c as f64 + 0.5;
            let (px, py) = chart.backend_coord(&(centre, 0.0));
            root.draw(&Text::new(
                name.as_str(),
                (px, py + 8),
                tick.pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(&err)?;
            let (px, py) = chart.backend_coord(&(0.0, kf - centre));
            root.draw(&Text::new(
                name.as_str(),
                (px - 8, py),
                tick.pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(&err)?;
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}
