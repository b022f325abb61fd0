"""Baselines of issue 13's speed targets: bitsandbytes' CPU Adam8bit and torch's fused Adam.

    python bench/lowp_baselines.py [--log2-size 24] [--repeats 7] [--threads 1 2]

Each (contender, thread count) runs in its own process with OMP_NUM_THREADS
set before start, because bitsandbytes' OpenMP runtime is not the one
torch.set_num_threads() configures.  Prints the median step time over
`repeats` steps after two warm-up steps, effective GB/s of param + grad +
state traffic, and the load average before and after.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CONTENDERS = {
    # name: (bytes moved per element per step, description)
    "bnb_adam8bit_fp32": (4 + 4 + 4 + 2 + 2, "bitsandbytes.optim.Adam8bit, float32 params, min_8bit_size=0"),
    "torch_fused_adam_fp32": (4 + 4 + 4 * 2 + 4 * 2 + 4, "torch.optim.Adam(fused=True), float32"),
    "torch_fused_adam_bf16": (2 + 2 + 2 * 2 + 2 * 2 + 2, "torch.optim.Adam(fused=True), bfloat16 params and state"),
    "fastoptim_adam_fp32": (4 + 4 + 4 * 2 + 4 * 2 + 4, "fastoptim.torch.Adam, float32"),
}


def child(name, log2_size, repeats, threads):
    import torch
    torch.set_num_threads(threads)
    n = 1 << log2_size
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if name.endswith("bf16") else torch.float32
    param = torch.randn(n, generator=gen).to(dtype)
    param.grad = (torch.randn(n, generator=gen) * 1e-2).to(dtype)
    if name == "bnb_adam8bit_fp32":
        import bitsandbytes as bnb
        opt = bnb.optim.Adam8bit([param], lr=1e-3, min_8bit_size=0)
    elif name.startswith("torch_fused"):
        opt = torch.optim.Adam([param], lr=1e-3, fused=True)
    else:
        import fastoptim.torch as fot
        opt = fot.Adam([param], lr=1e-3)
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps(dict(median=times[len(times) // 2], min=times[0], max=times[-1])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2-size", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="+", choices=sorted(CONTENDERS), default=sorted(CONTENDERS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.log2_size, args.repeats, args.child_threads)
        return
    n = 1 << args.log2_size
    print(f"n = 2^{args.log2_size}, median of {args.repeats} steps; load before: {os.getloadavg()}")
    results = {}
    for threads in args.threads:
        for name in args.only:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            out = subprocess.run([sys.executable, __file__, "--child", name, "--child-threads", str(threads),
                                  "--log2-size", str(args.log2_size), "--repeats", str(args.repeats)],
                                 env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name, threads] = r["median"]
            gbs = CONTENDERS[name][0] * n / r["median"] / 1e9
            print(f"{threads} thread(s)  {name:24s} median {r['median'] * 1e3:9.2f} ms "
                  f"(min {r['min'] * 1e3:.2f}, max {r['max'] * 1e3:.2f})  {gbs:6.2f} GB/s")
    print(f"load after: {os.getloadavg()}")
    for threads in args.threads:
        if ("bnb_adam8bit_fp32", threads) in results and ("torch_fused_adam_fp32", threads) in results:
            ratio = results["bnb_adam8bit_fp32", threads] / results["torch_fused_adam_fp32", threads]
            print(f"{threads} thread(s): bnb Adam8bit takes {ratio:.1f}x torch fused fp32 Adam's time")


if __name__ == "__main__":
    main()
