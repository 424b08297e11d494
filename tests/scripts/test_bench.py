"""Benchmarks measure what they say: every timed sslrun run of scripts/bench_pretrain.py starts fresh; bench_data
times the tree it wrote."""

import pytest

from helpers.processes import script_module


@pytest.fixture
def bench(monkeypatch):
    with script_module(monkeypatch, "bench_pretrain") as module:
        yield module


def test_each_timed_repeat_is_a_new_run(bench, tmp_path):
    """Once, every repeat after the first found the first one's finished run dir and returned its figure."""
    cfg = bench.config(["data.limit=64", "data.batch_size=16", "data.num_workers=0", "trainer=debug"])
    first = bench.sslrun_img_per_s(cfg, 2, str(tmp_path))
    second = bench.sslrun_img_per_s(cfg, 2, str(tmp_path))
    runs = sorted(tmp_path.glob("repeat-*"))
    assert len(runs) == 2 and all((run / "metrics.json").is_file() for run in runs)
    assert first != second  # two timings of two runs, not one run read back


def test_the_data_bench_times_the_tree_it_wrote(monkeypatch, tmp_path):
    with script_module(monkeypatch, "bench_data") as bench_data:
        bench_data.make_tree(tmp_path / "60", 60)
        assert len(list((tmp_path / "60").rglob("*.png"))) == 60 and (tmp_path / "60" / ".complete").is_file()
        seconds, files = bench_data.startup_seconds(tmp_path / "60")
    assert files == 60 and seconds > 0
