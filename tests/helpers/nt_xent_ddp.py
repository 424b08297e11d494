"""The spawned side of tests/losses/test_ddp.py: a gloo rank that gathers its projections and scores its own rows.

It lives here, not in the test module, because ``mp.spawn`` pickles the worker by module name and a child process
can import ``helpers`` (on ``sys.path`` through pytest's ``pythonpath``) but not a test file loaded by importlib.
"""

import os

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

from sslrun.kernels import triton_import_error
from sslrun.losses import nt_xent

WORLD = 2
N_LOCAL, D_IN, D, T = 5, 6, 7, 0.1
BACKENDS = ["naive", "chunked"] + (["triton"] if triton_import_error() is None else [])


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * N_LOCAL, D_IN, generator=g)
    x2 = x1 + 0.3 * torch.randn(WORLD * N_LOCAL, D_IN, generator=g)
    return x1, x2, torch.randn(D_IN, D, generator=g)


def single_process(backend: str) -> dict[str, torch.Tensor]:
    x1, x2, p = (x.requires_grad_() for x in global_batch())
    loss = nt_xent(x1 @ p, x2 @ p, T, backend)
    loss.backward()
    return {"loss": loss.detach(), "x1": x1.grad, "x2": x2.grad, "p": p.grad}


def worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        mine = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        x1, x2, p = global_batch()
        results = {}
        for backend in BACKENDS:
            x1_local, x2_local = x1[mine].clone().requires_grad_(), x2[mine].clone().requires_grad_()
            proj = p.clone().requires_grad_()
            z1 = torch.cat(all_gather(x1_local @ proj))
            z2 = torch.cat(all_gather(x2_local @ proj))
            loss = nt_xent(z1, z2, T, backend, row_offset=rank * N_LOCAL, rows=N_LOCAL)
            loss.backward()
            p_grad = proj.grad.clone()
            dist.all_reduce(p_grad)
            results[backend] = {"loss": loss.detach(), "x1": x1_local.grad, "x2": x2_local.grad, "p": p_grad / WORLD}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
