"""The working directory's configs/ folder: a user's experiment file composes, the repository's sweep files are the
README's comparisons, and every job of a sweep file passes the pre-flight before the first one starts."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import sslrun.finetune
import sslrun.pretrain
from helpers.cli import assert_user_error
from helpers.cli import sslrun as cli
from sslrun.app import precheck

REPO = Path(__file__).parents[2]
SWEEPS = sorted((REPO / "configs" / "sweep").glob("*.yaml"))
EXPERIMENTS = sorted((REPO / "configs" / "experiment").glob("*.yaml"))
MINE = """# @package _global_
defaults:
  - override /backbone: resnet18
trainer:
  max_epochs: 3
method:
  temperature: 0.3
"""


def test_a_users_experiment_file_composes_from_their_working_directory(tmp_path):
    (tmp_path / "configs" / "experiment").mkdir(parents=True)
    (tmp_path / "configs" / "experiment" / "mine.yaml").write_text(MINE)
    proc = cli("pretrain", "+experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = OmegaConf.create(proc.stdout)
    assert (cfg.backbone.name, cfg.trainer.max_epochs, cfg.method.temperature) == ("resnet18", 3, 0.3)
    assert "Warning" not in proc.stderr  # nor, elsewhere, about a missing configs/ folder
    assert_user_error(cli("pretrain", "+experiment=theirs", cwd=tmp_path), "experiment/theirs", "mine")


def test_without_a_configs_folder_nothing_is_said(tmp_path):
    proc = cli("pretrain", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "configs is not available" not in proc.stderr


def composed(command: str, overrides: list[str]) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_module("sslrun.configs", version_base="1.3"):
        cfg = compose(config_name=command, overrides=overrides)
    GlobalHydra.instance().clear()
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return plain


@pytest.mark.parametrize(
    "command,job,script",
    [
        ("pretrain", ["+sweep=methods_fashion", "method=byol", "seed=1"], ["method=byol", "seed=1"]),
        (
            "finetune",
            ["+sweep=methods_fashion_linear", "pretrained=runs/sweeps/methods_fashion/byol/seed1", "seed=1"],
            ["mode=linear", "pretrained=runs/sweeps/methods_fashion/byol/seed1", "seed=1"],
        ),
    ],
)
def test_the_headline_sweep_runs_the_commands_of_compare_methods(command, job, script, monkeypatch):
    """A job of the sweep files composes the config that scripts/compare_methods.py's command for the README's
    headline table composes (its --both overrides, and trainer.max_epochs=8 for pretraining)."""
    monkeypatch.chdir(REPO)
    both = ["data=fashion_mnist", "backbone=resnet18", "backbone.width=0.25", "trainer.enable_progress_bar=false"]
    budget = ["trainer.max_epochs=8"] if command == "pretrain" else []
    assert composed(command, job) == composed(command, script + both + budget)
    readme = (REPO / "README.md").read_text()
    assert "--both data=fashion_mnist backbone=resnet18 backbone.width=0.25 -- trainer.max_epochs=8" in readme


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_job_of_a_sweep_file_passes_the_preflight(path, monkeypatch):
    monkeypatch.chdir(REPO)
    name = "finetune" if "mode: linear" in path.read_text() else "pretrain"
    precheck(name, {"pretrain": sslrun.pretrain, "finetune": sslrun.finetune}[name], [f"+sweep={path.stem}"], True)


def test_a_bad_job_in_a_sweep_file_stops_the_sweep_before_it_starts(tmp_path):
    (tmp_path / "configs" / "sweep").mkdir(parents=True)
    (tmp_path / "configs" / "sweep" / "bad.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      method.temperature: 0.1,-1\n"
    )
    proc = cli("pretrain", "-m", "+sweep=bad", cwd=tmp_path)
    assert_user_error(proc, "method.temperature=-1.0 must be a number > 0")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_file_passes_the_preflight(path, monkeypatch):
    monkeypatch.chdir(REPO)
    precheck("pretrain", sslrun.pretrain, [f"+experiment={path.stem}"])
