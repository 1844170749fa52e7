#!/usr/bin/env python3
"""canopy-raster vs rasterio (GDAL) GeoTIFF I/O, side by side in one run.

Run with the peer venv (numpy + rasterio, nothing else):

    ~/.cache/canopy-peers/venv/bin/python tools/bench_raster_vs_rasterio.py [--quick] [--label NAME]

What it does (same data, same files, same machine, runs of the two tools interleaved so
machine noise hits both):
  1. generates the 8192x8192x4 uint16 field of ../shared/peers/bench_rasterio.py (4096 with
     --quick) and dumps it raw (little-endian) for canopy;
  2. builds crates/canopy-raster/examples/geotiff_io_bench.rs in release;
  3. writes: rasterio writes tiled 256 Deflate and striped raw files from the numpy array,
     canopy writes the same samples (read from the raw dump, untimed) with the same options;
     both decoded back and checksummed against the source;
  4. full reads of the rasterio-written files (re-opened each run, warm page cache), rasterio
     with GDAL defaults (1 thread) and with GDAL_NUM_THREADS=ALL_CPUS, canopy default;
     SHA-256 of canopy's decoded samples == SHA-256 of rasterio's;
  5. 512x512 windowed reads (all bands), tile-aligned (shuffled grid) and random offsets,
     the windows of the peer script (numpy seed 1), GDAL_CACHEMAX=8MB as there; each window
     timed; checksums of all windows compared;
  6. prints medians and the canopy/rasterio throughput ratio, and writes them between
     markers in docs/benchmarks.md.

MB = 10^6 bytes of decoded pixels. Canopy's writer fsyncs the file before renaming it into
place (atomic write); rasterio does not, so the fsync of the rasterio file is timed
separately and reported both ways.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANDS, WIN = 4, 512


def make_data(n):
    """The peer script's field (../shared/peers/bench_rasterio.py make_data), size n."""
    rng = np.random.default_rng(0)
    yy = np.arange(n, dtype=np.float32)[:, None]
    xx = np.arange(n, dtype=np.float32)[None, :]
    arr = np.empty((BANDS, n, n), dtype=np.uint16)
    for b in range(BANDS):
        f = (np.sin(xx / (180.0 + 40 * b)) * np.cos(yy / (230.0 + 25 * b))
             + 0.5 * np.sin((xx + yy) / (57.0 + 11 * b)))
        band = 3000.0 + 1500.0 * b + 1200.0 * f
        band += rng.integers(0, 64, size=(n, n), dtype=np.uint16)
        arr[b] = np.clip(band, 0, 65535).astype(np.uint16)
    return arr


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<u2").tobytes()).hexdigest()


def stats(xs):
    a = np.asarray(xs, dtype=float)
    return dict(median=float(np.median(a)), q1=float(np.percentile(a, 25)),
                q3=float(np.percentile(a, 75)), min=float(a.min()), n=len(a))


