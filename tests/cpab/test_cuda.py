"""CUDA: CPU/GPU parity and no host synchronisation in the transform, warp and fast fit."""

from __future__ import annotations

import torch

from cpabanim.cpab import CPAB, Tessellation
from tests.conftest import requires_cuda


@requires_cuda
def test_cpu_gpu_parity_float32():
    cpu = CPAB(Tessellation((6, 6)))
    gpu = CPAB(Tessellation((6, 6))).to("cuda")
    assert gpu.B.is_cuda
    theta = cpu.sample(4, scale=0.25).float()
    pts = torch.rand(4, 300, 2)
    y_cpu = cpu.transform(pts, theta)
    y_gpu = gpu.transform(pts.cuda(), theta.cuda())
    assert (y_gpu.cpu() - y_cpu).abs().max() < 1e-5
    g_cpu, g_gpu = cpu.warp_grid(theta, (16, 16)), gpu.warp_grid(theta.cuda(), (16, 16))
    assert (g_gpu.cpu() - g_cpu).abs().max() < 1e-5


@requires_cuda
def test_no_host_sync_in_transform_warp_and_fit():
    cpab = CPAB(Tessellation((4, 4))).to("cuda")
    theta = cpab.sample(8, scale=0.25).float()
    p = 0.1 + 0.8 * torch.rand(8, 5, 2, device="cuda")
    q = cpab.transform(p, theta)
    cpab.fit(p, q)  # warm-up (lazy CUDA init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cpab.transform(p, theta)
        cpab.transform(p, theta, return_jacobian=True)
        cpab.warp_grid(theta, (32, 32))
        theta_fit = cpab.fit(p, q)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    res = (cpab.transform(p, theta_fit) - q).norm(dim=-1).mean()
    assert res < 0.01
