//! Streaming polygonize: rasters of any height, read strip by strip, with regions merged across
//! strip borders so no building is cut at a seam.
//!
//! [`StreamingPolygonizer`] takes rows in order (any number at a time) and hands back each
//! region as soon as it is complete — when a row no longer continues it — exactly as
//! [`polygonize`](crate::polygonize::polygonize) would have produced it for the whole raster
//! (same regions, same rings; only the order differs: regions come in order of completion, like
//! GDAL's). [`polygonize_geotiff`] drives it over a GeoTIFF with windowed reads.
//!
//! # Memory
//! The state is the previous row's runs plus the boundary segments of the regions still open
//! (touching the last row read); pixels are never kept. With a strip of `k` rows, memory is
//! `O(k x width)` for the strip being decoded plus the open regions' outlines. A region that
//! spans the whole raster (a background class) stays open until it ends and its outline grows
//! with it — as in GDAL; polygonize one class (a validity mask) to avoid that.
//!
//! # Example
//! ```
//! use canopy_vector::stream::StreamingPolygonizer;
//! use canopy_vector::PolygonizeOptions;
//! use ndarray::array;
//!
//! // One building split over two strips comes out once, whole.
//! let mut p = StreamingPolygonizer::new(3, PolygonizeOptions::default())?;
//! let mut regions = p.push_rows(array![[0u8, 1, 1], [0, 1, 0]].view(), None)?;
//! assert!(regions.iter().all(|r| r.value == 0 || r.pixels != 3));
//! regions.extend(p.push_rows(array![[0u8, 1, 0]].view(), None)?);
//! regions.extend(p.finish()?);
//! let building: Vec<_> = regions.iter().filter(|r| r.value == 1).collect();
//! assert_eq!(building.len(), 1);
//! assert_eq!(building[0].pixels, 4);
//! # Ok::<(), canopy_vector::Error>(())
//! ```

use std::collections::HashMap;

use canopy_raster::{GeoTiff, Sample, Window};
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::polygonize::{row_runs, trace_region, Connectivity, PolygonizeOptions, Region, Seg};
use crate::{Error, Result};

/// An open region: its label, pixel count so far and boundary segments so far.
struct Open<T> {
    value: T,
    pixels: usize,
    segs: Vec<Seg>,
}

/// Polygonizes a raster fed row by row; see the [module docs](self).
pub struct StreamingPolygonizer<T> {
    width: u32,
    options: PolygonizeOptions,
    /// Rows consumed so far (the y of the next row).
    y: u32,
    /// Runs of the previous row: (x0, x1, value, open-region id).
    prev: Vec<(u32, u32, T, u32)>,
    open: HashMap<u32, Open<T>>,
    next_id: u32,
}

impl<T> std::fmt::Debug for StreamingPolygonizer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingPolygonizer")
            .field("width", &self.width)
            .field("rows_read", &self.y)
            .field("open_regions", &self.open.len())
            .finish()
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

