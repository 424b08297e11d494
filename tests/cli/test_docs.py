"""The docs name only what exists (scripts, subcommands, config entries and keys), docs/results.md is what
scripts/results_page.py makes of results/*.jsonl, and the README's headline table is that data."""

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from helpers import docs

RESULTS = docs.REPO / "results"
FILES = docs.doc_files()
PROVENANCE = ("command", "commit", "date", "machine", "source")


def results_page():
    spec = importlib.util.spec_from_file_location("results_page", docs.REPO / "scripts" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ids(paths):
    return [str(p.relative_to(docs.REPO)) for p in paths]


def test_the_docs_are_there():
    names = set(ids(FILES))
    for name in ("configuration", "data", "backbones", "methods", "evaluation", "distributed", "kernels", "results"):
        assert f"docs/{name}.md" in names
    assert (docs.REPO / "README.md").stat().st_size <= 15_000


CHECKERS = [docs.script_problems, docs.subcommand_problems, docs.group_entry_problems, docs.key_problems]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__.removesuffix("_problems"))
@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_named_scripts_subcommands_group_entries_and_keys_exist(path, checker):
    assert checker(path.read_text()) == []


def test_the_checker_reports_each_kind_of_mistake():
    text = "\n".join(
        [
            "Run `scripts/no_such_script.py`, then `sslrun frobnicate`; `scripts/results_page.py` exists.",
            "```bash",
            "sslrun pretrain method=no_such_method data=digits",
            "sslrun pretrain trainer.max_epoch=3 \\",
            "    method.no_such_key=1 trainer.max_epochs=3",
            "sslrun pretrain method=contrastive method.queue_size=5  # a moco_v2 key, not contrastive's",
            "sslrun pretrain eval.layer=layer2",
            "sslrun pretrain -m method=contrastive,moco_v2 method.temperature=0.1 +sweep=whatever hydra.run.dir=x",
            "```",
            "```console",
            "$ sslrun pretrain trainer.max_epoch=3",
            "```",
        ]
    )
    found = docs.problems(text)
    expected = [
        "scripts/no_such_script.py: no such script",
        "sslrun frobnicate: not a subcommand",
        "method=no_such_method: no method/no_such_method.yaml",
        "trainer.max_epoch: no such key in the pretrain config",
        "method.no_such_key: no such key",
        "method.queue_size: no such key",
        "eval.layer: no such key in the pretrain config",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in found), (fragment, found)
    assert len(found) == len(expected), found


def test_a_sweep_over_methods_needs_the_key_in_every_method():
    assert docs.key_problems("```bash\nsslrun pretrain -m method=contrastive,byol method.temperature=0.1\n```") != []
    assert docs.key_problems("```bash\nsslrun pretrain -m method=contrastive,nnclr method.temperature=0.1\n```") == []
    assert docs.key_problems("```bash\nsslrun finetune pretrained=none eval.layer=layer2\n```") == []


def test_the_results_page_is_what_the_results_data_makes(tmp_path):
    out = tmp_path / "results.md"
    script = docs.REPO / "scripts" / "results_page.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (docs.REPO / "docs" / "results.md").read_bytes(), (
        "docs/results.md is stale: run python scripts/results_page.py"
    )


def test_every_results_file_has_a_header_and_every_row_its_provenance():
    page = results_page()
    files = sorted(RESULTS.glob("*.jsonl"))
    assert files
    for path in files:
        header, rows = page.read_table(path)
        assert {"title", "protocol", "key", "columns"} <= set(header), path
        assert rows, path
        for row in rows:
            assert set(PROVENANCE) <= set(row), (path, row)
            assert all(k in row for k in header["key"]), (path, row)


def test_the_readme_headline_table_is_the_results_data():
    page = results_page()
    header, rows = page.read_table(RESULTS / "methods_fashion.jsonl")
    table = "\n".join(page.table_lines(header, page.current_rows(header, rows)))
    readme = (docs.REPO / "README.md").read_text()
    assert table in readme
    command = json.loads((RESULTS / "methods_fashion.jsonl").read_text().splitlines()[1])["command"]
    readme_commands = [" ".join(line.split()) for line in docs.command_lines(readme)]
    assert command in readme_commands


def test_the_readme_keeps_the_test_command_under_development():
    readme = (docs.REPO / "README.md").read_text()
    section = re.search(r"^## Development\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section
    blocks, _ = docs.fenced_blocks(section.group(1))
    assert any("pytest -q" in line for _, lines in blocks for line in lines)
