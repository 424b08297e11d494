"""``sslrun <command> [overrides]``: dispatches argv[1] to ``sslrun/<command>.py`` run as a Hydra app."""

from __future__ import annotations

import importlib
import sys

from sslrun import console
from sslrun.registry import unknown_name_message

HYDRA_COMMANDS = {
    "pretrain": "self-supervised pretraining of an image encoder",
    "finetune": "linear probe + kNN or full fine-tune of a pretrained or random-init encoder",
    "export": "write a pretrained backbone as a plain state_dict (pretrained=<ckpt|run dir> out=<file>)",
}
PLAIN_COMMANDS = {
    "list": ("sslrun.listing", "methods, backbones, datasets, optimizers and loss backends"),
    "report": ("sslrun.report", "tables and plots from run dirs and sweeps (RUN_OR_SWEEP_DIR ... [--out DIR])"),
    "shard": ("sslrun.shard", "write an image folder as WebDataset shards + index.json (SRC OUT [--resize S])"),
}

USAGE = """usage: sslrun <command> [key=value ...] [-m] [--cfg job] [--help]

commands:
{commands}

examples:
  sslrun pretrain method=contrastive
  sslrun pretrain -m method=contrastive data=digits optim.lr=0.3,0.6
  sslrun finetune pretrained=runs/pretrain/<run> mode=linear
  sslrun finetune pretrained=none mode=linear
  sslrun export pretrained=runs/pretrain/<run> out=encoder.pt
  sslrun report runs/pretrain-multirun/<sweep>
  sslrun shard images/ shards/
  sslrun pretrain data=webdataset data.root=shards/
  sslrun <command> --help    (config groups and options of that command)"""


def usage() -> str:
    lines = [f"  {name:<9} {text}" for name, text in HYDRA_COMMANDS.items()]
    lines += [f"  {name:<9} {text}" for name, (_, text) in PLAIN_COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name in PLAIN_COMMANDS:
        importlib.import_module(PLAIN_COMMANDS[name][0]).main(rest)
    elif name in HYDRA_COMMANDS:
        from sslrun.app import run_command

        run_command(name, f"sslrun.{name}", rest)  # imported only when it runs: --help answers at once
    else:
        console.fail(unknown_name_message("command", name, sorted([*HYDRA_COMMANDS, *PLAIN_COMMANDS])))


if __name__ == "__main__":
    main()
