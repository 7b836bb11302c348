"""Benchmark of dualtype's orthogonalization kernels against torch's Muon Newton–Schulz and SVD.

For every shape, all variants (method × working dtype, torch's
``torch.optim._muon._zeropower_via_newtonschulz``, ``torch.linalg.svd``, and a plain matmul of
the same sizes) are timed in interleaved rounds so they share the machine's noise; the table
reports medians, the time relative to torch's Muon NS (also as a ratio of the fastest
rounds, "(min)", which is less sensitive to other processes on a shared machine), achieved GFLOP/s as a fraction of the
plain matmul (``X Xᵀ``, r×k·k×r, same dtype) measured in the same run, the relative Frobenius
error to the exact ``UVᵀ`` (float64 SVD) and the range of the output's singular values.

    python benchmarks/bench_orthogonalize.py                 # full table (several minutes)
    python benchmarks/bench_orthogonalize.py --quick         # two shapes, 3 rounds
    python benchmarks/bench_orthogonalize.py --shapes 4096x1024 --reps 9
    python benchmarks/bench_orthogonalize.py --contract      # accuracy contract table

Inputs are float32 Gaussian matrices (seed 0); ``dtype`` is the kernel's working dtype.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
from torch.optim._muon import _zeropower_via_newtonschulz

from dualtype.kernels import (
    AUTO_SEGMENTS_BF16,
    GRAM_ASPECT,
    PE_STEPS,
    orthogonalize,
    orthogonalize_svd,
)

SHAPES = ["256x256", "512x2048", "1024x1024", "1024x4096", "4096x1024", "16x256x256", "4x768x3072"]
QUICK_SHAPES = ["1024x1024", "4096x1024"]
METHODS = ["auto", "auto@4", "polar_express", "gram", "quintic", "cubic"]
# "name@T": T steps with a schedule designed for lower = FAST_LOWER[T] (fewer steps, tuned for
# well-conditioned input; see orthogonalize.md for what it costs on ill-conditioned input).
FAST_LOWER = {3: 0.05, 4: 0.01}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MUON = (3.4445, -4.7750, 2.0315)


def parse_shape(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.lower().split("x"))


def torch_muon_ns(G: torch.Tensor) -> torch.Tensor:
    """torch's own kernel (2-D only; bf16 inside): loop over a batch."""
    if G.ndim == 2:
        return _zeropower_via_newtonschulz(G, MUON, 5, 1e-7)
    flat = G.reshape(-1, *G.shape[-2:])
    return torch.stack([_zeropower_via_newtonschulz(g, MUON, 5, 1e-7) for g in flat]).reshape(
        G.shape
    )


