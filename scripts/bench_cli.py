"""How fast the CLI answers: the wall time of ``sslrun --help``, ``sslrun pretrain --help``, a user error found by the
pre-flight (``sslrun pretrain method=nope``) and ``sslrun list``, each as a ratio to ``python -c "import torch,
pytorch_lightning"`` measured in the same run (this machine is shared and noisy: compare ratios). One JSON line; the
best of ``--repeats`` per command.

    python scripts/bench_cli.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

SSLRUN = shutil.which("sslrun") or str(Path(sys.executable).with_name("sslrun"))
COMMANDS = {
    "import_torch_lightning": [sys.executable, "-c", "import torch, pytorch_lightning"],
    "sslrun_help": [SSLRUN, "--help"],
    "pretrain_help": [SSLRUN, "pretrain", "--help"],
    "pretrain_user_error": [SSLRUN, "pretrain", "method=nope"],
    "list": [SSLRUN, "list"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    best = {name: min(seconds(cmd) for _ in range(args.repeats)) for name, cmd in COMMANDS.items()}
    base = best["import_torch_lightning"]
    result = {f"{name}_s": round(value, 3) for name, value in best.items()}
    result |= {
        f"{name}_vs_import": round(value / base, 3) for name, value in best.items() if name != "import_torch_lightning"
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
