"""Compares two sets of training runs seed by seed: mean and spread of accuracy and kappa per
model (and variant), the difference of the means, and whether it is larger than the
seed-to-seed spread explains (Welch's t-test and the Mann-Whitney U test, two-sided).

    ~/.cache/canopy-peers/venv/bin/python tools/seed_compare.py \
        --a canopy.json [--a runs/trace] --b torch.json [--b torch.log] [--label-a canopy] [--label-b PyTorch]

Each --a / --b names one input, any number of times; inputs of one side are pooled:
- a JSON document with a `results` list (`examples/ucr_crop.rs --json F`,
  `tools/sits_reference_train.py ... --json F`);
- a log with one JSON object per line (what `tools/sits_reference_train.py` prints; lines that
  are not JSON objects are skipped);
- a canopy trace JSON (`examples/ucr_crop.rs --trace DIR` writes `DIR/{model}-seed{S}.json`,
  read through `final_accuracy` / `final_kappa`), or a directory of them.
A run is keyed by (model, variant, seed); the same key twice on one side is an error (a run
counted twice would shrink the spread). Standard deviations are the population ones, as the
examples print them. The tests need scipy (in the peer environment: scikit-learn depends on it).
"""
import argparse
import glob
import json
import math
import os
import sys


def runs_of(path):
    """The runs in one input file or trace directory, as dicts with model, variant, seed,
    accuracy, kappa."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*-seed*.json")))
        if not files:
            sys.exit(f"{path}: no trace JSON (*-seed*.json) in this directory")
        return [r for f in files for r in runs_of(f)]
    try:
        text = open(path).read()
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    try:
        doc = json.loads(text)
        docs = doc["results"] if isinstance(doc, dict) and "results" in doc else [doc]
    except json.JSONDecodeError:
        docs = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    runs = []
    for d in docs:
        if not isinstance(d, dict) or "model" not in d or "seed" not in d:
            continue
        acc = d.get("accuracy", d.get("final_accuracy"))
        kappa = d.get("kappa", d.get("final_kappa"))
        if acc is None:
            continue
        runs.append(dict(model=d["model"], variant=d.get("variant", "-"), seed=int(d["seed"]),
                         accuracy=float(acc), kappa=float(kappa) if kappa is not None else math.nan,
                         source=path))
    if not runs:
        sys.exit(f"{path}: no runs found (expected results with model, seed and accuracy)")
    return runs


def side(paths, label):
    """All runs of one side, keyed by (model, variant, seed)."""
    out = {}
    for p in paths:
        for r in runs_of(p):
            key = (r["model"], r["variant"], r["seed"])
            if key in out:
                sys.exit(f"{label}: {key[0]} ({key[1]}) seed {key[2]} appears twice "
                         f"({out[key]['source']} and {r['source']})")
            out[key] = r
    return out


def mean_std(v):
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / len(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", action="append", required=True, help="input of side A (repeatable)")
    ap.add_argument("--b", action="append", required=True, help="input of side B (repeatable)")
    ap.add_argument("--label-a", default="canopy")
    ap.add_argument("--label-b", default="PyTorch")
    args = ap.parse_args()
    try:
        from scipy import stats
    except ImportError:
        sys.exit("scipy is needed for the tests (use the peer environment, ../shared/peers/setup.sh)")
    a, b = side(args.a, args.label_a), side(args.b, args.label_b)
    groups = sorted({k[:2] for k in a} | {k[:2] for k in b})
    print(f"| model | variant | metric | {args.label_a} (n) | {args.label_b} (n) | "
          "Δ (points) | Welch p | Mann-Whitney p |")
    print("|---|---|---|---|---|---|---|---|")
    for g in groups:
        ra = [r for k, r in sorted(a.items()) if k[:2] == g]
        rb = [r for k, r in sorted(b.items()) if k[:2] == g]
        for metric in ("accuracy", "kappa"):
            va = [r[metric] for r in ra if not math.isnan(r[metric])]
            vb = [r[metric] for r in rb if not math.isnan(r[metric])]
            cell = lambda v: "{:.4f} ± {:.4f} ({})".format(*mean_std(v), len(v)) if v else "- (0)"
            if len(va) >= 2 and len(vb) >= 2:
                delta = 100 * (mean_std(va)[0] - mean_std(vb)[0])
                welch = stats.ttest_ind(va, vb, equal_var=False).pvalue
                mwu = stats.mannwhitneyu(va, vb, alternative="two-sided").pvalue
                tail = f"{delta:+.2f} | {welch:.3f} | {mwu:.3f}"
            else:
                tail = "- | - | -"  # a test needs two runs per side
            print(f"| {g[0]} | {g[1]} | {metric} | {cell(va)} | {cell(vb)} | {tail} |")
    for label, s in ((args.label_a, a), (args.label_b, b)):
        for g in groups:
            seeds = sorted(k[2] for k in s if k[:2] == g)
            accs = ", ".join(f"{s[(*g, x)]['accuracy']:.4f}" for x in seeds)
            print(f"{label} {g[0]} ({g[1]}) seeds {seeds}: {accs}")


if __name__ == "__main__":
    main()
