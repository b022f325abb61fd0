"""The installed (portable) build against a -march=native build of the same code.

Builds the checkout with CFLAGS=-march=native into a temporary directory, renames
that copy of the package to `fastoptim_native` (all its imports are relative), loads
both into one process and times them side by side in interleaved rounds.

    python bench/native_vs_portable.py [--sizes 2**16,2**20,2**24] [--optimizers adam,sgd]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import fastoptim
from fastoptim._registry import BY_NAME
from fastoptim.benchmarks.timing import format_time, measure, parse_sizes

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_native(target):
    env = dict(os.environ, CFLAGS="-march=native")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
                    "--target", target, HERE], check=True, env=env)
    os.rename(os.path.join(target, "fastoptim"), os.path.join(target, "fastoptim_native"))
    sys.path.insert(0, target)
    import fastoptim_native
    return fastoptim_native


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2**10,2**16,2**20,2**24")
    parser.add_argument("--optimizers", default="adam,sgd,rmsprop")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    target = tempfile.mkdtemp()
    try:
        native = build_native(target)
        print(f"portable: {fastoptim.__file__} (SIMD {fastoptim.get_simd_level()})")
        print(f"native:   {native.__file__} (SIMD {native.get_simd_level()}), "
              f"flags {native._ext.runtime.COMPILE_ARGS} + CFLAGS=-march=native")
        dtype = np.dtype(args.dtype).type
        rng = np.random.default_rng(0)
        print(f"\n{'':10}{'size':>10}{'portable':>12}{'native':>12}{'native/portable':>17}")
        for name in args.optimizers.split(","):
            spec = BY_NAME[name]
            native_cls = getattr(native, spec.cls.__name__)
            for n in parse_sizes(args.sizes):
                contenders = {}
                for label, cls in (("portable", spec.cls), ("native", native_cls)):
                    params = [rng.standard_normal(n).astype(dtype)]
                    grads = [rng.standard_normal(n).astype(dtype)]
                    opt = cls(params, **spec.bench_options())
                    opt.step(grads)
                    contenders[label] = (lambda o, g: lambda: o.step(g))(opt, grads)
                times = measure(contenders, rounds=9, min_seconds=0.02)
                print(f"{name:10}{n:>10}{format_time(times['portable']):>12}{format_time(times['native']):>12}"
                      f"{times['portable'] / times['native']:>16.3f}x")
    finally:
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
