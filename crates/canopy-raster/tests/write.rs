//! Integration tests of the GeoTIFF writer: files are decoded with the `tiff` crate (and,
//! in an ignored test, with GDAL through rasterio) and compared bit-exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use canopy_raster::geokeys::{GeoKey, GeoKeyDirectory, GeoKeyValue, GT_CITATION};
use canopy_raster::write::{
    write_geotiff, BigTiff, GeoTiffWriter, Interleave, Predictor, WriteOptions,
};
use canopy_raster::{
    gdal_metadata, Compression, GeoTransform, Georef, Raster, Sample, ScaleOffset,
};
use ndarray::{s, Array3};
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

/// Deterministic pseudo-random samples covering every bit pattern (NaNs included).
fn random<T: Sample>(bands: usize, h: usize, w: usize, seed: u64) -> Array3<T> {
    let n = T::DTYPE.size();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array3::from_shape_fn((bands, h, w), |_| {
        let mut b = [0u8; 8];
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        b.copy_from_slice(&state.to_le_bytes());
        T::from_le_slice(&b[..n])
    })
}

/// Smooth samples (what predictors are for).
fn smooth<T: Sample>(bands: usize, h: usize, w: usize) -> Array3<T> {
    Array3::from_shape_fn((bands, h, w), |(b, r, c)| {
        T::from_f64(((b * 7 + r * 3 + c) % 200) as f64)
    })
}

fn le_bytes<T: Sample>(a: &Array3<T>) -> Vec<u8> {
    let mut v = Vec::new();
    a.iter().for_each(|x| x.extend_le(&mut v));
    v
}

fn result_bytes(r: DecodingResult) -> Vec<u8> {
    fn f<X: Copy, const N: usize>(v: Vec<X>, g: fn(X) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(g).collect()
    }
    match r {
        DecodingResult::U8(v) => v,
        DecodingResult::I8(v) => f(v, i8::to_le_bytes),
        DecodingResult::U16(v) => f(v, u16::to_le_bytes),
        DecodingResult::I16(v) => f(v, i16::to_le_bytes),
        DecodingResult::U32(v) => f(v, u32::to_le_bytes),
        DecodingResult::I32(v) => f(v, i32::to_le_bytes),
        DecodingResult::F32(v) => f(v, f32::to_le_bytes),
        DecodingResult::F64(v) => f(v, f64::to_le_bytes),
        DecodingResult::U64(v) => f(v, u64::to_le_bytes),
        DecodingResult::I64(v) => f(v, i64::to_le_bytes),
        _ => panic!("unexpected decoding result"),
    }
}

/// Undoes TIFF predictor 2 or 3 on one decompressed row (spec-level reference code).
fn unpredict_row(row: &mut [u8], predictor: u16, n: usize, spp: usize) {
    match predictor {
        2 => {
            let count = row.len() / n;
            for i in spp..count {
                let (a, b) = (i * n, (i - spp) * n);
                let mut cur = [0u8; 8];
                let mut prev = [0u8; 8];
                cur[..n].copy_from_slice(&row[a..a + n]);
                prev[..n].copy_from_slice(&row[b..b + n]);
                let sum = u64::from_le_bytes(cur).wrapping_add(u64::from_le_bytes(prev));
                row[a..a + n].copy_from_slice(&sum.to_le_bytes()[..n]);
            }
        }
        3 => {
            for i in spp..row.len() {
                row[i] = row[i].wrapping_add(row[i - spp]);
            }
            let wc = row.len() / n;
            let planes = row.to_vec();
            for k in 0..wc {
                for byte in 0..n {
                    row[k * n + byte] = planes[(n - 1 - byte) * wc + k];
                }
            }
        }
        _ => {}
    }
}

