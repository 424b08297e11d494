"""NT-Xent under data parallelism: 2 gloo processes on CPU against one process holding the whole batch.

Each rank r holds rows [r n, (r + 1) n) of a fixed global batch x1, x2 (2 n_global rows in Z) and a shared linear
projector P. It gathers z1 = x1 P and z2 = x2 P with the gradient-carrying all_gather and computes
L_r = nt_xent(Z1, Z2, t, rows=n, row_offset=r n), the mean over its 2n rows. With L the single-process loss:
- mean_r L_r = L, because every rank averages an equal share of the 2 n_global rows;
- all_gather's backward sums every rank's gradient into the source rank, so rank r's local input gradient is
  sum_r' dL_r'/dx_r = W dL/dx_r (W = world size; 1 / W would be the classic missing-backward bug);
- DDP averages parameter gradients over ranks: (1/W) sum_r dL_r/dP = dL/dP.
"""

import pytest
import torch
import torch.multiprocessing as mp

from helpers.nt_xent_ddp import BACKENDS, WORLD, single_process, worker
from helpers.processes import free_port


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_losses_average_to_the_global_loss(ranks, backend):
    expected = single_process(backend)
    losses = torch.stack([ranks[r][backend]["loss"] for r in range(WORLD)])
    torch.testing.assert_close(losses.mean(), expected["loss"], rtol=0, atol=1e-5)
    assert not torch.allclose(losses[0], losses[1]), "rank losses should differ (each scores its own rows)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_input_grads_are_world_size_times_the_global_grad(ranks, backend):
    expected = single_process(backend)
    for name in ("x1", "x2"):
        gathered = torch.cat([ranks[r][backend][name] for r in range(WORLD)])
        torch.testing.assert_close(gathered, WORLD * expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddp_averaged_parameter_grad_is_the_global_grad(ranks, backend):
    expected = single_process(backend)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r][backend]["p"], expected["p"], rtol=1e-5, atol=1e-6)
