"""Script entry points that Lightning's DDP launcher re-runs for ranks > 0.

Lightning starts each extra rank as ``python <sys.argv[0]> <sys.argv[1:]>``. While a command runs, ``sys.argv[0]``
points at ``sslrun/launch/<command>.py`` and ``sys.argv[1:]`` holds only the overrides, which is what Hydra parses
and what these scripts hand back to the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path


def script(command: str) -> Path:
    return Path(__file__).with_name(f"{command}.py")


def relaunch(script_file: str) -> None:
    from sslrun.cli import main

    main([Path(script_file).stem, *sys.argv[1:]])
