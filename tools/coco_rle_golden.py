#!/usr/bin/env python3
"""Writes crates/canopy-vector/tests/fixtures/coco_rle_golden.json: masks encoded by pycocotools.

Reference for canopy_vector::coco's RLE codec (tests/coco.rs, `rle_matches_pycocotools`).

Run (any Python 3 with numpy and pycocotools 2.0.x; the fixture was made with 2.0.11):
    python3 -m venv /tmp/coco-venv && /tmp/coco-venv/bin/pip install numpy pycocotools
    /tmp/coco-venv/bin/python tools/coco_rle_golden.py

Each case holds the mask as rows of "0"/"1", pycocotools' compressed counts string, its
uncompressed counts, area and toBbox.
"""
import importlib.metadata
import json
import pathlib

import numpy as np
import pycocotools.mask as mask_util

rng = np.random.default_rng(20261130)
masks = []
# Random blobs of several densities and shapes, plus edge cases.
for h, w, p in [(7, 5, 0.5), (16, 23, 0.2), (31, 17, 0.8), (40, 40, 0.05)]:
    masks.append(rng.random((h, w)) < p)
blob = np.zeros((50, 60), bool)
yy, xx = np.mgrid[:50, :60]
blob[(yy - 20) ** 2 + (xx - 30) ** 2 < 15 ** 2] = True
blob[(yy - 20) ** 2 + (xx - 30) ** 2 < 5 ** 2] = False  # a hole
masks.append(blob)
masks.append(np.zeros((3, 4), bool))
masks.append(np.ones((3, 4), bool))

cases = []
for m in masks:
    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    flat = m.flatten(order="F")
    counts, cur, run = [], False, 0
    for v in flat:
        if bool(v) != cur:
            counts.append(run)
            cur, run = bool(v), 0
        run += 1
    counts.append(run)
    assert (mask_util.decode(rle) == m).all()
    cases.append({
        "mask": ["".join("1" if v else "0" for v in row) for row in m],
        "size": [int(s) for s in rle["size"]],
        "counts": rle["counts"].decode("ascii"),
        "uncompressed": counts,
        "area": float(mask_util.area(rle)),
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
    })

out = pathlib.Path(__file__).resolve().parent.parent / "crates/canopy-vector/tests/fixtures/coco_rle_golden.json"
out.write_text(json.dumps({"pycocotools": importlib.metadata.version("pycocotools"), "cases": cases}, indent=1) + "\n")
print(f"wrote {len(cases)} cases to {out}")