impl<T: Copy + PartialEq + Send + Sync> StreamingPolygonizer<T> {
    /// A polygonizer for rows of `width` pixels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `width` is 0 or beyond 32-bit pixel coordinates.
    pub fn new(width: usize, options: PolygonizeOptions) -> Result<Self> {
        let width = u32::try_from(width)
            .ok()
            .filter(|&w| w > 0 && w < u32::MAX)
            .ok_or_else(|| {
                Error::invalid(
                    "StreamingPolygonizer",
                    format!("width {width} must be in 1..2^32-1"),
                )
            })?;
        Ok(StreamingPolygonizer {
            width,
            options,
            y: 0,
            prev: Vec::new(),
            open: HashMap::new(),
            next_id: 0,
        })
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> usize {
        self.y as usize
    }

    /// Regions still open (touching the last row read).
    pub fn open_regions(&self) -> usize {
        self.open.len()
    }

    /// Feeds the next rows (`(rows, width)` labels, optional validity mask of the same shape)
    /// and returns the regions they complete.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the width differs from the polygonizer's or the mask's
    /// shape differs from the labels'.
    pub fn push_rows(
        &mut self,
        labels: ArrayView2<'_, T>,
        valid: Option<ArrayView2<'_, bool>>,
    ) -> Result<Vec<Region<T>>> {
        if labels.ncols() != self.width as usize {
            return Err(Error::invalid(
                "StreamingPolygonizer::push_rows",
                format!(
                    "rows of {} pixels given to a polygonizer of width {}",
                    labels.ncols(),
                    self.width
                ),
            ));
        }
        if let Some(v) = &valid {
            if v.dim() != labels.dim() {
                return Err(Error::invalid(
                    "StreamingPolygonizer::push_rows",
                    format!(
                        "validity mask {:?} differs from labels {:?}",
                        v.dim(),
                        labels.dim()
                    ),
                ));
            }
        }
        if (self.y as u64) + (labels.nrows() as u64) >= u64::from(u32::MAX) {
            return Err(Error::invalid(
                "StreamingPolygonizer::push_rows",
                "more than 2^32-2 rows",
            ));
        }
        let rows: Vec<Vec<(u32, u32, T)>> = (0..labels.nrows())
            .into_par_iter()
            .map(|r| row_runs(labels.row(r), valid.as_ref().map(|v| v.row(r))))
            .collect();
        let mut done = Vec::new();
        for runs in rows {
            self.step(&runs, &mut done);
        }
        Ok(self.trace(done))
    }

    /// Ends the raster and returns the regions still open.
    pub fn finish(mut self) -> Result<Vec<Region<T>>> {
        let mut done = Vec::new();
        self.step(&[], &mut done);
        Ok(self.trace(done))
    }

    fn trace(&self, done: Vec<Open<T>>) -> Vec<Region<T>> {
        let stride = u64::from(self.width) + 1;
        let min = self.options.min_pixels;
        done.into_par_iter()
            .filter(|o| o.pixels >= min)
            .map(|o| Region {
                value: o.value,
                pixels: o.pixels,
                geometry: trace_region(&o.segs, stride),
            })
            .collect()
    }

    /// Consumes one row (`cur` = its runs; empty past the last row), emitting the boundary on
    /// line `self.y` and the vertical edges of the row, and moving completed regions to `done`.
    fn step(&mut self, cur: &[(u32, u32, T)], done: &mut Vec<Open<T>>) {
        let np = self.prev.len();
        // Local union-find over the previous row's runs (0..np) and this row's (np..).
        let mut parent: Vec<usize> = (0..np + cur.len()).collect();
        let mut first_of_id: HashMap<u32, usize> = HashMap::new();
        for (i, run) in self.prev.iter().enumerate() {
            if let Some(&j) = first_of_id.get(&run.3) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            } else {
                first_of_id.insert(run.3, i);
            }
        }
        let slack = u32::from(self.options.connectivity == Connectivity::Eight);
        let (mut i, mut j) = (0, 0);
        let touches = |a: &(u32, u32, T, u32), b: &(u32, u32, T)| {
            a.0 < b.1 + slack && b.0 < a.1 + slack && a.2 == b.2
        };
        let join = |parent: &mut Vec<usize>, a: usize, b: usize| {
            let (ra, rb) = (find(parent, a), find(parent, np + b));
            parent[ra.max(rb)] = ra.min(rb);
        };
        while i < np && j < cur.len() {
            if touches(&self.prev[i], &cur[j]) {
                join(&mut parent, i, j);
            }
            let (ai, bj) = (self.prev[i].1, cur[j].1);
            if ai < bj {
                i += 1;
            } else if bj < ai {
                j += 1;
            } else {
                if slack == 1 {
                    if i + 1 < np && touches(&self.prev[i + 1], &cur[j]) {
                        join(&mut parent, i + 1, j);
                    }
                    if j + 1 < cur.len() && touches(&self.prev[i], &cur[j + 1]) {
                        join(&mut parent, i, j + 1);
                    }
                }
                i += 1;
                j += 1;
            }
        }
        // Resolve every set to one open region: the open region of its previous-row runs with
        // the most segments survives and absorbs the others; a set of new runs opens a region.
        let mut id_of_root: HashMap<usize, u32> = HashMap::new();
        let mut renamed: HashMap<u32, u32> = HashMap::new();
        for p in 0..np {
            let root = find(&mut parent, p);
            let id = self.prev[p].3;
            match id_of_root.get(&root) {
                None => {
                    id_of_root.insert(root, id);
                }
                Some(&survivor) if survivor != id && !renamed.contains_key(&id) => {
                    let (keep, gone) = {
                        let (ls, lg) = (
                            self.open.get(&survivor).map_or(0, |o| o.segs.len()),
                            self.open.get(&id).map_or(0, |o| o.segs.len()),
                        );
                        if lg > ls {
                            (id, survivor)
                        } else {
                            (survivor, id)
                        }
                    };
                    if let Some(g) = self.open.remove(&gone) {
                        if let Some(k) = self.open.get_mut(&keep) {
                            k.pixels += g.pixels;
                            k.segs.extend(g.segs);
                        }
                    }
                    renamed.insert(gone, keep);
                    for v in renamed.values_mut() {
                        if *v == gone {
                            *v = keep;
                        }
                    }
                    id_of_root.insert(root, keep);
                }
                Some(_) => {}
            }
        }
        let resolve = |id: u32, renamed: &HashMap<u32, u32>| *renamed.get(&id).unwrap_or(&id);
        let mut cur_ids = Vec::with_capacity(cur.len());
        for (k, run) in cur.iter().enumerate() {
            let root = find(&mut parent, np + k);
            let id = match id_of_root.get(&root) {
                Some(&id) => resolve(id, &renamed),
                None => {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1);
                    self.open.insert(
                        id,
                        Open {
                            value: run.2,
                            pixels: 0,
                            segs: Vec::new(),
                        },
                    );
                    id_of_root.insert(root, id);
                    id
                }
            };
            cur_ids.push(id);
        }
        // Boundary on line y between the previous row (above) and this one (below), then the
        // vertical edges of this row.
        let y = self.y;
        let (mut i, mut j) = (0, 0);
        let mut x = 0u32;
        while x < self.width {
            while i < np && self.prev[i].1 <= x {
                i += 1;
            }
            while j < cur.len() && cur[j].1 <= x {
                j += 1;
            }
            let (ca, next_a) = match self.prev.get(i) {
                Some(r) if r.0 <= x => (Some(resolve(r.3, &renamed)), r.1),
                Some(r) => (None, r.0),
                None => (None, self.width),
            };
            let (cb, next_b) = match cur.get(j) {
                Some(r) if r.0 <= x => (cur_ids.get(j).copied(), r.1),
                Some(r) => (None, r.0),
                None => (None, self.width),
            };
            let next = next_a.min(next_b);
            if ca != cb {
                if let Some(o) = cb.and_then(|k| self.open.get_mut(&k)) {
                    o.segs.push(Seg {
                        sx: x,
                        sy: y,
                        ex: next,
                        ey: y,
                    });
                }
                if let Some(o) = ca.and_then(|k| self.open.get_mut(&k)) {
                    o.segs.push(Seg {
                        sx: next,
                        sy: y,
                        ex: x,
                        ey: y,
                    });
                }
            }
            x = next;
        }
        for (run, &id) in cur.iter().zip(&cur_ids) {
            if let Some(o) = self.open.get_mut(&id) {
                o.pixels += (run.1 - run.0) as usize;
                o.segs.push(Seg {
                    sx: run.0,
                    sy: y + 1,
                    ex: run.0,
                    ey: y,
                });
                o.segs.push(Seg {
                    sx: run.1,
                    sy: y,
                    ex: run.1,
                    ey: y + 1,
                });
            }
        }
        // Regions of the previous row that this row does not continue are complete.
        let continuing: std::collections::HashSet<u32> = cur_ids.iter().copied().collect();
        let mut finished: Vec<u32> = self
            .prev
            .iter()
            .map(|r| resolve(r.3, &renamed))
            .filter(|id| !continuing.contains(id))
            .collect();
        finished.sort_unstable();
        finished.dedup();
        for id in finished {
            if let Some(o) = self.open.remove(&id) {
                done.push(o);
            }
        }
        self.prev = cur
            .iter()
            .zip(&cur_ids)
            .map(|(r, &id)| (r.0, r.1, r.2, id))
            .collect();
        self.y += 1;
    }
}