/// Decodes every chunk into `(bands, rows, cols)`: with the `tiff` crate's `read_chunk`,
/// except for LZW, where tiff 0.11 with weezl 0.1 fails on valid EOI-terminated chunks whose
/// size is a multiple of its read granularity (image-tiff issue #395): those chunks are
/// decompressed whole with weezl and un-predicted by the reference code above.
fn decode<T: Sample>(path: &Path) -> Array3<T> {
    let file_bytes = std::fs::read(path).unwrap();
    let mut d = Decoder::new(BufReader::new(File::open(path).unwrap())).unwrap();
    let (w, h) = d.dimensions().unwrap();
    let (w, h) = (w as usize, h as usize);
    let spp = d.get_tag_unsigned::<usize>(Tag::SamplesPerPixel).unwrap();
    let planar = d
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .unwrap()
        .unwrap_or(1)
        == 2;
    let lzw = d.get_tag_u32(Tag::Compression).unwrap() == 5;
    let predictor = d
        .find_tag_unsigned::<u16>(Tag::Predictor)
        .unwrap()
        .unwrap_or(1);
    let tiled = d.find_tag(Tag::TileWidth).unwrap().is_some();
    let (off_tag, cnt_tag) = if tiled {
        (Tag::TileOffsets, Tag::TileByteCounts)
    } else {
        (Tag::StripOffsets, Tag::StripByteCounts)
    };
    let offsets = d.get_tag_u64_vec(off_tag).unwrap();
    let counts = d.get_tag_u64_vec(cnt_tag).unwrap();
    let (cw, ch) = d.chunk_dimensions();
    let (cw, ch) = (cw as usize, ch as usize);
    let across = w.div_ceil(cw);
    let down = h.div_ceil(ch);
    let n = T::DTYPE.size();
    let mut out = Array3::<T>::default((spp, h, w));
    let planes = if planar { spp } else { 1 };
    let per_chunk = if planar { 1 } else { spp };
    for plane in 0..planes {
        for br in 0..down {
            for bc in 0..across {
                let idx = plane * across * down + br * across + bc;
                let vw = cw.min(w - bc * cw);
                let vh = ch.min(h - br * ch);
                let (bytes, row_bytes) = if lzw {
                    let (o, c) = (offsets[idx] as usize, counts[idx] as usize);
                    let mut raw =
                        weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                            .decode(&file_bytes[o..o + c])
                            .unwrap();
                    let row_bytes = cw * per_chunk * n;
                    let rows = if tiled { ch } else { vh };
                    assert_eq!(raw.len(), rows * row_bytes, "LZW chunk {idx} size");
                    for row in raw.chunks_exact_mut(row_bytes) {
                        unpredict_row(row, predictor, n, per_chunk);
                    }
                    (raw, row_bytes)
                } else {
                    // tiff 0.11 computes the bottom padding of planar tiles from the chunk
                    // index of band 0 only, so later planes may come back with padding rows;
                    // the valid rows come first either way.
                    let bytes = result_bytes(d.read_chunk(idx as u32).unwrap());
                    (bytes, vw * per_chunk * n)
                };
                assert!(bytes.len() >= vh * row_bytes, "chunk {idx} too short");
                for r in 0..vh {
                    for c in 0..vw {
                        for k in 0..per_chunk {
                            let at = r * row_bytes + (c * per_chunk + k) * n;
                            let band = if planar { plane } else { k };
                            out[[band, br * ch + r, bc * cw + c]] =
                                T::from_le_slice(&bytes[at..at + n]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The (tag, type) list of the first IFD, read by hand.
fn raw_ifd(path: &Path) -> (bool, Vec<(u16, u16)>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..2], b"II");
    let magic = u16::from_le_bytes([b[2], b[3]]);
    let big = magic == 43;
    let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let mut tags = Vec::new();
    if big {
        let ifd = u64at(8) as usize;
        let n = u64at(ifd) as usize;
        for i in 0..n {
            let e = ifd + 8 + i * 20;
            tags.push((u16at(e), u16at(e + 2)));
        }
    } else {
        assert_eq!(magic, 42);
        let ifd = u32at(4) as usize;
        assert_eq!(ifd % 2, 0, "IFD on a word boundary");
        let n = u16at(ifd) as usize;
        for i in 0..n {
            let e = ifd + 2 + i * 12;
            tags.push((u16at(e), u16at(e + 2)));
        }
    }
    (big, tags)
}

fn georef() -> Georef {
    Georef::new(
        GeoTransform::north_up(500_000.0, 4_600_000.0, 10.0, 10.0),
        Some(32633),
    )
}

fn variants<T: Sample>() -> Vec<(&'static str, WriteOptions)> {
    let pred = if T::DTYPE.is_float() {
        Predictor::FloatingPoint
    } else {
        Predictor::Horizontal
    };
    let d = WriteOptions::default();
    vec![
        ("tiled-deflate", d.clone().tiled(16, 32)),
        (
            "tiled-deflate-pred",
            d.clone().tiled(32, 16).with_predictor(pred),
        ),
        (
            "tiled-lzw-pred-band",
            d.clone()
                .tiled(16, 16)
                .with_compression(Compression::Lzw)
                .with_predictor(pred)
                .with_interleave(Interleave::Band),
        ),
        (
            "striped-none",
            d.clone().striped(7).with_compression(Compression::None),
        ),
        (
            "striped-lzw-pred",
            d.clone()
                .striped(5)
                .with_compression(Compression::Lzw)
                .with_predictor(pred),
        ),
        (
            "striped-deflate-pred-band-bigtiff",
            d.clone()
                .striped(16)
                .with_predictor(pred)
                .with_interleave(Interleave::Band)
                .with_bigtiff(BigTiff::Always),
        ),
        (
            "tiled-none-band-bigtiff",
            d.tiled(16, 16)
                .with_compression(Compression::None)
                .with_interleave(Interleave::Band)
                .with_bigtiff(BigTiff::Always),
        ),
    ]
}

fn round_trip_type<T: Sample>() {
    let dir = tempfile::tempdir().unwrap();
    for bands in [1, 3, 5] {
        for (name, opts) in variants::<T>() {
            for (kind, data) in [
                ("random", random::<T>(bands, 45, 70, bands as u64)),
                ("smooth", smooth::<T>(bands, 45, 70)),
            ] {
                let path = dir
                    .path()
                    .join(format!("{}-{bands}-{name}-{kind}.tif", T::DTYPE));
                let raster = Raster::new(data.clone(), georef());
                write_geotiff(&path, &raster, &opts).unwrap();
                let back = decode::<T>(&path);
                assert!(
                    le_bytes(&back) == le_bytes(&data),
                    "{} {bands} bands {name} {kind}: samples differ",
                    T::DTYPE
                );
                let (big, tags) = raw_ifd(&path);
                assert_eq!(big, opts.bigtiff == BigTiff::Always, "{name}");
                let ids: Vec<u16> = tags.iter().map(|t| t.0).collect();
                let mut sorted = ids.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(ids, sorted, "tags ascending and unique");
            }
        }
    }
}

#[test]
fn round_trip_u8() {
    round_trip_type::<u8>();
}
#[test]
fn round_trip_i8() {
    round_trip_type::<i8>();
}
#[test]
fn round_trip_u16() {
    round_trip_type::<u16>();
}
#[test]
fn round_trip_i16() {
    round_trip_type::<i16>();
}
#[test]
fn round_trip_u32() {
    round_trip_type::<u32>();
}
#[test]
fn round_trip_i32() {
    round_trip_type::<i32>();
}
#[test]
fn round_trip_f32() {
    round_trip_type::<f32>();
}
#[test]
fn round_trip_f64() {
    round_trip_type::<f64>();
}

#[test]
fn baseline_tags_and_photometric() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rgb.tif");
    write_geotiff(
        &p,
        &Raster::new(smooth::<u8>(3, 20, 20), georef()),
        &WriteOptions::default().with_predictor(Predictor::Horizontal),
    )
    .unwrap();
    let mut d = Decoder::new(File::open(&p).unwrap()).unwrap();
    assert_eq!(d.get_tag_u32(Tag::PhotometricInterpretation).unwrap(), 2);
    assert!(d.find_tag(Tag::ExtraSamples).unwrap().is_none());
    assert_eq!(d.get_tag_u32(Tag::Predictor).unwrap(), 2);
    assert_eq!(d.get_tag_u32(Tag::Compression).unwrap(), 8);
    assert_eq!(d.get_tag_u32(Tag::TileWidth).unwrap(), 256);

    let p = dir.path().join("ms.tif");
    write_geotiff(
        &p,
        &Raster::new(smooth::<i16>(5, 20, 20), georef()),
        &WriteOptions::default()
            .striped(8)
            .with_compression(Compression::Lzw)
            .with_interleave(Interleave::Band),
    )
    .unwrap();
    let mut d = Decoder::new(File::open(&p).unwrap()).unwrap();
    assert_eq!(d.get_tag_u32(Tag::PhotometricInterpretation).unwrap(), 1);
    assert_eq!(d.get_tag_u16_vec(Tag::ExtraSamples).unwrap(), vec![0; 4]);
    assert_eq!(d.get_tag_u16_vec(Tag::BitsPerSample).unwrap(), vec![16; 5]);
    assert_eq!(d.get_tag_u16_vec(Tag::SampleFormat).unwrap(), vec![2; 5]);
    assert_eq!(d.get_tag_u32(Tag::PlanarConfiguration).unwrap(), 2);
    assert_eq!(d.get_tag_u32(Tag::RowsPerStrip).unwrap(), 8);
    assert_eq!(d.get_tag_u32(Tag::Compression).unwrap(), 5);
    assert!(d.find_tag(Tag::Predictor).unwrap().is_none());
    assert_eq!(d.get_tag_u64_vec(Tag::StripOffsets).unwrap().len(), 15);
}

fn read_georef(path: &Path) -> (Georef, Option<String>, Option<String>) {
    let mut d = Decoder::new(File::open(path).unwrap()).unwrap();
    let f64s = |d: &mut Decoder<File>, t: u16| {
        d.find_tag(Tag::from_u16_exhaustive(t))
            .unwrap()
            .map(|v| v.into_f64_vec().unwrap())
    };
    let pixel_scale = f64s(&mut d, 33550);
    let tiepoints = f64s(&mut d, 33922);
    let transformation = f64s(&mut d, 34264);
    let dir = d.get_tag_u16_vec(Tag::GeoKeyDirectoryTag).unwrap();
    let doubles = f64s(&mut d, 34736).unwrap_or_default();
    let ascii = d
        .find_tag(Tag::GeoAsciiParamsTag)
        .unwrap()
        .map(|v| v.into_string().unwrap())
        .unwrap_or_default();
    let ascii_str = |d: &mut Decoder<File>, t: u16| {
        d.find_tag(Tag::from_u16_exhaustive(t))
            .unwrap()
            .map(|v| v.into_string().unwrap())
    };
    let nodata = ascii_str(&mut d, 42113);
    let meta = ascii_str(&mut d, 42112);
    let geokeys = Some(GeoKeyDirectory::parse(&dir, &doubles, &ascii).unwrap());
    let tags = canopy_raster::geo::GeoTags {
        pixel_scale,
        tiepoints,
        transformation,
        geokeys,
    };
    (Georef::from_tags(&tags), nodata, meta)
}

#[test]
fn georeferencing_nodata_and_scale_offset_read_back() {
    let dir = tempfile::tempdir().unwrap();
    // North-up, EPSG, PixelIsPoint, a citation (GeoAsciiParams) and a double key.
    let mut g = georef();
    let mut keys = GeoKeyDirectory::from_epsg(32633, false);
    keys.keys.push(GeoKey {
        id: GT_CITATION,
        value: GeoKeyValue::Ascii("WGS 84 / UTM zone 33N".into()),
    });
    keys.keys.push(GeoKey {
        id: 3080,
        value: GeoKeyValue::Double(vec![15.0]),
    });
    keys.keys.sort_by_key(|k| k.id);
    g.crs.geokeys = Some(keys);
    g.area_or_point = canopy_raster::AreaOrPoint::Point;
    let so = vec![
        ScaleOffset {
            scale: 0.0001,
            offset: -0.1,
        },
        ScaleOffset {
            scale: 2.0,
            offset: 0.0,
        },
    ];
    let mut r = Raster::new(smooth::<u16>(2, 30, 40), g.clone()).with_nodata(Some(-9999.0));
    r.scale_offset = so.clone();
    let p = dir.path().join("geo.tif");
    write_geotiff(&p, &r, &WriteOptions::default()).unwrap();
    let (back, nodata, meta) = read_georef(&p);
    let expected_tags = g.to_tags();
    assert_eq!(back.transform, g.transform);
    assert_eq!(back.crs.epsg, Some(32633));
    assert_eq!(back.crs.geokeys, expected_tags.geokeys);
    assert_eq!(back.area_or_point, canopy_raster::AreaOrPoint::Point);
    assert_eq!(nodata.as_deref(), Some("-9999"));
    assert_eq!(
        gdal_metadata::parse_scale_offset(meta.as_deref().unwrap(), 2),
        so
    );
    let (_, tags) = raw_ifd(&p);
    let ty = |t: u16| tags.iter().find(|e| e.0 == t).map(|e| e.1);
    assert_eq!(ty(33550), Some(12), "ModelPixelScale DOUBLE");
    assert_eq!(ty(33922), Some(12), "ModelTiepoint DOUBLE");
    assert_eq!(ty(34735), Some(3), "GeoKeyDirectory SHORT");
    assert_eq!(ty(34736), Some(12), "GeoDoubleParams DOUBLE");
    assert_eq!(ty(34737), Some(2), "GeoAsciiParams ASCII");
    assert_eq!(ty(42112), Some(2), "GDAL_METADATA ASCII");
    assert_eq!(ty(42113), Some(2), "GDAL_NODATA ASCII");

    // Rotated transform -> ModelTransformation; NaN nodata; geographic EPSG.
    let g = Georef::new(
        GeoTransform([10.0, 0.1, 0.02, 50.0, 0.01, -0.1]),
        Some(4326),
    );
    let r = Raster::new(smooth::<f32>(1, 10, 10), g.clone()).with_nodata(Some(f64::NAN));
    let p = dir.path().join("rot.tif");
    write_geotiff(&p, &r, &WriteOptions::default()).unwrap();
    let (back, nodata, meta) = read_georef(&p);
    assert_eq!(back.transform, g.transform);
    assert_eq!(back.crs.epsg, Some(4326));
    assert_eq!(nodata.as_deref(), Some("nan"));
    assert!(meta.is_none());
    let (_, tags) = raw_ifd(&p);
    assert!(tags.iter().any(|e| e == &(34264, 12)));
    assert!(!tags.iter().any(|e| e.0 == 33550));
}

fn options_for_streaming() -> Vec<WriteOptions> {
    vec![
        WriteOptions::default()
            .tiled(16, 32)
            .with_predictor(Predictor::Horizontal),
        WriteOptions::default()
            .striped(3)
            .with_compression(Compression::Lzw)
            .with_interleave(Interleave::Band),
    ]
}

#[test]
fn write_rows_in_any_chunking_equals_write_geotiff_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = random::<u16>(3, 77, 50, 9);
    for (i, opts) in options_for_streaming().into_iter().enumerate() {
        let whole = dir.path().join(format!("whole{i}.tif"));
        write_geotiff(&whole, &Raster::new(data.clone(), georef()), &opts).unwrap();
        for step in [1usize, 7, 13, 32, 77] {
            let p = dir.path().join(format!("rows{i}-{step}.tif"));
            let mut w =
                GeoTiffWriter::<u16>::create(&p, 50, 77, 3, &georef(), None, &opts).unwrap();
            let mut r = 0;
            while r < 77 {
                let n = step.min(77 - r);
                w.write_rows(data.slice(s![.., r..r + n, ..])).unwrap();
                r += n;
            }
            w.finish().unwrap();
            assert!(
                std::fs::read(&p).unwrap() == std::fs::read(&whole).unwrap(),
                "options {i}, {step} rows at a time"
            );
        }
    }
}

#[test]
fn write_block_out_of_order_equals_write_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = random::<f32>(2, 77, 50, 3);
    for (i, opts) in options_for_streaming().into_iter().enumerate() {
        let opts = if i == 0 {
            opts.with_predictor(Predictor::FloatingPoint)
        } else {
            opts
        };
        let whole = dir.path().join(format!("whole{i}.tif"));
        write_geotiff(&whole, &Raster::new(data.clone(), georef()), &opts).unwrap();
        let p = dir.path().join(format!("blocks{i}.tif"));
        let mut w = GeoTiffWriter::<f32>::create(&p, 50, 77, 2, &georef(), None, &opts).unwrap();
        let (bh, bw) = w.block_shape();
        let (down, across) = w.block_grid();
        let mut order: Vec<(usize, usize)> = (0..down)
            .flat_map(|r| (0..across).map(move |c| (r, c)))
            .collect();
        order.reverse();
        order.swap(0, 2);
        for (r, c) in order {
            let (h, wd) = w.block_extent(r, c);
            let v = data.slice(s![.., r * bh..r * bh + h, c * bw..c * bw + wd]);
            w.write_block(r, c, v).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(
            le_bytes(&decode::<f32>(&p)),
            le_bytes(&decode::<f32>(&whole)),
            "options {i}"
        );
        assert_eq!(le_bytes(&decode::<f32>(&p)), le_bytes(&data));
    }
}

#[test]
fn auto_bigtiff_is_classic_for_small_files_and_overwrites_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.tif");
    std::fs::write(&p, b"old contents").unwrap();
    let data = smooth::<u8>(1, 10, 10);
    write_geotiff(
        &p,
        &Raster::new(data.clone(), georef()),
        &WriteOptions::default(),
    )
    .unwrap();
    assert!(!raw_ifd(&p).0);
    assert_eq!(decode::<u8>(&p), data);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind");
}

/// Blocks are encoded by whichever thread is free and written in block order: the file does
/// not depend on the number of threads, and the offsets grow block by block.
#[test]
fn files_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    // 64 x 64 x 3 u16 tiles (24 KiB): about ten per claim, so 100 tiles are shared out in
    // several claims; 1-row strips of 640 x 3 u16 likewise.
    let data = smooth::<u16>(3, 640, 640);
    let raster = Raster::new(data.clone(), georef());
    for (name, opts) in [
        ("tiled", WriteOptions::default().tiled(64, 64)),
        ("striped", WriteOptions::default().striped(1)),
        (
            "band",
            WriteOptions::default()
                .tiled(64, 64)
                .with_interleave(Interleave::Band),
        ),
    ] {
        let files: Vec<Vec<u8>> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let path = dir.path().join(format!("{name}-{threads}.tif"));
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| write_geotiff(&path, &raster, &opts))
                    .unwrap();
                assert!(le_bytes(&decode::<u16>(&path)) == le_bytes(&data), "{name}");
                let mut d = Decoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
                let tag = if name == "striped" {
                    Tag::StripOffsets
                } else {
                    Tag::TileOffsets
                };
                let mut offsets = d.get_tag_u64_vec(tag).unwrap();
                if name == "band" {
                    // one chunk per band and block, written block by block: reorder by block
                    let n = offsets.len() / 3;
                    offsets = (0..n)
                        .flat_map(|b| (0..3).map(move |p| p * n + b))
                        .map(|i| offsets[i])
                        .collect();
                }
                assert!(offsets.len() >= 100, "{name}: {} blocks", offsets.len());
                assert!(
                    offsets.windows(2).all(|w| w[0] < w[1]),
                    "{name}, {threads} threads: blocks out of order"
                );
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files[0] == files[1] && files[1] == files[2], "{name}");
    }
}

/// Files written from inside rayon tasks (a parallel loop over rasters) share the pool with
/// the writers' own block encoding: every write completes and reads back.
#[test]
fn writes_from_parallel_tasks_complete() {
    use rayon::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    // 19 x 17 tiles of 4 KiB: six claims of 64 tiles per file
    let data = smooth::<u16>(2, 600, 520);
    let raster = Raster::new(data.clone(), georef());
    let opts = WriteOptions::default().tiled(32, 32);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        (0..6).into_par_iter().for_each(|i| {
            write_geotiff(dir.path().join(format!("{i}.tif")), &raster, &opts).unwrap();
        })
    });
    for i in 0..6 {
        let back = decode::<u16>(&dir.path().join(format!("{i}.tif")));
        assert!(le_bytes(&back) == le_bytes(&data), "file {i}");
    }
}
