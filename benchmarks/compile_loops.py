"""Can torch.compile take a recurrence as a loop? torch's `scan` higher-order op against the
unrolled loop with a compiled step, on a GRU-like posterior recurrence of the size1m shape
(B = 16 rows, T = 64 steps, D = 512 state, a 1024-wide input), forward and backward.

    python benchmarks/compile_loops.py          # writes benchmarks/results/compile_loops.{json,md}

Each variant runs in this process after the previous one; reported: the first call (compile +
run) and the median of 5 more, or the one-line error when it does not compile. Issue 16 asked
whether the posterior loop and imagination should compile as `scan` / `while_loop` loops; this is
the measurement that answers it for the installed torch.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch._higher_order_ops.scan import scan

B, T, D, X = 16, 64, 512, 1024
OUT = Path(__file__).resolve().parent / "results"


def make_params():
    torch.manual_seed(0)
    w = (torch.randn(D + X, 3 * D) / (D + X) ** 0.5).requires_grad_()
    b = torch.zeros(3 * D, requires_grad=True)
    return w, b


def gru_step(h, x, w, b):
    """h' = u·tanh(σ(r)·c) + (1 − u)·h on gates = [h, x]·W + b: (B, D), (B, X) → (B, D)."""
    reset, cand, update = (torch.cat([h, x], -1) @ w + b).chunk(3, -1)
    u = torch.sigmoid(update - 1.0)
    return u * torch.tanh(torch.sigmoid(reset) * cand) + (1 - u) * h


def unrolled(step):
    def run(h, xs, w, b):
        outs = []
        for t in range(xs.shape[0]):
            h = step(h, xs[t], w, b)
            outs.append(h)
        return torch.stack(outs)
    return run


def scanned(h, xs, w, b):
    def combine(carry, x):
        new = gru_step(carry, x, w, b)
        return new + 0, new * 1  # scan refuses outputs that alias its carry
    return scan(combine, h, xs)[1]


def time_variant(name, fn) -> dict:
    w, b = make_params()
    h0, xs = torch.zeros(B, D), torch.randn(T, B, X)
    times = []
    try:
        for _ in range(6):
            start = time.perf_counter()
            fn(h0, xs, w, b).square().mean().backward()
            times.append(time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - the point is to report what torch says
        line = next((ln for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
        return {"variant": name, "error": f"{type(error).__name__}: {line[:200]}"}
    return {"variant": name, "first_s": times[0], "median_s": statistics.median(times[1:]),
            "grad_norm": float(w.grad.norm())}


def main() -> None:
    torch._dynamo.config.cache_size_limit = 64
    variants = [
        ("eager, unrolled", unrolled(gru_step)),
        ("compiled step (inductor), unrolled", unrolled(torch.compile(gru_step, dynamic=False))),
        ("scan, inductor", torch.compile(scanned, dynamic=False)),
        ("scan, aot_eager (no fusion)", torch.compile(scanned, dynamic=False, backend="aot_eager")),
    ]
    rows = []
    for name, fn in variants:
        torch._dynamo.reset()
        rows.append(time_variant(name, fn))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"torch": torch.__version__, "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads", "shape": {"B": B, "T": T, "D": D, "X": X}}
    OUT.mkdir(exist_ok=True)
    (OUT / "compile_loops.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# A recurrence under torch.compile: scan against the unrolled loop", "",
             f"torch {meta['torch']}, {meta['machine']}; GRU-like step, B={B}, T={T}, D={D}, input {X}; "
             "forward + backward of the whole sequence.", "",
             "| variant | first call s (compile + run) | median s | note |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | — | — | {r['error']} |")
        else:
            lines.append(f"| {r['variant']} | {r['first_s']:.2f} | {r['median_s']:.4f} | |")
    (OUT / "compile_loops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
