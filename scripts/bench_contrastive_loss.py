"""Forward + backward time and peak memory of the NT-Xent backends, one JSON line per (2N, D, backend) case.

Every case runs in a fresh subprocess so peak memory is not polluted by earlier cases: on CPU the peak is the growth
of the resident set (VmHWM - VmRSS from /proc/self/status), on CUDA torch.cuda.max_memory_allocated, both over the
first call (the warm-up); time_s is the fastest of the --repeats calls after it. tflops counts 6 (2N)^2 D FLOPs
(one (2N)^2 D matmul forward, two backward; the same for every backend, and what the Triton kernel issues for the
symmetric loss: tests/test_kernels_nt_xent.py counts it). naive is skipped when its (2N)^2 matrices (~16 bytes per
logit) would take over half the free memory.

    python scripts/bench_contrastive_loss.py --sizes 16384 --dims 128 --backends naive,chunked
    python scripts/bench_contrastive_loss.py --device cuda --matmul-precision high --dtype float32   # on a GPU

``--results results/loss_backends.jsonl`` also appends every timed case, with its provenance, to the data
docs/results.md is generated from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from provenance import append_row, provenance, this_command

NAIVE_BYTES_PER_LOGIT = 16
"""Peak of the dense loss: the logits, their masked copy / softmax and the logits' gradient (REFERENCES.md)."""


def _proc_kib(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return _proc_kib("MemAvailable", "/proc/meminfo") * 1024


def run_case(
    two_n: int, dim: int, backend: str, device: torch.device, repeats: int, temperature: float, dtype: str
) -> dict:
    from sslrun.losses import nt_xent

    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(two_n // 2, dim, generator=gen).to(device, getattr(torch, dtype)).requires_grad_()
    z2 = torch.randn(two_n // 2, dim, generator=gen).to(device, getattr(torch, dtype)).requires_grad_()

    def step() -> float:
        z1.grad = z2.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        nt_xent(z1, z2, temperature, backend).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        base = _proc_kib("VmRSS") * 1024
        step()
        peak = _proc_kib("VmHWM") * 1024 - base
    best = min(step() for _ in range(repeats))
    return {
        "time_s": round(best, 4),
        "peak_mb": round(peak / 2**20, 1),
        "tflops": round(6 * two_n**2 * dim / best / 1e12, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096,16384,32768", help="comma-separated 2N values")
    parser.add_argument("--dims", default="128,2048", help="comma-separated embedding dims D")
    parser.add_argument("--backends", default=None, help="comma-separated; default naive,chunked (+triton on CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--matmul-precision",
        default="highest",
        choices=["highest", "high", "medium"],
        help="torch.set_float32_matmul_precision: the Triton kernel runs fp32 as ieee at highest, tf32x3 otherwise",
    )
    parser.add_argument("--results", help="also append every timed case to this results/*.jsonl file")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_float32_matmul_precision(args.matmul_precision)
    if args.case:
        case = json.loads(args.case)
        result = run_case(
            case["two_n"], case["dim"], case["backend"], device, args.repeats, args.temperature, args.dtype
        )
        print(json.dumps(result))
        return
    origin = provenance(this_command()) if args.results else {}
    backends = (
        args.backends.split(",") if args.backends else ["naive", "chunked"] + ["triton"] * (device.type == "cuda")
    )
    for two_n in map(int, args.sizes.split(",")):
        for dim in map(int, args.dims.split(",")):
            for backend in backends:
                row = {"two_n": two_n, "dim": dim, "backend": backend, "device": device.type, "dtype": args.dtype}
                row["matmul_precision"] = args.matmul_precision
                need = NAIVE_BYTES_PER_LOGIT * two_n**2
                if backend == "naive" and need > 0.5 * available_bytes(device):
                    row["skipped"] = (
                        f"naive needs ~{need / 2**30:.1f} GiB, {available_bytes(device) / 2**30:.1f} GiB free"
                    )
                    print(json.dumps(row), flush=True)
                    continue
                cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats)]
                cmd += ["--temperature", str(args.temperature), "--dtype", args.dtype, "--case", json.dumps(row)]
                cmd += ["--matmul-precision", args.matmul_precision]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode == 0:
                    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                else:
                    row["error"] = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                print(json.dumps(row), flush=True)
                if args.results and "time_s" in row:
                    append_row(args.results, row | origin)


if __name__ == "__main__":
    main()
