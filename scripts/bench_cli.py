"""How fast the CLI answers: the wall time of ``sslrun --help``, ``sslrun pretrain --help``, a user error found by the
pre-flight (an unknown method, a shared key's bad value, a method key's bad value) and ``sslrun list`` (its cache
filled by a first call), each as a ratio to ``python -c "import torch,
pytorch_lightning"`` measured in the same run (this machine is shared and noisy: compare ratios). One JSON line; the
best of ``--repeats`` per command.

    python scripts/bench_cli.py --repeats 3 [--results results/cli_startup.jsonl]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from provenance import append_row, provenance, this_command

SSLRUN = shutil.which("sslrun") or str(Path(sys.executable).with_name("sslrun"))
COMMANDS = {
    "import_torch_lightning": [sys.executable, "-c", "import torch, pytorch_lightning"],
    "sslrun_help": [SSLRUN, "--help"],
    "pretrain_help": [SSLRUN, "pretrain", "--help"],
    "pretrain_user_error": [SSLRUN, "pretrain", "method=nope"],
    "pretrain_value_error": [SSLRUN, "pretrain", "data.batch_size=0"],
    # a method's own keys are checked once the method (torch) is imported
    "pretrain_method_key_error": [SSLRUN, "pretrain", "method.temperature=-1"],
    "list": [SSLRUN, "list"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", help="also append one row per command, with its provenance, to this file")
    args = parser.parse_args()
    subprocess.run([SSLRUN, "list"], capture_output=True)  # fills the listing's cache
    best = {name: min(seconds(cmd) for _ in range(args.repeats)) for name, cmd in COMMANDS.items()}
    base = best["import_torch_lightning"]
    result = {f"{name}_s": round(value, 3) for name, value in best.items()}
    result |= {
        f"{name}_vs_import": round(value / base, 3) for name, value in best.items() if name != "import_torch_lightning"
    }
    print(json.dumps(result))
    if args.results:
        origin = provenance(this_command())
        for name, value in best.items():
            row = {
                "case": name,
                "argv": " ".join(COMMANDS[name][1:])
                if name != "import_torch_lightning"
                else "-c 'import torch, pytorch_lightning'",
            }
            append_row(args.results, row | {"seconds": round(value, 3), "vs_import": round(value / base, 3)} | origin)


if __name__ == "__main__":
    main()
