"""A non-editable install (``pip install .``) works on its own: the package data (configs, embedded datasets) is in
the wheel, and ``sslrun`` runs from a directory that is not the repository.

The fresh venv borrows the dependencies of the running environment through a path file (torch is too large to
install again here) and installs sslrun itself with ``--no-deps``; that environment's editable sslrun is not seen
(its finder sits in a ``.pth`` file of a directory the path file only appends, which Python does not read).
"""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with sslrun's wheel installed, built from a copy of the repository (the build writes build/)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "runs", "outputs", "multirun", "build", "*.egg-info", "__pycache__"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work, source],
        capture_output=True,
        text=True,
    )
    assert wheel.returncode == 0, wheel.stdout[-3000:] + wheel.stderr[-3000:]
    env = work / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (built,) = work.glob("sslrun-*.whl")
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", built], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


def run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([env / "bin" / "sslrun", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_a_non_editable_install_runs_from_another_directory(installed, tmp_path):
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import sslrun; print(sslrun.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(installed)) and "site-packages" in where, where  # not the repository's copy

    listing = run(installed, "list", cwd=tmp_path)
    assert listing.returncode == 0 and "contrastive" in listing.stdout and "fashion_mnist" in listing.stdout

    job = run(installed, "pretrain", "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0 and "name: contrastive" in job.stdout, job.stderr[-2000:]

    tiny = ["trainer=debug", "trainer.max_steps=2", "data.limit=64", "data.batch_size=16", "data.num_workers=0"]
    train = run(installed, "pretrain", *tiny, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
