#!/usr/bin/env python3
"""Read GeoTIFFs with rasterio (GDAL) and print what GDAL decodes, one JSON object per line.

Usage: check_gdal_roundtrip.py FILE [FILE ...]

Each line holds: path, shape [bands, rows, cols], dtype (numpy name), transform (GDAL order),
crs_epsg, nodata (as Python repr text: "nan", "-9999.0", or null), and sha256 of the samples as little-endian bytes in
(band, row, col) order (canopy's `sha256_le` convention). Used by the ignored `gdal` test of
canopy-raster to check that GDAL reads what the writer wrote.
"""
import hashlib
import json
import sys

import numpy as np
import rasterio


def describe(path):
    with rasterio.open(path) as ds:
        data = ds.read()  # (bands, rows, cols)
        le = data.astype(data.dtype.newbyteorder("<"), copy=False)
        # repr(): the shortest text that round-trips (JSON float parsers may not).
        nodata = None if ds.nodata is None else repr(float(ds.nodata))
        return {
            "path": path,
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "transform": list(ds.transform.to_gdal()),
            "crs_epsg": ds.crs.to_epsg() if ds.crs else None,
            "nodata": nodata,
            "sha256": hashlib.sha256(np.ascontiguousarray(le).tobytes()).hexdigest(),
        }


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(json.dumps(describe(p)))
