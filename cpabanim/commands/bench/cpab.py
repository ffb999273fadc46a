"""``cpabanim bench cpab``: keypoint fits (fast LM vs the paper's Adam) and dense warps (ours vs libcpab 0.1.3),
measured side by side in one run on one device.

Workload = one CPABMM dense-motion forward at batch size B = 8 (docs/cpab.md): per pair, 10 partial 4x4 fits on
5 keypoints each and 1 global 6x6 fit on all 50 keypoints (88 transforms), then the 88 warps of a 64x64 grid.
Keypoints: driving p ~ U[0.1, 0.9]^2, source q = T_true(p) with T_true a 6x6 CPAB drawn from the prior at scale
0.25 (realisable, talking-head-sized motion: mean |q - p| ~ 0.1 in [-1,1] units).
Residual = mean over the 88 transforms of the RMS keypoint distance, in [-1,1] (grid_sample) units.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import time

import torch

from cpabanim.cpab.fit import keypoint_residual
from cpabanim.cpab.tessellation import Tessellation
from cpabanim.cpab.transformer import CPAB
from cpabanim.cpab.warp import identity_grid

log = logging.getLogger(__name__)

BATCH, GROUPS, KP_PER_GROUP = 8, 10, 5
ADAM_ITERS_PARTIAL, ADAM_ITERS_GLOBAL = 100, 150
GRID = (64, 64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(fn, device, repeats: int):
    """Best-of-``repeats`` wall time (after one warm-up call) and the last result."""
    out = fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def make_keypoints(device: torch.device, seed: int = 0):
    """(B, 50, 2) driving and source keypoints in [0,1]^2 from prior-sampled 6x6 motion."""
    gen = torch.Generator().manual_seed(seed)
    motion = CPAB(Tessellation((6, 6)))
    p = 0.1 + 0.8 * torch.rand(BATCH, GROUPS * KP_PER_GROUP, 2, generator=gen, dtype=torch.float64)
    q = motion.transform(p, motion.sample(BATCH, scale=0.25, generator=gen))
    return p.float().to(device), q.float().to(device)


def main(json_path: str | None = None, device: str | None = None, quick: bool = False) -> int:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    repeats = 1 if quick else 3
    partial = CPAB(Tessellation((4, 4))).to(dev)
    global_ = CPAB(Tessellation((6, 6))).to(dev)
    p, q = make_keypoints(dev)
    pp, qp = p.reshape(BATCH * GROUPS, KP_PER_GROUP, 2), q.reshape(BATCH * GROUPS, KP_PER_GROUP, 2)
    results: dict = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "transforms": BATCH * GROUPS + BATCH,
    }

    def residual(theta_p, theta_g):
        rp = keypoint_residual(partial.transform(pp, theta_p), qp)
        rg = keypoint_residual(global_.transform(p, theta_g), q)
        return 2 * torch.cat([rp, rg]).mean().item(), 2 * rp.mean().item(), 2 * rg.mean().item()

    def fit_fast():
        return partial.fit(pp, qp), global_.fit(p, q)

    def fit_adam():
        return (
            partial.fit(pp, qp, method="adam", iters=ADAM_ITERS_PARTIAL),
            global_.fit(p, q, method="adam", iters=ADAM_ITERS_GLOBAL),
        )

    _reset_peak(dev)
    results["fit_fast_s"], (tp, tg) = _timed(fit_fast, dev, repeats)
    results["fit_fast_peak_mib"] = _peak_mib(dev)
    results["fit_fast_residual"], results["fit_fast_residual_partial"], results["fit_fast_residual_global"] = residual(
        tp, tg
    )
    # the same LM fit with a small ridge (lam = 1e-5): what realisable (trained-regime) motion allows
    t_small, (ts, tgs) = _timed(lambda: (partial.fit(pp, qp, lam=1e-5), global_.fit(p, q, lam=1e-5)), dev, repeats)
    results["fit_fast_lam1e-5_s"] = t_small
    results["fit_fast_lam1e-5_residual"] = residual(ts, tgs)[0]
    _reset_peak(dev)
    t0 = time.perf_counter()
    ta, tga = fit_adam()  # one run: 250 sequential Adam steps, no warm-up needed to be representative
    _sync(dev)
    results["fit_adam_s"] = time.perf_counter() - t0
    results["fit_adam_peak_mib"] = _peak_mib(dev)
    results["fit_adam_residual"], results["fit_adam_residual_partial"], results["fit_adam_residual_global"] = residual(
        ta, tga
    )
    results["fit_speedup"] = results["fit_adam_s"] / results["fit_fast_s"]
    results["keypoint_motion"] = 2 * (q - p).norm(dim=-1).mean().item()

    # dense warps of the 88 fitted transforms on a 64x64 grid (no autograd: theta is detached in CPABMM)
    def warp_ours(method="faithful"):
        return partial.warp_grid(tp, GRID, method=method), global_.warp_grid(tg, GRID, method=method)

    _reset_peak(dev)
    results["warp_s"], (gp, gg) = _timed(warp_ours, dev, repeats)
    results["warp_peak_mib"] = _peak_mib(dev)
    results["warp_fast20_s"], (gp20, gg20) = _timed(lambda: warp_ours("fast"), dev, repeats)
    results["warp_fast20_max_diff"] = max((gp20 - gp).abs().max().item(), (gg20 - gg).abs().max().item())
    try:
        import numpy as np
        from libcpab import Cpab
    except ImportError:  # pragma: no cover - libcpab is a test/bench dependency
        log.warning("libcpab is not installed: no libcpab comparison")
        results["warp_libcpab_s"] = None
    else:
        libs = []
        for ours, theta in ((partial, tp), (global_, tg)):
            lib = Cpab(list(ours.nc), device=dev.type, zero_boundary=False)
            lib.set_solver_params(nstepsolver=50, use_slow=True)  # 0.1.3 ships no C/CUDA sources
            B_lib = torch.tensor(np.asarray(lib.params.basis), dtype=torch.float64, device=dev)
            theta_lib = (B_lib.T @ ours.B.double() @ theta.double().T).T.float().contiguous()  # basis mapping
            libs.append((lib, theta_lib))
        u = identity_grid(GRID, device=dev)
        grid = ((u + 1) / 2).reshape(-1, 2).T.contiguous()  # (2, H*W), libcpab layout

        def warp_lib():
            with torch.no_grad():
                return [lib.transform_grid(grid, th) for lib, th in libs]

        _reset_peak(dev)
        results["warp_libcpab_s"], outs = _timed(warp_lib, dev, repeats)
        results["warp_libcpab_peak_mib"] = _peak_mib(dev)
        diff = max(
            (2 * outs[0].transpose(1, 2).reshape(gp.shape) - 1 - gp).abs().max().item(),
            (2 * outs[1].transpose(1, 2).reshape(gg.shape) - 1 - gg).abs().max().item(),
        )
        results["warp_libcpab_max_diff"] = diff
        results["warp_speedup"] = results["warp_libcpab_s"] / results["warp_s"]

    _print(results)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def _print(r: dict) -> None:
    lines = [
        f"cpab benchmark on {r['device']} (torch {r['torch']}, {r['threads']} thread(s)); "
        f"B={BATCH}: {BATCH * GROUPS} partial 4x4 fits x {KP_PER_GROUP} kp + {BATCH} global 6x6 fits x "
        f"{GROUPS * KP_PER_GROUP} kp; keypoint motion {r['keypoint_motion']:.3f} ([-1,1] units)",
        f"  fit  fast (LM, lam defaults 1e-4 / 3e-4) {r['fit_fast_s']:8.3f} s   residual {r['fit_fast_residual']:.2e} "
        f"(partial {r['fit_fast_residual_partial']:.2e}, global {r['fit_fast_residual_global']:.2e})",
        f"  fit  fast (LM, lam 1e-5)                 {r['fit_fast_lam1e-5_s']:8.3f} s   "
        f"residual {r['fit_fast_lam1e-5_residual']:.2e}",
        f"  fit  adam (paper, 100 / 150 steps)       {r['fit_adam_s']:8.3f} s   residual {r['fit_adam_residual']:.2e} "
        f"(partial {r['fit_adam_residual_partial']:.2e}, global {r['fit_adam_residual_global']:.2e})",
        f"  fit  speed-up (defaults vs adam)         {r['fit_speedup']:8.1f} x",
        f"  warp ours (50 steps)                     {r['warp_s']:8.3f} s",
        f"  warp ours (20 steps)                     {r['warp_fast20_s']:8.3f} s   "
        f"max diff to 50 steps {r['warp_fast20_max_diff']:.1e}",
    ]
    if r.get("warp_libcpab_s") is not None:
        lines += [
            f"  warp libcpab 0.1.3                       {r['warp_libcpab_s']:8.3f} s   "
            f"max diff to ours {r['warp_libcpab_max_diff']:.1e}",
            f"  warp speed-up                            {r['warp_speedup']:8.1f} x",
        ]
    unit = "MiB (process peak RSS)" if r["device"] == "cpu" else "MiB (max_memory_allocated)"
    lines.append(
        f"  peak memory {unit}: fit fast {r['fit_fast_peak_mib']:.0f}, fit adam {r['fit_adam_peak_mib']:.0f}, "
        f"warp {r['warp_peak_mib']:.0f}"
        + (f", warp libcpab {r['warp_libcpab_peak_mib']:.0f}" if r.get("warp_libcpab_s") else "")
    )
    print("\n".join(lines))
