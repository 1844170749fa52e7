#!/usr/bin/env python3
"""Writes crates/canopy-vector/tests/fixtures/contour_skimage_golden.json: vertices of
skimage.measure.find_contours on a small seeded map.

Reference for canopy_vector::contour (tests/contour.rs, `vertices_match_skimage`). Vertex
positions do not depend on saddle resolution, so the test compares vertex sets: every skimage
vertex (row, col) must be one of ours at (col + 0.5, row + 0.5) and vice versa. The map is
below the level along its border, so no contour is open in skimage.

Run (any Python 3 with numpy and scikit-image; the fixture was made with scikit-image 0.26.0):
    python3 -m venv /tmp/sk-venv && /tmp/sk-venv/bin/pip install numpy scikit-image
    /tmp/sk-venv/bin/python tools/contour_skimage_golden.py
"""
import importlib.metadata
import json
import pathlib

import numpy as np
from skimage.measure import find_contours

rng = np.random.default_rng(20261130)
h, w = 24, 32
yy, xx = np.mgrid[:h, :w] + 0.5
m = np.zeros((h, w))
# A sum of random Gaussian bumps: blobs, a ring-like merge and saddles.
for _ in range(14):
    cy, cx = rng.uniform(4, h - 4), rng.uniform(4, w - 4)
    s = rng.uniform(1.0, 2.5)
    m += rng.uniform(0.6, 1.2) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
m = m.astype(np.float32)
level = 0.45
assert m[0].max() < level and m[-1].max() < level and m[:, 0].max() < level and m[:, -1].max() < level
contours = find_contours(m.astype(np.float64), level)
assert all((c[0] == c[-1]).all() for c in contours), "an open contour"
out = pathlib.Path(__file__).resolve().parent.parent / "crates/canopy-vector/tests/fixtures/contour_skimage_golden.json"
out.write_text(json.dumps({
    "scikit-image": importlib.metadata.version("scikit-image"),
    "level": level,
    "shape": [h, w],
    "map": [float(v) for v in m.ravel()],
    # (row, col) vertices, closing vertex dropped
    "contours": [[[float(r), float(c)] for r, c in ct[:-1]] for ct in contours],
}) + "\n")
print(f"wrote {len(contours)} contours, {sum(len(c) - 1 for c in contours)} vertices to {out}")