/// What [`polygonize_geotiff`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Regions handed to the sink (after the minimum-size filter).
    pub regions: usize,
    /// Pixels inside them.
    pub pixels: usize,
    /// Most regions open at once (a measure of the state kept between strips).
    pub max_open: usize,
}

/// Polygonizes band `band` (0-based) of `tif`, reading `strip_rows` rows at a time, skipping
/// nodata and, with `class`, every other value. Each completed region goes to `sink` (pixel
/// coordinates; see [`Region::to_map`]); `progress(rows_done, rows_total)` follows the strips.
///
/// `T` must be the file's sample type ([`GeoTiff::info`]`().dtype`).
///
/// # Errors
/// Reading errors (naming the file), [`Error::InvalidArgument`] for a band out of range or
/// `strip_rows == 0`, and whatever `sink` returns.
pub fn polygonize_geotiff<T: Sample>(
    tif: &GeoTiff,
    band: usize,
    class: Option<T>,
    options: &PolygonizeOptions,
    strip_rows: usize,
    mut sink: impl FnMut(Region<T>) -> Result<()>,
    mut progress: impl FnMut(usize, usize),
) -> Result<StreamSummary> {
    let info = tif.info();
    if band >= info.bands {
        return Err(Error::invalid(
            "polygonize_geotiff",
            format!(
                "{}: band index {band} is out of range ({} band(s), 0-based)",
                tif.path().display(),
                info.bands
            ),
        ));
    }
    if strip_rows == 0 {
        return Err(Error::invalid(
            "polygonize_geotiff",
            "strip_rows must be at least 1",
        ));
    }
    let (width, height) = (info.width, info.height);
    let mut poly = StreamingPolygonizer::new(width, options.clone())?;
    let mut summary = StreamSummary {
        regions: 0,
        pixels: 0,
        max_open: 0,
    };
    let mut emit = |regions: Vec<Region<T>>, summary: &mut StreamSummary| -> Result<()> {
        for r in regions {
            summary.regions += 1;
            summary.pixels += r.pixels;
            sink(r)?;
        }
        Ok(())
    };
    let mut row = 0;
    while row < height {
        let rows = strip_rows.min(height - row);
        let strip = tif.read_bands_window::<T>(&[band], Window::new(0, row, width, rows))?;
        let labels = strip.data.index_axis(ndarray::Axis(0), 0);
        let valid = labels.mapv(|v| !strip.is_nodata(v) && class.is_none_or(|c| v == c));
        let done = poly.push_rows(labels, Some(valid.view()))?;
        summary.max_open = summary.max_open.max(poly.open_regions());
        emit(done, &mut summary)?;
        row += rows;
        progress(row, height);
    }
    emit(poly.finish()?, &mut summary)?;
    Ok(summary)
}
