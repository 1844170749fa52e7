//! PNG plots for explainability: a series with its saliency per band, self-attention heat
//! maps per layer and head, and state traces, with cloudy dates shaded.
//!
//! Drawn with plotters' bitmap backend and the DejaVu Sans subset that canopy-train embeds (no
//! system font), and written atomically: to a temporary file in the target folder, then renamed.

use std::path::Path;

use candle_core::{DType, Tensor};
use plotters::prelude::*;

use crate::{Error, Result};

/// Labels shared by the plots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotOptions {
    /// The caption.
    pub title: String,
    /// The x coordinate of each time step (e.g. day of year); `0..T` when `None`.
    pub times: Option<Vec<f64>>,
    /// A name per band or unit in the legend; `band i` when empty.
    pub names: Vec<String>,
    /// Per time step, `false` marks an unusable (cloudy) observation, drawn as a grey band.
    pub valid: Option<Vec<bool>>,
}

use canopy_train::plot::FAMILY;
const PALETTE: [RGBColor; 13] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 100, 0),
];

fn register_font() -> Result<()> {
    Ok(canopy_train::plot::register_font()?)
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::File {
        path: path.to_path_buf(),
        message: format!("drawing failed: {e}"),
    }
}

/// Draws into a temporary PNG next to `path`, then renames it over `path`
/// ([`canopy_train::atomic`]).
fn write_atomically(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    register_font()?;
    let mut drawn = Ok(());
    let written = canopy_train::atomic::write_with(path, |tmp| {
        drawn = draw(tmp);
        // The drawing error is returned below in this crate's own type; here it only has to
        // stop the rename.
        drawn.as_ref().map_err(|e| canopy_train::Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(())
    });
    drawn?;
    written.map_err(Error::from)
}

/// Row `sample` of a `(B, T, N)` tensor as `[t][n]` values.
fn sample_rows(t: &Tensor, sample: usize, what: &'static str) -> Result<Vec<Vec<f64>>> {
    match t.dims() {
        [b, tt, n] if sample < *b && *tt > 0 && *n > 0 => {
            Ok(t.get(sample)?.to_dtype(DType::F64)?.to_vec2()?)
        }
        dims => Err(Error::Shape {
            model: what,
            expected: format!("a non-empty (B, T, N) tensor with B > sample = {sample}"),
            actual: format!("{dims:?}"),
        }),
    }
}

fn check_len<T>(v: Option<&Vec<T>>, t: usize, what: &'static str, name: &str) -> Result<()> {
    match v {
        Some(v) if v.len() != t => Err(Error::Shape {
            model: what,
            expected: format!("{name} with one entry per time step ({t})"),
            actual: format!("{} entries", v.len()),
        }),
        _ => Ok(()),
    }
}

fn times(opts: &PlotOptions, t: usize) -> Vec<f64> {
    opts.times
        .clone()
        .unwrap_or_else(|| (0..t).map(|i| i as f64).collect())
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-9 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

/// One panel of line series over time, with invalid steps shaded.
#[allow(clippy::too_many_arguments)]
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_label: &str,
    xs: &[f64],
    rows: &[Vec<f64>],
    columns: usize,
    opts: &PlotOptions,
    path: &Path,
) -> Result<()> {
    let err = draw_err(path);
    let (x0, x1) = range(xs.iter().copied());
    let (y0, y1) = range(rows.iter().flat_map(|r| r.iter().take(columns).copied()));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&err)?;
    let integral = xs.iter().all(|x| x.fract() == 0.0);
    let x_fmt = |x: &f64| match (integral, x.fract() == 0.0) {
        (true, true) => format!("{x:.0}"),
        (true, false) => String::new(),
        (false, _) => format!("{x}"),
    };
    chart
        .configure_mesh()
        .x_label_formatter(&x_fmt)
        .x_desc("time")
        .y_desc(y_label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(&err)?;
    if let Some(valid) = &opts.valid {
        let half = if xs.len() > 1 {
            (x1 - x0) / (xs.len() as f64) / 2.0
        } else {
            0.5
        };
        let cloudy = xs.iter().zip(valid).filter(|(_, v)| !**v).map(|(&x, _)| {
            Rectangle::new(
                [(x - half, y0), (x + half, y1)],
                RGBColor(200, 200, 200).mix(0.6).filled(),
            )
        });
        chart.draw_series(cloudy).map_err(&err)?;
    }
    for c in 0..columns {
        let color = PALETTE[c % PALETTE.len()];
        let pts: Vec<(f64, f64)> = xs
            .iter()
            .zip(rows)
            .filter_map(|(&x, r)| r.get(c).map(|&y| (x, y)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let name = opts.names.get(c).cloned().unwrap_or_else(|| format!("{c}"));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(&err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.filled())))
            .map_err(&err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(&err)?;
    Ok(())
}

/// Draws series `sample` of `x` (top) and its saliency (bottom), one line per band, into a PNG
/// of 1000 x 800 pixels; cloudy steps (`opts.valid`) are shaded.
///
/// # Shapes
/// `x`, `saliency`: `(B, T, C)`.
///
/// # Errors
/// [`Error::Shape`] for mismatched shapes, a sample out of range, or `times`/`valid` of
/// another length than `T`; [`Error::File`]/[`Error::Io`] when the file cannot be written.
pub fn plot_saliency(
    path: impl AsRef<Path>,
    x: &Tensor,
    saliency: &Tensor,
    sample: usize,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    if x.dims() != saliency.dims() {
        return Err(Error::Shape {
            model: "plot_saliency",
            expected: format!("a saliency of the series' shape {:?}", x.dims()),
            actual: format!("{:?}", saliency.dims()),
        });
    }
    let xs_rows = sample_rows(x, sample, "plot_saliency")?;
    let sal_rows = sample_rows(saliency, sample, "plot_saliency")?;
    let (t, c) = (xs_rows.len(), x.dim(2)?);
    check_len(opts.times.as_ref(), t, "plot_saliency", "times")?;
    check_len(opts.valid.as_ref(), t, "plot_saliency", "valid")?;
    let xs = times(opts, t);
    let mut named = opts.clone();
    if named.names.is_empty() {
        named.names = (0..c).map(|i| format!("band {i}")).collect();
    }
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1000, 800)).into_drawing_area();
        let err = draw_err(path);
        root.fill(&WHITE).map_err(&err)?;
        let (top, bottom) = root.split_vertically(400);
        line_panel(&top, &opts.title, "value", &xs, &xs_rows, c, &named, path)?;
        line_panel(
            &bottom,
            "saliency d max(y) / dX",
            "gradient",
            &xs,
            &sal_rows,
            c,
            &named,
            path,
        )?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// Draws the first `max_units` state traces of series `sample` (e.g. one entry of
/// [`LstmStates::cell`](crate::lstm::LstmStates::cell)) over time, with cloudy steps
/// (`opts.valid`) shaded, into a PNG of 1000 x 500 pixels.
///
/// # Shapes
/// `states`: `(B, T, H)`.
///
/// # Errors
/// As [`plot_saliency`].
pub fn plot_state_traces(
    path: impl AsRef<Path>,
    states: &Tensor,
    sample: usize,
    max_units: usize,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    let rows = sample_rows(states, sample, "plot_state_traces")?;
    let (t, h) = (rows.len(), states.dim(2)?);
    check_len(opts.times.as_ref(), t, "plot_state_traces", "times")?;
    check_len(opts.valid.as_ref(), t, "plot_state_traces", "valid")?;
    let xs = times(opts, t);
    let units = h.min(max_units.max(1));
    let mut named = opts.clone();
    if named.names.is_empty() {
        named.names = (0..units).map(|i| format!("unit {i}")).collect();
    }
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1000, 500)).into_drawing_area();
        let err = draw_err(path);
        root.fill(&WHITE).map_err(&err)?;
        line_panel(&root, &opts.title, "state", &xs, &rows, units, &named, path)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// Draws the self-attention maps of series `sample` as heat maps, one row per layer and one
/// column per head (query step down, key step across, each map scaled to its maximum).
///
/// # Shapes
/// `attention`: one `(B, heads, T, T)` tensor per layer (as
/// [`TransformerAttention::attention`](crate::transformer::TransformerAttention::attention)).
///
/// # Errors
/// [`Error::Shape`] when the list is empty, the maps are not square or differ in shape, or
/// `sample` is out of range; file errors as [`plot_saliency`].
pub fn plot_attention(
    path: impl AsRef<Path>,
    attention: &[Tensor],
    sample: usize,
    opts: &PlotOptions,
) -> Result<()> {
    let path = path.as_ref();
    let shape_err = |actual: String| Error::Shape {
        model: "plot_attention",
        expected: format!(
            "a non-empty list of (B, heads, T, T) attention tensors of one shape, B > {sample}"
        ),
        actual,
    };
    let Some(first) = attention.first() else {
        return Err(shape_err("no layers".into()));
    };
    let dims = first.dims().to_vec();
    let (heads, t) = match dims.as_slice() {
        [b, h, t, t2] if sample < *b && t == t2 && *h > 0 && *t > 0 => (*h, *t),
        d => return Err(shape_err(format!("{d:?}"))),
    };
    let mut maps = Vec::new(); // [layer][head][query][key]
    for a in attention {
        if a.dims() != dims.as_slice() {
            return Err(shape_err(format!("{:?} after {:?}", a.dims(), dims)));
        }
        let m: Vec<Vec<Vec<f64>>> = a.get(sample)?.to_dtype(DType::F64)?.to_vec3()?;
        maps.push(m);
    }
    let layers = maps.len();
    let cell = 260u32;
    let size = (cell * heads as u32 + 20, cell * layers as u32 + 50);
    write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        let err = draw_err(path);
        root.fill(&WHITE).map_err(&err)?;
        let root = root.titled(&opts.title, (FAMILY, 22)).map_err(&err)?;
        let panels = root.split_evenly((layers, heads));
        for (i, panel) in panels.iter().enumerate() {
            let (l, h) = (i / heads, i % heads);
            let Some(map) = maps.get(l).and_then(|m| m.get(h)) else {
                continue;
            };
            let vmax = map
                .iter()
                .flatten()
                .copied()
                .fold(0.0, f64::max)
                .max(f64::MIN_POSITIVE);
            let tf = t as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("layer {l}, head {h}"), (FAMILY, 15))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(0.0..tf, 0.0..tf)
                .map_err(&err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(5)
                .y_labels(5)
                .label_style((FAMILY, 11))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{:.0}", tf - v))
                .draw()
                .map_err(&err)?;
            let cells = map.iter().enumerate().flat_map(|(q, row)| {
                row.iter().enumerate().map(move |(k, &v)| {
                    let s = (v / vmax).clamp(0.0, 1.0);
                    let shade = |lo: f64, hi: f64| (lo + (hi - lo) * s).round() as u8;
                    let fill = RGBColor(shade(255.0, 8.0), shade(255.0, 48.0), shade(229.0, 107.0));
                    // Query step 0 at the top.
                    let (x, y) = (k as f64, tf - 1.0 - q as f64);
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill.filled())
                })
            });
            chart.draw_series(cells).map_err(&err)?;
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{saliency, SaliencyTarget};
    use crate::lstm::{LstmClassifier, LstmClassifierConfig};
    use crate::transformer::{TransformerClassifier, TransformerClassifierConfig};
    use candle_core::Device;
    use canopy_nn::SeededVarMap;
    use rand::SeedableRng;

    fn small_lstm(dtype: DType) -> anyhow::Result<LstmClassifier> {
        let cfg = LstmClassifierConfig {
            hidden_dims: 5,
            num_layers: 2,
            ..LstmClassifierConfig::breizhcrops(3, 4)
        };
        Ok(LstmClassifier::new(
            &cfg,
            SeededVarMap::new(11).var_builder(dtype, &Device::Cpu),
        )?)
    }

    fn assert_png(path: &Path) -> anyhow::Result<()> {
        let bytes = std::fs::read(path)?;
        assert!(
            bytes.len() > 5_000,
            "{}: only {} bytes",
            path.display(),
            bytes.len()
        );
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        Ok(())
    }

    #[test]
    fn plots_are_written_atomically_and_are_pngs() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir()?;
        let lstm = small_lstm(DType::F32)?;
        let x = canopy_nn::gradcheck::random_f64(&[2, 8, 3], 22, &dev)?.to_dtype(DType::F32)?;
        let g = saliency(&lstm, &x, SaliencyTarget::MaxProbability)?;
        let valid: Vec<bool> = (0..8).map(|t| t % 3 != 1).collect();
        let opts = PlotOptions {
            title: "series and saliency".into(),
            times: Some((0..8).map(|t| 10.0 + 20.0 * t as f64).collect()),
            names: vec!["B02".into(), "B03".into(), "B04".into()],
            valid: Some(valid.clone()),
        };
        let p = dir.path().join("saliency.png");
        plot_saliency(&p, &x, &g, 1, &opts)?;
        assert_png(&p)?;

        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let states = lstm.forward_with_states(&x, false, &mut rng)?;
        let p = dir.path().join("states.png");
        let opts = PlotOptions {
            title: "cell states, layer 1 reverse".into(),
            valid: Some(valid),
            ..PlotOptions::default()
        };
        plot_state_traces(&p, &states.cell[3], 0, 4, &opts)?;
        assert_png(&p)?;

        let tr = TransformerClassifier::new(
            &TransformerClassifierConfig {
                d_model: 8,
                d_inner: 8,
                n_layers: 2,
                ..TransformerClassifierConfig::breizhcrops(3, 4)
            },
            SeededVarMap::new(2).var_builder(DType::F32, &dev),
        )?;
        let a = tr.forward_with_attention(&x, false, &mut rng)?;
        let p = dir.path().join("attention.png");
        plot_attention(
            &p,
            &a.attention,
            0,
            &PlotOptions {
                title: "attention".into(),
                ..PlotOptions::default()
            },
        )?;
        assert_png(&p)?;

        // Only the three plots remain: no temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 3);
        // To look at them: CANOPY_TEMPORAL_PLOTS=/some/dir cargo test -p canopy-temporal plots
        if let Some(keep) = std::env::var_os("CANOPY_TEMPORAL_PLOTS") {
            for name in ["saliency.png", "states.png", "attention.png"] {
                std::fs::copy(dir.path().join(name), Path::new(&keep).join(name))?;
            }
        }
        // Bad input is an error, and nothing is written.
        let bad = PlotOptions {
            valid: Some(vec![true; 3]),
            ..PlotOptions::default()
        };
        assert!(matches!(
            plot_saliency(dir.path().join("bad.png"), &x, &g, 0, &bad),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            plot_attention(
                dir.path().join("bad.png"),
                &a.attention,
                2,
                &PlotOptions::default()
            ),
            Err(Error::Shape { .. })
        ));
        assert!(!dir.path().join("bad.png").exists());
        Ok(())
    }
}
