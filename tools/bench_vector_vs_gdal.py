"""canopy-vector vs GDAL/GEOS on the mask of ../shared/peers/bench_polygonize.py, one run.

    ~/.cache/canopy-peers/venv/bin/python tools/bench_vector_vs_gdal.py [--runs 15]

Builds the peer benchmark's 4096x4096 mask (its own generator, seed 0), writes it to a temporary
GeoTIFF, times rasterio.features.shapes at 4- and 8-connectivity (median of --runs), then runs
`cargo run --release -p canopy-vector --example polygonize_bench` on the same file and prints
the ratio GDAL time / canopy time (above 1 = canopy faster). Quote medians; the machine is shared.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "..", "shared", "peers"))
from bench_polygonize import make_mask  # noqa: E402


def median_ms(f, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 15
    mask = make_mask()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mask.tif")
        with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                           count=1, dtype="uint8", compress="deflate", tiled=True) as dst:
            dst.write(mask, 1)
        gdal = {}
        for conn in (4, 8):
            out = {}

            def f():
                out["s"] = list(rasterio.features.shapes(mask, mask=mask.astype(bool),
                                                         connectivity=conn,
                                                         transform=Affine.identity()))
            f()
            gdal[conn] = (median_ms(f, runs), len(out["s"]))
            if conn == 4:
                geoms = np.array([shape(g) for g, _ in out["s"]], dtype=object)
                simp = {}

                def g():
                    simp["s"] = shapely.simplify(geoms, 1.0, preserve_topology=True)
                g()
                geos = (median_ms(g, runs), int(shapely.get_num_coordinates(geoms).sum()),
                        int(shapely.get_num_coordinates(simp["s"]).sum()))
        cmd = ["cargo", "run", "--release", "-q", "-p", "canopy-vector", "--example",
               "polygonize_bench", "--", path, "--runs", str(runs)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        ours = {}
        for line in res.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                ours[row.get("connectivity", row.get("op"))] = row
    print(f"mask 4096x4096, {mask.mean()*100:.1f}% foreground; medians of {runs} runs; "
          f"rasterio {rasterio.__version__} / GDAL {rasterio.__gdal_version__}")
    for conn in (4, 8):
        g_ms, g_n = gdal[conn]
        o = ours[conn]
        print(f"polygonize connectivity {conn}: GDAL {g_ms:.1f} ms ({g_n} polygons), canopy "
              f"{o['median_ms']:.1f} ms ({o['regions']} regions) -> {g_ms / o['median_ms']:.2f}x")
    g_ms, nv_in, nv_out = geos
    for op in ("simplify", "simplify_coverage"):
        o = ours[op]
        print(f"{op} tol 1.0 ({o['polygons']} polygons): GEOS preserve_topology {g_ms:.1f} ms "
              f"({nv_in} -> {nv_out} vertices), canopy {o['median_ms']:.1f} ms "
              f"({o['vertices_in']} -> {o['vertices_out']} vertices) -> {g_ms / o['median_ms']:.2f}x")


if __name__ == "__main__":
    main()
