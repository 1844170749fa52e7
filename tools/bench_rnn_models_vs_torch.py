"""PyTorch side of crates/canopy-temporal/examples/rnn_profile.rs: samples/s of the BreizhCrops
LSTM and TransformerModel at the same settings (batch 256, T=45, 13 bands, 9 classes, f32,
2 threads), inference and training step (forward + nll_loss + backward + Adam step).

Run: ~/.cache/canopy-peers/venv/bin/python tools/bench_rnn_models_vs_torch.py [--quick] [--model lstm|transformer]
"""
import statistics
import sys
import time
import types

sys.modules.setdefault("h5py", types.ModuleType("h5py"))  # breizhcrops imports it at top level

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from breizhcrops.models import LSTM, TransformerModel  # noqa: E402

B, T, D, K = 256, 45, 13, 9


def median_ms(fn, warm, runs):
    for _ in range(warm):
        fn()
    v = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        v.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(v)


def main():
    quick = "--quick" in sys.argv
    only = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else None
    warm, runs = (1, 5) if quick else (2, 11)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    y = torch.randint(0, K, (B,))
    models = {"lstm": lambda: LSTM(input_dim=D, num_classes=K),
              "transformer": lambda: TransformerModel(input_dim=D, num_classes=K)}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {B}, T {T}, D {D}, K {K}")
    for name, make in models.items():
        if only and name != only:
            continue
        model = make()
        model.eval()

        def infer():
            with torch.inference_mode():
                model(x)
        inf = median_ms(infer, warm, runs)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
        tr = median_ms(step, warm, runs)
        print(f"{name:<12} inference {inf:8.2f} ms {B / inf * 1e3:9.1f} samples/s | "
              f"train step {tr:8.2f} ms {B / tr * 1e3:9.1f} samples/s")


if __name__ == "__main__":
    main()
