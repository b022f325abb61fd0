"""python -m fastoptim bench precision: one Adam step in each storage mode, side by side.

2**N parameters (one tensor, grads set, state already created), timed in
interleaved rounds at each thread count:
  float32 params:  fastoptim.Adam (float32 state), fastoptim.Adam8bit (8-bit
                   blockwise state), torch.optim.Adam(fused=True), and
                   bitsandbytes' Adam8bit where it is installed;
  bfloat16 params: fastoptim.torch.Adam (bf16 state, torch's fused default),
                   with state_dtype="float32", with master_weights=True, and
                   torch.optim.Adam(fused=True) on bf16 tensors.
The table gives median times, each ratio against fastoptim.Adam on float32
(with the spread of the per-round ratios) and the bytes of optimizer state per
param element, measured from the state itself.
"""
import sys

import numpy as np

from .._config import num_threads
from .timing import format_ratio, format_time, measure_rounds, parse_threads, ratio_spread

BASELINE = "fastoptim Adam, float32 state"


def add_arguments(parser):
    parser.add_argument("--log2-size", type=int, default=24, help="2**N parameters (default 24)")
    parser.add_argument("--threads", type=parse_threads, default=(2,), help="comma-separated thread counts "
                        "(default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="per round and contender (default 0.2)")


def _state_bytes(state, n):
    return sum(v.nbytes if hasattr(v, "nbytes") else v.numel() * v.element_size()
               for k, v in state.items() if k != "step") / n


def contenders(n):
    """label -> (zero-argument step, bytes of state per param element)."""
    import torch

    import fastoptim
    import fastoptim.torch as ft
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 0.01).astype(np.float32)
    out = {}
    for label, cls in ((BASELINE, fastoptim.Adam), ("fastoptim Adam8bit, 8-bit state", fastoptim.Adam8bit)):
        param = p0.copy()
        opt = cls([param], lr=1e-3)
        opt.step([g])
        out[label] = ((lambda o=opt: o.step([g])), _state_bytes(opt.state[0], n))

    def torch_contender(cls, dtype, **options):
        param = torch.nn.Parameter(torch.from_numpy(p0.copy()).to(dtype))
        param.grad = torch.from_numpy(g.copy()).to(dtype)
        opt = cls([param], lr=1e-3, **options)
        opt.step()
        return opt.step, _state_bytes(opt.state[param], n)

    out["torch Adam fused, float32"] = torch_contender(torch.optim.Adam, torch.float32, fused=True)
    try:
        import bitsandbytes as bnb
    except ImportError:
        pass
    else:
        out["bitsandbytes Adam8bit"] = torch_contender(bnb.optim.Adam8bit, torch.float32)
    bf16 = torch.bfloat16
    out["fastoptim.torch Adam, bf16 params+state"] = torch_contender(ft.Adam, bf16)
    out["fastoptim.torch Adam, bf16, float32 state"] = torch_contender(ft.Adam, bf16, state_dtype="float32")
    out["fastoptim.torch Adam, bf16, master weights"] = torch_contender(ft.Adam, bf16, master_weights=True)
    out["torch Adam fused, bf16 params+state"] = torch_contender(torch.optim.Adam, bf16, fused=True)
    return out


def run(log2_size, threads_list, rounds, min_seconds, out=sys.stdout):
    import torch
    n = 1 << log2_size
    results = []
    torch_threads = torch.get_num_threads()
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            with num_threads(threads):
                steps = contenders(n)
                samples = measure_rounds({k: v[0] for k, v in steps.items()}, rounds, min_seconds)
            print(f"\nAdam, one step over 2^{log2_size} params, {threads} thread(s), median of {rounds} "
                  f"interleaved rounds", file=out)
            rows = []
            for label, (_, nbytes) in steps.items():
                median = float(np.median(samples[label]))
                ratio = format_ratio(ratio_spread(samples[BASELINE], samples[label]))
                rows.append((label, format_time(median), ratio, f"{nbytes:.3g}"))
                results.append(dict(threads=threads, contender=label, seconds=median, state_bytes=nbytes))
            header = ("contender", "time", "speed vs the first", "state bytes/param")
            widths = [max(len(row[k]) for row in rows + [header]) for k in range(4)]
            for row in [header] + rows:
                print(f"{row[0]:{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}",
                      file=out)
    finally:
        torch.set_num_threads(torch_threads)
    return results


def main(args):
    run(args.log2_size, args.threads, args.rounds, args.min_seconds)
    return 0
