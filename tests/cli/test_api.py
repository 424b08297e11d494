"""``sslrun.api``: the commands from Python, with the user's own ``nn.Module`` as the backbone."""

import pytest
import torch
from torch import nn

from helpers.cli import TINY, sslrun
from sslrun.api import UserError, export, finetune, pretrain

SMALL = [*TINY[:3], "trainer=debug"]


class MapEncoder(nn.Module):
    """Returns a feature map: sslrun pools it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TupleEncoder(nn.Module):
    def forward(self, x: torch.Tensor):
        return x, x


def test_a_user_module_pretrains_finetunes_and_exports_from_python(tmp_path):
    net = MapEncoder()
    before = net.net[0].weight.detach().clone()
    run = pretrain([*SMALL, f"hydra.run.dir={tmp_path / 'run'}"], backbone=net)
    assert run.path == tmp_path / "run" and run.metrics["steps"] > 0 and run.metrics["backbone_params"] > 0
    assert not torch.equal(net.net[0].weight, before)  # the module passed in holds the trained weights
    assert "MapEncoder" in (run.path / "config.yaml").read_text()  # backbone.model records the class
    tuned = finetune([f"pretrained={run.path}", *SMALL, f"hydra.run.dir={tmp_path / 'ft'}"], backbone=MapEncoder())
    assert 0 <= tuned.metrics["top1"] <= 1 and tuned.metrics["backbone"].startswith("module ")
    out = tmp_path / "enc.pt"
    export([f"pretrained={run.path}", f"out={out}"], backbone=MapEncoder())
    fresh = MapEncoder()
    fresh.load_state_dict(torch.load(out))  # the module's own keys
    torch.testing.assert_close(fresh.net[0].weight, net.net[0].weight)
    # the CLI cannot rebuild a Python module: one line
    cli = sslrun("finetune", f"pretrained={run.path}", *SMALL, f"hydra.run.dir={tmp_path / 'cli'}", cwd=tmp_path)
    assert cli.returncode == 2 and "backbone=module is a Python module" in cli.stderr, cli.stderr[-2000:]


@pytest.mark.parametrize(
    "overrides,module,message",
    [
        (["data.batch_size=0"], MapEncoder(), "data.batch_size=0 must be an integer > 0"),
        ([], "not a module", "backbone= must be a torch.nn.Module"),
        (["hydra.run.dir=RUN"], TupleEncoder(), "returns tuple for a batch of 2 images; it must return (B, D)"),
    ],
)
def test_api_mistakes_raise_the_clis_one_line(overrides, module, message, tmp_path):
    overrides = [o.replace("RUN", str(tmp_path / "run")) for o in [*SMALL, *overrides]]
    with pytest.raises(UserError) as err:
        pretrain(overrides, backbone=module)
    assert message in str(err.value)
