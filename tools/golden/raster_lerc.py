"""Writes the LERC fixtures of canopy-raster's tests with GDAL (through rasterio): a small
seeded 3-band u8 and 1-band f32 image as LERC, LERC_DEFLATE and LERC_ZSTD GeoTIFFs (strips and
tiles, pixel- and band-interleaved), one f32 LERC file with NaN samples, and a JSON file with the SHA-256 of each file's decoded
samples (little-endian, band-major, row-major: the convention of canopy's checksum).

    ~/.cache/canopy-peers/venv/bin/python tools/golden/raster_lerc.py

Output: crates/canopy-raster/tests/fixtures/lerc/*.tif and expected.json.
"""

import hashlib
import json
import pathlib

import numpy as np
import rasterio
from rasterio.transform import from_origin

out = pathlib.Path(__file__).resolve().parents[2] / "crates/canopy-raster/tests/fixtures/lerc"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
h, w = 37, 45
# smooth-ish content with noise, so LERC's bit-stuffing and Huffman paths both occur
yy, xx = np.mgrid[0:h, 0:w]
u8 = np.stack([(xx * 5 + yy * 3 + b * 40 + rng.integers(0, 9, (h, w))) % 256 for b in range(3)]).astype(np.uint8)
f32 = (np.sin(xx / 7.0) * np.cos(yy / 5.0) * 100 + rng.normal(0, 0.01, (h, w))).astype(np.float32)[None]

expected = {}
for comp in ["LERC", "LERC_DEFLATE", "LERC_ZSTD"]:
    for name, data in [("u8", u8), ("f32", f32)]:
        for tiled in [False, True]:
            for interleave in (["pixel", "band"] if data.shape[0] > 1 else ["band"]):
                fname = f"{name}_{comp.lower()}_{'tiled' if tiled else 'strip'}_{interleave}.tif"
                opts = dict(compress=comp, interleave=interleave, MAX_Z_ERROR=0)
                if tiled:
                    opts.update(tiled=True, blockxsize=16, blockysize=16)
                else:
                    opts.update(blockysize=8)
                with rasterio.open(
                    out / fname, "w", driver="GTiff", width=w, height=h, count=data.shape[0],
                    dtype=data.dtype, crs="EPSG:32618", transform=from_origin(500000, 4000000, 10, 10),
                    **opts,
                ) as dst:
                    dst.write(data)
                with rasterio.open(out / fname) as src:
                    back = src.read()
                    assert src.compression is not None
                assert np.array_equal(back, data), fname  # MAX_Z_ERROR=0: lossless
                expected[fname] = hashlib.sha256(back.astype(back.dtype.newbyteorder("<")).tobytes()).hexdigest()
# NaN samples: LERC cannot hold them, GDAL stores them as invalid in the blob's mask and gives
# them back as NaN
nan = f32.copy()
nan[0, 2, 3] = np.nan
nan[0, 20, :] = np.nan
fname = "f32_lerc_nan_strip_band.tif"
with rasterio.open(
    out / fname, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
    crs="EPSG:32618", transform=from_origin(500000, 4000000, 10, 10), compress="LERC",
    MAX_Z_ERROR=0, blockysize=8,
) as dst:
    dst.write(nan)
with rasterio.open(out / fname) as src:
    back = src.read()
assert np.array_equal(back, nan, equal_nan=True), fname
expected[fname] = hashlib.sha256(back.astype("<f4").tobytes()).hexdigest()
(out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
print(f"{len(expected)} files in {out}")
