"""Golden fixtures for canopy-train's metrics, computed by scikit-learn.

Run with the peer environment (../shared/peers/setup.sh):
    ~/.cache/canopy-peers/venv/bin/python tools/golden/train_metrics.py
Writes crates/canopy-train/tests/fixtures/train_metrics.safetensors. For every case NAME:
NAME.truth and NAME.pred (int64 labels; 255 marks pixels to ignore in cases whose name contains
"ignore"), NAME.k (the class count), and scikit-learn's results on the pixels that are not
ignored, with labels=range(K) and zero_division=0: NAME.cm (confusion_matrix, int64),
NAME.accuracy, NAME.kappa, NAME.precision, NAME.recall, NAME.f1, NAME.support,
NAME.jaccard (per class), NAME.macro_f1, NAME.weighted_f1, NAME.mean_jaccard (float64).
Pinned: scikit-learn 1.9.1, numpy, torch 2.15.0 and safetensors 0.8 for writing.
"""
import os

import numpy as np
import sklearn
import torch
from safetensors.torch import save_file
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             jaccard_score, precision_recall_fscore_support)

rng = np.random.default_rng(0)
IGNORE = 255
out = {}


def case(name, k, truth, pred):
    labels = list(range(k))
    keep = truth != IGNORE
    t, p = truth[keep], pred[keep]
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    values = {
        "cm": torch.from_numpy(confusion_matrix(t, p, labels=labels).astype(np.int64)),
        "accuracy": accuracy_score(t, p),
        "kappa": cohen_kappa_score(t, p, labels=labels),
        "precision": prec, "recall": rec, "f1": f1, "support": sup.astype(np.float64),
        "jaccard": jaccard_score(t, p, labels=labels, average=None, zero_division=0),
        "macro_f1": f1_score(t, p, labels=labels, average="macro", zero_division=0),
        "weighted_f1": f1_score(t, p, labels=labels, average="weighted", zero_division=0),
        "mean_jaccard": jaccard_score(t, p, labels=labels, average="macro", zero_division=0),
    }
    for key, v in values.items():
        out[f"{name}.{key}"] = v if isinstance(v, torch.Tensor) else torch.tensor(np.asarray(v, dtype=np.float64))
    out[f"{name}.truth"] = torch.from_numpy(truth.astype(np.int64))
    out[f"{name}.pred"] = torch.from_numpy(pred.astype(np.int64))
    out[f"{name}.k"] = torch.tensor(k, dtype=torch.int64)


def noisy(k, n, acc):
    """Random truth, and predictions that agree with it with probability `acc`."""
    truth = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < acc, truth, rng.integers(0, k, n))
    return truth, pred


case("binary", 2, *noisy(2, 500, 0.8))
case("k3", 3, *noisy(3, 300, 0.6))
case("k5_skewed", 5, rng.choice(5, 800, p=[0.6, 0.2, 0.1, 0.07, 0.03]),
     rng.choice(5, 800, p=[0.5, 0.3, 0.1, 0.05, 0.05]))
t, p = noisy(7, 400, 0.5)
t[t == 6] = 0          # class 6 never occurs in the truth...
p[p == 5] = 1          # ...class 5 is never predicted
p[p == 6] = 2          # and class 6 is absent from both: every zero-division branch is hit
case("k7_missing_classes", 7, t, p)
t, p = noisy(4, 600, 0.7)
t[rng.random(600) < 0.15] = IGNORE
case("k4_ignore", 4, t, p)

path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "canopy-train", "tests", "fixtures",
                    "train_metrics.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path, metadata={"sklearn": sklearn.__version__, "script": "tools/golden/train_metrics.py"})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (scikit-learn {sklearn.__version__})")
