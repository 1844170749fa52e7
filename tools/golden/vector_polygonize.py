"""Reference polygons from GDAL (rasterio.features.shapes) for canopy-vector's polygonize tests.

Run once, with the peer environment (../shared/peers/setup.sh builds it):

    ~/.cache/canopy-peers/venv/bin/python tools/golden/vector_polygonize.py

Writes crates/canopy-vector/tests/fixtures/polygonize_gdal.json: small seeded random label
rasters (multi-valued, and noisy 0/1 masks that produce holes and corner pinches) with the
shapes GDAL returns at 4- and 8-connectivity, in pixel coordinates (identity transform).

With `--spacenet DIR` it also writes polygonize_spacenet.json: for each footprint mask of
../shared/data/buildings/spacenet-atlanta, GDAL's polygon count, areas and vertex counts (the
masks themselves stay in ../shared; only these summary numbers are committed).
"""
import json
import os
import sys

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "crates", "canopy-vector", "tests", "fixtures")


def cases():
    rng = np.random.default_rng(0)
    out = []
    # Multi-valued maps: regions of every value, no mask.
    for i, (h, w, k) in enumerate([(12, 17, 3), (20, 20, 4), (9, 31, 2)]):
        base = rng.integers(0, k, size=(h // 3 + 1, w // 3 + 1))
        lab = np.kron(base, np.ones((3, 3), dtype=np.int64))[:h, :w]
        noise = rng.random((h, w)) < 0.15
        lab = np.where(noise, rng.integers(0, k, size=(h, w)), lab).astype(np.uint8)
        out.append((f"multi{i}", lab, False))
    # Noisy binary masks: foreground only (mask = labels != 0), many pinches and holes.
    for i, (h, w, p) in enumerate([(16, 16, 0.45), (24, 19, 0.55), (32, 32, 0.5), (40, 40, 0.62)]):
        lab = (rng.random((h, w)) < p).astype(np.uint8)
        out.append((f"binary{i}", lab, True))
    return out


def shapes_of(lab, masked, conn):
    mask = (lab != 0) if masked else None
    res = []
    for geom, value in rasterio.features.shapes(lab, mask=mask, connectivity=conn,
                                                transform=Affine.identity()):
        g = shape(geom)
        res.append({
            "value": int(value),
            "area": g.area,
            "valid": bool(g.is_valid),
            "coordinates": geom["coordinates"],
        })
    return res


def main():
    os.makedirs(OUT, exist_ok=True)
    doc = {"generator": "tools/golden/vector_polygonize.py",
           "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__, "cases": []}
    for name, lab, masked in cases():
        for conn in (4, 8):
            doc["cases"].append({
                "name": name, "connectivity": conn, "masked": masked,
                "height": int(lab.shape[0]), "width": int(lab.shape[1]),
                "labels": lab.flatten().tolist(),
                "shapes": shapes_of(lab, masked, conn),
            })
    path = os.path.join(OUT, "polygonize_gdal.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"wrote {path}: {len(doc['cases'])} cases")

    if "--spacenet" in sys.argv:
        d = sys.argv[sys.argv.index("--spacenet") + 1]
        summ = {"generator": doc["generator"], "gdal": doc["gdal"], "files": []}
        for fname in ["sample_fp_mask.tif", "sample_fp_mask_from_geojson.tif", "sample_b_mask_outer.tif"]:
            with rasterio.open(os.path.join(d, fname)) as src:
                band = src.read(1)
            for conn in (4, 8):
                m = band != 0
                shp = [shape(g) for g, _ in rasterio.features.shapes(
                    band, mask=m, connectivity=conn, transform=Affine.identity())]
                summ["files"].append({
                    "file": fname, "connectivity": conn, "foreground_pixels": int(m.sum()),
                    "polygons": len(shp),
                    "areas": sorted(float(g.area) for g in shp),
                    "holes": int(sum(len(g.interiors) for g in shp)),
                    "vertices": int(sum(shapely.get_num_coordinates(g) for g in shp)),
                })
        path = os.path.join(OUT, "polygonize_spacenet.json")
        with open(path, "w") as f:
            json.dump(summ, f, indent=1)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
