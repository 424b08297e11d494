"""What each fp32 ``tl.dot`` input precision does to the NT-Xent loss, emulated on the CPU
(``sslrun.kernels.emulation``): one JSON line per (2N, D, temperature, views) with the loss error of ieee, tf32 and
tf32x3 against float64. The README's precision figures come from

    python scripts/tf32_emulation.py --sizes 2048 --dims 128,2048 --temperatures 0.01,0.1

``--results results/tf32_emulation.jsonl`` also appends every row, with its provenance, to the data docs/results.md
is generated from.
"""

from __future__ import annotations

import argparse
import json

import torch
from provenance import append_row, provenance, this_command

from sslrun.kernels.emulation import emulated_nt_xent


def views(two_n: int, dim: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (N, D) views: "random" (independent) or "identical" (z2 = z1, the hardest case at low temperature)."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(two_n // 2, dim, generator=g)
    return z1, (z1.clone() if kind == "identical" else torch.randn(two_n // 2, dim, generator=g))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,2048", help="comma-separated 2N values")
    parser.add_argument("--dims", default="64,128,2048")
    parser.add_argument("--temperatures", default="0.01,0.1")
    parser.add_argument("--results", help="also append every row to this results/*.jsonl file")
    args = parser.parse_args()
    origin = provenance(this_command()) if args.results else {}
    for two_n in map(int, args.sizes.split(",")):
        for dim in map(int, args.dims.split(",")):
            for t in map(float, args.temperatures.split(",")):
                for kind in ("random", "identical"):
                    z1, z2 = views(two_n, dim, kind)
                    ref = emulated_nt_xent(z1, z2, t, "float64").item()
                    row = {"two_n": two_n, "dim": dim, "temperature": t, "views": kind, "loss": round(ref, 6)}
                    for precision in ("ieee", "tf32", "tf32x3"):
                        row[f"error_{precision}"] = float(f"{emulated_nt_xent(z1, z2, t, precision).item() - ref:.3g}")
                    print(json.dumps(row), flush=True)
                    if args.results:
                        append_row(args.results, row | origin)


if __name__ == "__main__":
    main()