def torch_svd(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ Vh


def flops(shape: tuple[int, ...], variant: str) -> float | None:
    """Nominal flops: big product r×k·k×r (or r×r·r×k) = 2r²k, small r×r·r×r = 2r³."""
    m, n = shape[-2:]
    B = math.prod(shape[:-2])
    r, k = min(m, n), max(m, n)
    big, small = 2.0 * r * r * k, 2.0 * r**3
    name, dtype = variant.split("/")
    method, _, st = name.partition("@")
    T = int(st) if st else (5 if method in ("quintic", "torch_muon_ns") else PE_STEPS)
    segments = [1] * T
    if method == "auto":
        method = "polar_express"
        if k >= GRAM_ASPECT * r:
            if dtype == "fp32":
                method = "gram"
            elif T == sum(AUTO_SEGMENTS_BF16):
                segments = list(AUTO_SEGMENTS_BF16)
            elif T > 1:
                segments = [2, T - 2] if T > 3 else [1, T - 1]
    if method in ("polar_express", "quintic", "torch_muon_ns"):
        # A segment of L steps in Gram space: 2 big + (4L − 3) small (L = 1: a standard step).
        return B * sum(2 * big + (4 * L - 3) * small for L in segments)
    if method == "gram":
        return B * (2 * big + (4 * T - 3) * small)
    if method == "matmul":
        return B * big
    return None  # svd, cubic (data-dependent step count)


def median_time(fn, G) -> float:
    t0 = time.perf_counter()
    fn(G)
    return time.perf_counter() - t0


def accuracy(O: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    O = O.double()
    err = (torch.linalg.vector_norm(O - ref) / torch.linalg.vector_norm(ref)).item()
    sv = torch.linalg.svdvals(O)
    return err, sv.min().item(), sv.max().item()


def variants(methods, dtypes, with_svd: bool):
    out = {}
    for d in dtypes:
        for m in methods:
            method, _, st = m.partition("@")
            kw = {"steps": int(st), "lower": FAST_LOWER[int(st)]} if st else {}
            out[f"{m}/{d}"] = (
                lambda G, method=method, d=d, kw=kw: orthogonalize(G, method, dtype=DTYPES[d], **kw)
            )
    out["torch_muon_ns/bf16"] = torch_muon_ns
    if with_svd:
        out["torch_svd/fp32"] = torch_svd
    cast = {}  # the reference matmul gets its operand already in the dtype (cast untimed);
    # variants() is called once per shape, so this cache lives for one shape only

    def matmul(G, d):
        key = (id(G), tuple(G.shape), d)
        if key not in cast:
            cast[key] = G.to(DTYPES[d]) if G.shape[-2] <= G.shape[-1] else G.to(DTYPES[d]).mT
        X = cast[key]
        return torch.matmul(X, X.mT)  # r×k · k×r, the big product of every step

    for d in dtypes:
        out[f"matmul/{d}"] = (lambda G, d=d: matmul(G, d))
    return out


def bench_shape(shape, methods, dtypes, reps, with_svd, cubic_max_elems):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    ref = orthogonalize_svd(G.double())
    vs = variants(methods, dtypes, with_svd)
    if math.prod(shape) > cubic_max_elems:
        vs = {k: v for k, v in vs.items() if not k.startswith("cubic")}
    acc = {}
    for name, fn in vs.items():  # warm-up, and accuracy outside the timed region
        O = fn(G)
        if not name.startswith("matmul"):
            acc[name] = accuracy(O, ref)
    times = {name: [] for name in vs}
    if math.prod(shape) <= 1 << 20:  # small inputs: more rounds, their times are noisier
        reps *= 3
    for _ in range(reps):  # interleaved rounds: every variant once per round
        for name, fn in vs.items():
            times[name].append(median_time(fn, G))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    rows = []
    base = med["torch_muon_ns/bf16"]
    for name in vs:
        if name.startswith("matmul"):
            continue
        f = flops(shape, name)
        d = name.split("/")[1]
        mm = med.get(f"matmul/{d}")
        gflops = f / med[name] / 1e9 if f else None
        frac = (f / med[name]) / (flops(shape, f"matmul/{d}") / mm) if (f and mm) else None
        err, lo, hi = acc[name]
        rows.append((name, med[name], med[name] / base, best[name] / best["torch_muon_ns/bf16"],
                     gflops, frac, err, lo, hi))
    for d in dtypes:
        f = flops(shape, f"matmul/{d}")
        rows.append((f"matmul/{d}", med[f"matmul/{d}"], None, None, f / med[f"matmul/{d}"] / 1e9,
                     1.0, None, None, None))
    return rows


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=None, help="e.g. 4096x1024 16x256x256")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--quick", action="store_true", help="two shapes, 3 rounds, no SVD")
    p.add_argument("--no-svd", action="store_true")
    p.add_argument("--cubic-max-elems", type=int, default=1 << 21,
                   help="skip cubic on larger inputs (it runs up to 40 steps)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--contract", action="store_true", help="print the accuracy contract table")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.contract:
        return contract_table(a.dtypes)
    shapes = a.shapes or (QUICK_SHAPES if a.quick else SHAPES)
    reps = 3 if a.quick and a.reps == 5 else a.reps
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?") if os.path.exists("/proc/cpuinfo") else "?"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu}), threads "
          f"{torch.get_num_threads()}, rounds {reps}, load average at start "
          f"{os.getloadavg()[0]:.1f}")
    hdr = (f"{'shape':>12} {'variant':>20} {'median ms':>10} {'×torchNS':>8} {'(min)':>6} "
           f"{'GFLOP/s':>8} "
           f"{'×matmul':>7} {'rel err':>8} {'σ min':>7} {'σ max':>7}")
    print(hdr)
    print("-" * len(hdr))
    for s in shapes:
        rows = bench_shape(parse_shape(s), a.methods, a.dtypes, reps, not (a.quick or a.no_svd),
                           a.cubic_max_elems)
        for name, t, rel, relmin, gf, frac, err, lo, hi in rows:
            print(f"{s:>12} {name:>20} {t * 1e3:>10.1f} {fmt(rel, '8.2f')} {fmt(relmin, '6.2f')} "
                  f"{fmt(gf, '8.1f')} "
                  f"{fmt(frac, '7.2f')} {fmt(err, '8.4f')} {fmt(lo, '7.3f')} {fmt(hi, '7.3f')}")
        print(flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


# ----------------------------------------------------------------------------- contract


def power_law(m: int, n: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """σ_i ∝ i^-alpha with Haar-random singular vectors (float64)."""
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=gen))
    s = torch.arange(1, k + 1, dtype=torch.float64) ** -alpha
    return (U * s) @ V.mT


CONTRACT_CASES = {
    "gauss 256x256": lambda g: torch.randn(256, 256, dtype=torch.float64, generator=g),
    "gauss 1024x256": lambda g: torch.randn(1024, 256, dtype=torch.float64, generator=g),
    "gauss 512x2048": lambda g: torch.randn(512, 2048, dtype=torch.float64, generator=g),
    "power a=0.5 512x1024": lambda g: power_law(512, 1024, 0.5, g),
    "power a=1 512x1024": lambda g: power_law(512, 1024, 1.0, g),
    "power a=2 256x512": lambda g: power_law(256, 512, 2.0, g),
    "rank 16 of 256x512": lambda g: torch.randn(256, 16, dtype=torch.float64, generator=g)
    @ torch.randn(16, 512, dtype=torch.float64, generator=g),
    "ill σ=logspace(0,-6) 256": lambda g: spectrum(256, 256, torch.logspace(0, -6, 256), g),
}


def spectrum(m: int, n: int, s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(m, len(s), dtype=torch.float64, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(n, len(s), dtype=torch.float64, generator=gen))
    return (U * s.double()) @ V.mT


def contract_table(dtypes):
    print(f"{'case':>22} {'method':>14} {'dtype':>5} {'rel err':>8} {'σ min':>7} {'σ max':>7}")
    for case, make in CONTRACT_CASES.items():
        g = torch.Generator().manual_seed(0)
        G = make(g)
        ref = orthogonalize_svd(G)
        for m in ["svd", "cubic", "quintic", "polar_express", "gram", "auto", "auto@4"]:
            method, _, st = m.partition("@")
            kw = {"steps": int(st), "lower": FAST_LOWER[int(st)]} if st else {}
            for d in dtypes:
                if m == "svd" and d != "fp32":
                    continue
                O = orthogonalize(G.float(), method, dtype=DTYPES[d], **kw)
                err, lo, hi = accuracy(O, ref)
                print(f"{case:>22} {m:>14} {d:>5} {err:8.4f} {lo:7.3f} {hi:7.3f}")


if __name__ == "__main__":
    main()
