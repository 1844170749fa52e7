//! `canopy segment`: a trained segmentation model over a whole GeoTIFF scene, streamed window
//! by window, into a georeferenced u8 class map (and optionally the class probabilities);
//! `--shard i/n` + `canopy segment merge` split the work into array jobs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use canopy_raster::{Blend, GeoTiff};
use canopy_segment::infer::{
    merge_shards, predict_shard, segment_geotiff, SegmentOptions, SegmentOutputs, SegmentReport,
    Segmenter, Shard,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Blending of overlapping windows on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BlendArg {
    /// Raised-cosine weights over the overlap (smooth, no seams).
    Cosine,
    /// Linear weights over the overlap.
    Linear,
    /// Each pixel from the one window that owns it (overlaps split in the middle).
    None,
    /// Drop half the overlap at interior window edges and average the rest.
    Center,
}

/// How the scene is tiled and written (shared by a run and a merge).
#[derive(Debug, Clone, clap::Args)]
pub struct TilingArgs {
    /// Window side in pixels.
    #[arg(long, default_value_t = 512)]
    pub tile: usize,
    /// Overlap between neighbouring windows in pixels.
    #[arg(long, default_value_t = 64)]
    pub overlap: usize,
    /// How overlapping predictions are combined.
    #[arg(long, value_enum, default_value = "cosine")]
    pub blend: BlendArg,
}

/// Arguments of `canopy segment` (a run over a scene or one shard of it).
#[derive(Debug, Clone, clap::Args)]
pub struct SegmentArgs {
    /// The scene (GeoTIFF, any sample type).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Model weights: a safetensors checkpoint with its JSON sidecar (model configuration,
    /// normalisation, class names), as written by canopy-train's `save_checkpoint`. Without
    /// it, the built-in building model (a small U-Net for 8-bit RGB aerial imagery at
    /// 0.07-0.3 m; 1 = building, 0 = background).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The u8 class map to write (255 = nodata).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the class probabilities (f32, one band per class, NaN = nodata).
    #[arg(long)]
    pub probabilities: Option<PathBuf>,
    /// Input bands for the model, 1-based, in the model's order (default: the first ones).
    #[arg(long, value_delimiter = ',')]
    pub bands: Option<Vec<usize>>,
    /// Windows per model call.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Process only shard `i/n` of the windows (0-based) and write its predictions into
    /// `--shard-dir`; stitch the shards with `canopy segment merge`.
    #[arg(long, requires = "shard_dir")]
    pub shard: Option<String>,
    /// Folder for the shard's window predictions.
    #[arg(long)]
    pub shard_dir: Option<PathBuf>,
    #[command(flatten)]
    pub tiling: TilingArgs,
}

/// Arguments of `canopy segment merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The scene the shards were computed from (for its size and georeferencing).
    #[arg(long)]
    pub input: PathBuf,
    /// The shard folders (all of them).
    #[arg(long, num_args = 1.., required = true)]
    pub shards: Vec<PathBuf>,
    /// The u8 class map to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the class probabilities.
    #[arg(long)]
    pub probabilities: Option<PathBuf>,
    #[command(flatten)]
    pub tiling: TilingArgs,
}

/// `canopy segment [merge]`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SegmentCommand {
    #[command(subcommand)]
    pub sub: Option<SegmentSub>,
    #[command(flatten)]
    pub run: SegmentArgs,
}

/// Sub-commands of `canopy segment`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SegmentSub {
    /// Stitch the folders of `--shard` runs into the class map (bit-identical to one run).
    Merge(MergeArgs),
}

fn options(
    t: &TilingArgs,
    bands: Option<&[usize]>,
    batch: usize,
) -> anyhow::Result<SegmentOptions> {
    let blend = match t.blend {
        BlendArg::Cosine => Blend::Cosine,
        BlendArg::Linear => Blend::Linear,
        BlendArg::None => Blend::None,
        BlendArg::Center => Blend::CenterCrop {
            margin: t.overlap / 2,
        },
    };
    let bands = match bands {
        Some(b) => {
            if let Some(&bad) = b.iter().find(|&&x| x == 0) {
                bail!("--bands {bad}: bands are numbered from 1");
            }
            Some(b.iter().map(|x| x - 1).collect())
        }
        None => None,
    };
    Ok(SegmentOptions {
        tile: t.tile,
        overlap: t.overlap,
        blend,
        bands,
        batch,
        ..SegmentOptions::default()
    })
}

