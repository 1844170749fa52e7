"""Reference values for the shape-metric tests of canopy-vector (crates/canopy-vector/tests/metrics.rs).

Run with the peer environment (shapely 2, numpy), from the repository root:
    ~/.cache/canopy-peers/venv/bin/python tools/metrics_reference.py

Prints, for the polygon pairs used in the tests:
- the maximum tangent angle error (degrees) of Girard et al. 2021, computed by a line-for-line
  port of `compute_contour_measure` / `_sample_linestring` / `project_onto_geometry` from
  lydorn_utils/polygon_utils.py (https://github.com/Lydorn/lydorn_utils), with shapely's
  `nearest_points` for the projection, max_stretch 2, sampling spacing 1 and 2 px;
- PoLiS as defined in Avbelj et al. 2015 (1/(2q) and 1/(2r) normalisation), with shapely's
  point-to-boundary distance.
The test asserts the Rust implementation agrees with these numbers (the tangent-angle values of
slightly rotated squares are dominated by corner effects of the reference's projection, which is
why they are far from the rotation angle).
"""
import numpy as np
import shapely.affinity
import shapely.geometry as geom
import shapely.ops


def sample_linestring(coords, spacing):
    coords = np.asarray(coords)
    xs, ys = [], []
    for i in range(len(coords) - 1):
        start, end = coords[i], coords[i + 1]
        num = max(1, int(round(np.linalg.norm(end - start) / spacing))) + 1
        x = np.linspace(start[0], end[0], num)
        y = np.linspace(start[1], end[1], num)
        if i > 0:
            x, y = x[1:], y[1:]
        xs.append(x)
        ys.append(y)
    return np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1)


def max_tangent_angle_deg(pred, truth, spacing, max_stretch=2.0):
    truth_contours = geom.GeometryCollection([truth.exterior, *truth.interiors])
    per_contour = []
    for ring in [pred.exterior, *pred.interiors]:
        samples = sample_linestring(ring.coords, spacing)
        projected = np.array(
            [shapely.ops.nearest_points(geom.Point(p), truth_contours)[1].coords[0] for p in samples]
        )
        e = samples[1:] - samples[:-1]
        f = projected[1:] - projected[:-1]
        ne = np.linalg.norm(e, axis=1)
        nf = np.linalg.norm(f, axis=1)
        keep = 0 < ne * nf
        e, f, ne, nf = e[keep], f[keep], ne[keep], nf[keep]
        stretch = ne / nf
        keep = np.logical_and(1 / max_stretch < stretch, stretch < max_stretch)
        if not keep.any():
            continue
        e, f, ne, nf = e[keep], f[keep], ne[keep], nf[keep]
        per_contour.append(np.abs(np.sum(e * f, axis=1) / (ne * nf)).min())
    return float(np.degrees(np.arccos(min(per_contour)))) if per_contour else None


def polis(a, b):
    def side(p, q):
        vertices = [c for ring in [p.exterior, *p.interiors] for c in ring.coords[:-1]]
        boundary = q.boundary
        return sum(boundary.distance(geom.Point(v)) for v in vertices) / (2 * len(vertices))

    return side(a, b) + side(b, a)


def square(x0, y0, side):
    return geom.Polygon([(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)])


def main():
    for side, degrees in [(20, 5), (30, 2), (30, 10), (30, 20)]:
        truth = square(0, 0, side)
        pred = shapely.affinity.rotate(truth, degrees, origin="centroid")
        print(
            f"rotated square side {side}, {degrees} deg: max tangent angle "
            f"spacing 1: {max_tangent_angle_deg(pred, truth, 1.0)!r}, "
            f"spacing 2: {max_tangent_angle_deg(pred, truth, 2.0)!r}; "
            f"PoLiS {polis(pred, truth)!r}"
        )
    octagon = geom.Polygon([(2, 0), (8, 0), (10, 2), (10, 8), (8, 10), (2, 10), (0, 8), (0, 2)])
    print(f"octagon vs square 10: max tangent angle {max_tangent_angle_deg(octagon, square(0, 0, 10), 1.0)!r}, "
          f"PoLiS {polis(octagon, square(0, 0, 10))!r}")
    print(f"square 10 shifted (1, 1): PoLiS {polis(square(0, 0, 10), square(1, 1, 10))!r}")


if __name__ == "__main__":
    main()