def canopy(binary, *args):
    out = subprocess.run([binary, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_windows(n):
    """The peer script's windows: tile-aligned cells in a shuffled order, then 400 random
    offsets, from numpy's default_rng(1)."""
    rng = np.random.default_rng(1)
    cells = [(r, c) for r in range(0, n, WIN) for c in range(0, n, WIN)]
    order = rng.permutation(len(cells))
    aligned = [(cells[i][1], cells[i][0]) for i in order]
    offs = rng.integers(0, n - WIN, size=(400, 2))
    random = [(int(c), int(r)) for r, c in offs]
    return {"tile-aligned": aligned, "random offset": random}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4096x4096 and fewer rounds")
    ap.add_argument("--size", type=int, help="image side (default 8192, 4096 with --quick)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per measurement")
    ap.add_argument("--workdir", default=os.path.join(
        os.environ.get("PEERS_HOME", os.path.expanduser("~/.cache/canopy-peers")), "data", "canopy_vs_rasterio"))
    ap.add_argument("--label", default="latest", help="name of the block in docs/benchmarks.md")
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of write,read,window to skip")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    args = ap.parse_args()
    n = args.size or (4096 if args.quick else 8192)
    rounds = args.rounds or (3 if args.quick else 5)
    skip = set(filter(None, args.skip.split(",")))
    nbytes = BANDS * n * n * 2
    os.makedirs(args.workdir, exist_ok=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "examples", "geotiff_io_bench")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "canopy-raster", "--example",
                        "geotiff_io_bench"], check=True, cwd=ROOT)
    started = datetime.datetime.now(datetime.timezone.utc)
    loads = [os.getloadavg()]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    print(f"rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}; canopy {commit}"
          f"{' (+uncommitted changes)' if dirty else ''}; {n}x{n}x{BANDS} uint16; {rounds} rounds")
    t0 = time.perf_counter()
    arr = make_data(n)
    src_sha = sha(arr)
    raw = os.path.join(args.workdir, f"samples_{n}.u16")
    arr.astype("<u2").tofile(raw)
    print(f"generated data in {time.perf_counter() - t0:.1f} s")

    profile = dict(driver="GTiff", width=n, height=n, count=BANDS, dtype="uint16",
                   crs="EPSG:32630", transform=from_origin(300000, 5400000, 10, 10))
    variants = {
        "tiled256_deflate": (dict(tiled=True, blockxsize=256, blockysize=256, compress="deflate"),
                             ["--layout", "tiled256", "--compress", "deflate"]),
        "striped_raw": (dict(tiled=False, compress=None), ["--layout", "striped", "--compress", "none"]),
    }
    rows = []  # (measure, variant, rasterio stats, canopy stats, unit, note)
    checks = []
    sizes = {}

    def add(measure, variant, r, c, note=""):
        rows.append(dict(measure=measure, variant=variant, rasterio=stats(r), canopy=stats(c), note=note))
        rs, cs = rows[-1]["rasterio"], rows[-1]["canopy"]
        print(f"  {measure:<34} {variant:<17} rasterio {rs['median']*1e3:9.2f} ms  canopy "
              f"{cs['median']*1e3:9.2f} ms  ratio {rs['median']/cs['median']:5.2f}x", flush=True)

    paths = {}
    for name, (opts, copts) in variants.items():
        path = os.path.join(args.workdir, f"rio_{name}_{n}.tif")
        paths[name] = path
        cpath = os.path.join(args.workdir, f"canopy_{name}_{n}.tif")
        r_w, r_wf, c_w = [], [], []
        for i in range(1 if "write" in skip else rounds):
            t = time.perf_counter()
            with rasterio.open(path, "w", **profile, **opts) as dst:
                dst.write(arr)
            r_w.append(time.perf_counter() - t)
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            r_wf.append(time.perf_counter() - t)
            if "write" in skip:
                break
            c = canopy(binary, "write", cpath, "--from", raw, "--bands", BANDS, "--height", n,
                       "--width", n, *copts)
            c_w.extend(c["seconds"])
            loads.append(os.getloadavg())
        sizes[name] = (os.path.getsize(path), os.path.getsize(cpath) if os.path.exists(cpath) else None)
        if "write" not in skip:
            add("write", name, r_w, c_w, "canopy fsyncs; rasterio not")
            add("write (rasterio + fsync)", name, r_wf, c_w)
            with rasterio.open(cpath) as src:
                ok = sha(src.read()) == src_sha
            checks.append((f"rasterio reads canopy's {name} file == source", ok))
        with rasterio.open(path) as src:
            ok = sha(src.read()) == src_sha
        checks.append((f"rasterio reads its own {name} file == source", ok))

    del arr
    if "read" not in skip:
        for name, path in paths.items():
            r, rmt, c = [], [], []
            for i in range(rounds + 1):  # first round is a warm-up for both
                t = time.perf_counter()
                with rasterio.open(path) as src:
                    a = src.read()
                dt = time.perf_counter() - t
                if i == 0:
                    ok = sha(a) == src_sha
                    checks.append((f"rasterio full read {name} == source", ok))
                del a
                with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                    t = time.perf_counter()
                    with rasterio.open(path) as src:
                        src.read()
                    dtm = time.perf_counter() - t
                cj = canopy(binary, "read-full", path, *(["--checksum"] if i == 0 else []))
                if i == 0:
                    checks.append((f"canopy full read {name} sha256 == rasterio's", cj["sha256"] == src_sha))
                    continue
                r.append(dt)
                rmt.append(dtm)
                c.extend(cj["seconds"])
                loads.append(os.getloadavg())
            add("full read", name, r, c, "GDAL 1 thread (default)")
            add("full read (GDAL_NUM_THREADS=ALL_CPUS)", name, rmt, c)

    if "window" not in skip:
        wins = peer_windows(n)
        per_round = 16
        for name, path in paths.items():
            for mode, ws in wins.items():
                ws = [(c, r) for c, r in ws]
                r_t, c_t = [], []
                wfile = os.path.join(args.workdir, "windows.txt")
                with rasterio.Env(GDAL_CACHEMAX=8 * 1024 * 1024), rasterio.open(path) as src:
                    for i in range(rounds + 1):
                        batch = [ws[(i * per_round + k) % len(ws)] for k in range(per_round)]
                        h = hashlib.sha256()
                        times = []
                        for (c0, r0) in batch:
                            t = time.perf_counter()
                            a = src.read(window=Window(c0, r0, WIN, WIN))
                            times.append(time.perf_counter() - t)
                            h.update(np.ascontiguousarray(a, dtype="<u2").tobytes())
                        with open(wfile, "w") as f:
                            f.writelines(f"{c0} {r0} {WIN} {WIN}\n" for c0, r0 in batch)
                        cj = canopy(binary, "read-windows", path, "--windows", wfile, "--checksum")
                        if cj["sha256"] != h.hexdigest():
                            checks.append((f"windows {name} {mode} round {i}: canopy == rasterio", False))
                        if i == 0:
                            checks.append((f"canopy {per_round} windows {name} {mode} == rasterio's", cj["sha256"] == h.hexdigest()))
                            continue
                        r_t.extend(times)
                        c_t.extend(cj["seconds"])
                        loads.append(os.getloadavg())
                add(f"512x512 window, {mode}", name, r_t, c_t, "GDAL_CACHEMAX=8MB")

    ended = datetime.datetime.now(datetime.timezone.utc)
    loads.append(os.getloadavg())
    print("\nchecks:")
    for what, ok in checks:
        print(f"  {'OK  ' if ok else 'FAIL'} {what}")
    print("file sizes: " + ", ".join(f"{k}: rasterio {a/1e6:.1f} MB, canopy {b/1e6:.1f} MB" if b else f"{k}: rasterio {a/1e6:.1f} MB" for k, (a, b) in sizes.items()))

    # markdown block
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    l1 = [l[0] for l in loads]
    md = [f"### {args.label}: {n}x{n}x{BANDS} uint16, {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC",
          "",
          f"canopy `{commit}`{' + uncommitted changes' if dirty else ''}; rasterio {rasterio.__version__} / GDAL {rasterio.__gdal_version__}; "
          f"{os.cpu_count()} CPUs ({cpu}); {rounds} interleaved rounds; 1-min load average during the run "
          f"{min(l1):.2f}-{max(l1):.2f} (median {float(np.median(l1)):.2f}).",
          "",
          f"Command: `{os.path.relpath(sys.executable, os.path.expanduser('~')) if sys.executable.startswith(os.path.expanduser('~')) else sys.executable} "
          f"tools/bench_raster_vs_rasterio.py {' '.join(sys.argv[1:])}`".replace("`.cache", "`~/.cache"),
          "",
          "| measure | file | rasterio median | canopy median | canopy / rasterio throughput | rasterio IQR | canopy IQR | note |",
          "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rs, cs = row["rasterio"], row["canopy"]
        if row["measure"].startswith("512"):
            fmt = lambda s: f"{s['median']*1e3:.2f} ms ({BANDS*WIN*WIN*2/1e6/s['median']:.0f} MB/s)"
            iqr = lambda s: f"{s['q1']*1e3:.2f}-{s['q3']*1e3:.2f} ms, n={s['n']}"
        else:
            fmt = lambda s: f"{s['median']:.3f} s ({nbytes/1e6/s['median']:.0f} MB/s)"
            iqr = lambda s: f"{s['q1']:.3f}-{s['q3']:.3f} s, n={s['n']}"
        md.append(f"| {row['measure']} | {row['variant']} | {fmt(rs)} | {fmt(cs)} | **{rs['median']/cs['median']:.2f}x** | {iqr(rs)} | {iqr(cs)} | {row['note']} |")
    md.append("")
    md.append("File sizes: " + "; ".join(
        f"{k}: rasterio {a/1e6:.1f} MB" + (f", canopy {b/1e6:.1f} MB ({b/a:.3f}x)" if b else "")
        for k, (a, b) in sizes.items()) + ".")
    md.append("")
    md.append("Checks: " + "; ".join(f"{w}: {'ok' if ok else 'FAILED'}" for w, ok in checks) + ".")
    block = "\n".join(md)
    begin, end = f"<!-- BEGIN {args.label} -->", f"<!-- END {args.label} -->"
    text = open(args.md).read() if os.path.exists(args.md) else "# Benchmarks\n"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        post = rest.split(end, 1)[1]
        text = f"{pre}{begin}\n{block}\n{end}{post}"
    else:
        text = text.rstrip("\n") + f"\n\n{begin}\n{block}\n{end}\n"
    with open(args.md, "w") as f:
        f.write(text)
    print(f"\nwrote block '{args.label}' to {args.md}")
    if not args.keep:
        for name in paths:
            for p in (paths[name], os.path.join(args.workdir, f"canopy_{name}_{n}.tif")):
                if os.path.exists(p):
                    os.remove(p)
        os.remove(raw)
    if not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