fn progress_bar(total: usize, tile: usize) -> ProgressBar {
    if std::io::stderr().is_terminal() && total > 1 {
        let bar = ProgressBar::new(total as u64);
        let mpx = (tile * tile) as f64 / 1e6;
        let style = ProgressStyle::with_template(&format!(
            "segment {{bar:40}} {{pos}}/{{len}} windows ({mpx:.2} Mpx each) {{per_sec}} {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    }
}

fn print_report(report: &SegmentReport, seg_names: &[String], seconds: f64, out: &Path) {
    let mpx = report.pixels as f64 / 1e6;
    println!(
        "wrote {} ({} windows, {mpx:.2} Mpx in {seconds:.1} s = {:.2} Mpx/s)",
        out.display(),
        report.windows,
        mpx / seconds.max(1e-9)
    );
    let valid: u64 = report.class_pixels.iter().sum();
    for (k, n) in report.class_pixels.iter().enumerate() {
        let name = seg_names
            .get(k)
            .map_or_else(|| format!("class {k}"), Clone::clone);
        println!(
            "  {k} {name}: {n} px ({:.1} %)",
            100.0 * *n as f64 / (valid.max(1)) as f64
        );
    }
    if report.nodata_pixels > 0 {
        println!("  nodata (255): {} px", report.nodata_pixels);
    }
}

/// The built-in building model, after checking that the scene looks like what it was trained
/// on (warnings only: the user may know better).
fn builtin_model(tif: &GeoTiff, input: &Path) -> anyhow::Result<Segmenter> {
    let info = canopy_segment::builtin::buildings_info()?;
    let seg = canopy_segment::builtin::buildings()?;
    println!(
        "model: {} (no --weights given): {}; expects {}",
        info.name, info.task, info.input
    );
    println!(
        "  maps made with it should credit: {}",
        info.attribution.join("; ")
    );
    let meta = tif.info();
    if meta.dtype != canopy_raster::DataType::U8 {
        eprintln!(
            "warning: {} holds {:?} samples; the built-in model was trained on 8-bit RGB \
             (0-255) and will see these values unscaled. Rescale the scene to 8 bits or train a \
             model for it (examples/buildings.rs) and pass --weights",
            input.display(),
            meta.dtype
        );
    }
    // projected CRSs only (EPSG geographic codes are 4001-4999: degrees, not metres)
    let projected = meta
        .georef
        .crs
        .epsg
        .is_some_and(|e| !(4001..=4999).contains(&e));
    if let (Some(t), true) = (&meta.georef.transform, projected) {
        let t = t.as_array();
        let res = t[1].hypot(t[4]);
        let [lo, hi] = info.ground_resolution_m;
        if res < 0.5 * lo || res > 2.0 * hi {
            eprintln!(
                "warning: {} has {res:.3} m pixels; the built-in model was trained at {lo}-{hi} \
                 m and may miss buildings at this resolution",
                input.display()
            );
        }
    }
    Ok(seg)
}

/// Runs `canopy segment`.
pub fn run(cmd: &SegmentCommand) -> anyhow::Result<()> {
    match &cmd.sub {
        Some(SegmentSub::Merge(m)) => merge(m),
        None => segment(&cmd.run),
    }
}

fn segment(a: &SegmentArgs) -> anyhow::Result<()> {
    let Some(input) = &a.input else {
        bail!("--input SCENE.tif is required (or use `canopy segment merge`)");
    };
    let tif = GeoTiff::open(input).with_context(|| format!("opening {}", input.display()))?;
    let seg = match &a.weights {
        Some(weights) => Segmenter::from_checkpoint(weights)
            .with_context(|| format!("loading the model {}", weights.display()))?,
        None => builtin_model(&tif, input)?,
    };
    let opts = options(&a.tiling, a.bands.as_deref(), a.batch)?;
    let start = Instant::now();
    if let Some(shard) = &a.shard {
        let shard = Shard::parse(shard)?;
        let Some(dir) = &a.shard_dir else {
            bail!("--shard needs --shard-dir DIR for the window predictions");
        };
        let bar = progress_bar(usize::MAX, opts.tile);
        let m = predict_shard(&seg, &tif, input, dir, shard, &opts, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        println!(
            "shard {}/{}: {} windows written to {} in {:.1} s; run `canopy segment merge` with \
             every shard folder when all shards are done",
            shard.index,
            shard.count,
            m.windows.len(),
            dir.display(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let Some(out) = &a.out else {
        bail!("--out CLASSES.tif is required");
    };
    let outputs = SegmentOutputs {
        classes: out.clone(),
        probabilities: a.probabilities.clone(),
    };
    let bar = progress_bar(usize::MAX, opts.tile);
    let report = segment_geotiff(&seg, &tif, input, &outputs, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    print_report(
        &report,
        seg.class_names(),
        start.elapsed().as_secs_f64(),
        out,
    );
    Ok(())
}

fn merge(m: &MergeArgs) -> anyhow::Result<()> {
    let tif = GeoTiff::open(&m.input).with_context(|| format!("opening {}", m.input.display()))?;
    let opts = options(&m.tiling, None, 1)?;
    let outputs = SegmentOutputs {
        classes: m.out.clone(),
        probabilities: m.probabilities.clone(),
    };
    let start = Instant::now();
    let bar = progress_bar(usize::MAX, opts.tile);
    let report = merge_shards(&m.shards, &tif, &outputs, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    print_report(&report, &[], start.elapsed().as_secs_f64(), &m.out);
    Ok(())
}
