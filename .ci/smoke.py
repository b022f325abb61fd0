"""Smoke test of an installed fastoptim, run from a fresh virtual environment.

.ci/dist_smoke.sh runs it on the installed sdist and on the repaired wheel;
cibuildwheel runs it on every wheel it builds.  It checks the import,
show_config, that OpenMP is compiled in and runs two threads, and one step of
every optimizer (finite, moved, the same bits on one and two threads, and the
functional Adam equal to the NumPy reference).  Options:

  --bare              the environment holds only what `pip install fastoptim`
                      pulled: nothing but NumPy besides pip itself, no torch;
                      every fastoptim module imports or names its extra
  --vendored-openmp   the OpenMP runtime loaded is the wheel's own copy
                      (Linux: auditwheel's fastoptim.libs/)
"""
import argparse
import importlib
import importlib.metadata
import io
import pkgutil
import sys

import numpy as np

import fastoptim

# What `pip install fastoptim` may leave in a fresh environment.
BARE_DISTRIBUTIONS = {"fastoptim", "numpy", "pip", "setuptools", "wheel"}


def check_config():
    out = io.StringIO()
    fastoptim.show_config(file=out)
    text = out.getvalue()
    print(text, end="")
    openmp = [line for line in text.splitlines() if line.startswith("OpenMP:")]
    assert openmp and openmp[0].split(":", 1)[1].strip() == "on", f"OpenMP is not compiled in: {openmp}"
    with fastoptim.num_threads(2) as n:
        assert n == 2, f"asked for 2 threads, got {n}"


def optimizer_classes():
    return [getattr(fastoptim, name) for name in fastoptim.__all__
            if isinstance(getattr(fastoptim, name), type)
            and issubclass(getattr(fastoptim, name), fastoptim.Optimizer)
            and getattr(fastoptim, name) is not fastoptim.Optimizer]


def check_steps():
    rng = np.random.default_rng(0)
    classes = optimizer_classes()
    assert len(classes) >= 6, f"found only {[c.__name__ for c in classes]}"
    for cls in classes:
        # large enough to split across threads; a matrix for a rule of matrices (Muon)
        shape = (263, 267) if cls.rule.ndim == 2 else (70_001,)
        eight_bit = cls.__name__.endswith("8bit")  # Adam8bit & co: 8-bit state is for float32 params
        options = dict(lr=0.01, momentum=0.9) if cls.__name__ == "SGD8bit" else dict(lr=0.01)
        for dtype in (np.float32,) if eight_bit else (np.float32, np.float64):
            start = rng.standard_normal(shape).astype(dtype)
            grad = rng.standard_normal(start.shape).astype(dtype)
            results = []
            for threads in (1, 2):
                param = start.copy()
                with fastoptim.num_threads(threads):
                    opt = cls([param], **options)
                    for _ in range(2):
                        if cls.rule.closure:  # LBFGS evaluates the loss itself: 0.5 |p - grad|^2
                            opt.step(lambda p=param: (0.5 * float(np.sum((p - grad).astype(np.float64) ** 2)),
                                                      [p - grad]))
                        else:
                            opt.step([grad])
                results.append(param)
                if eight_bit:
                    assert opt.state[0]["state1"].dtype == np.uint8, f"{cls.__name__} keeps no 8-bit state"
            one, two = results
            assert np.all(np.isfinite(one)) and not np.array_equal(one, start), f"{cls.__name__} did not step"
            assert np.array_equal(one, two), f"{cls.__name__}, {dtype.__name__}: 1 and 2 threads differ"
    # the README's functional call, against the plain-NumPy reference
    param, grad = rng.standard_normal(1000), rng.standard_normal(1000)
    hyper = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    fast = [param.copy(), grad, np.zeros(1000), np.zeros(1000)]
    slow = [param.copy(), grad, np.zeros(1000), np.zeros(1000)]
    fastoptim.functional.adam(*fast, **hyper)
    fastoptim.reference.adam(*slow, **hyper)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow)), "functional.adam differs from the reference"
    print(f"steps:           {', '.join(c.__name__ for c in classes)}: float32 and float64 (8-bit: float32), "
          f"1 and 2 threads agree")


def check_bare_install():
    installed = {dist.metadata["Name"].lower().replace("_", "-") for dist in importlib.metadata.distributions()}
    extra = installed - BARE_DISTRIBUTIONS
    assert not extra, f"`pip install fastoptim` pulled more than NumPy: {sorted(extra)}"
    # Every module either imports without the optional dependencies or says which extra it needs.
    failures, modules = [], ["fastoptim"]
    while modules:
        name = modules.pop()
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if "fastoptim[" not in str(exc):
                failures.append(f"{name}: {exc}")
            continue
        if hasattr(module, "__path__"):
            modules += [f"{name}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]
    assert not failures, "imports that do not name the extra to install:\n  " + "\n  ".join(failures)
    print(f"bare install:    {', '.join(sorted(installed))}; every module imports or names its extra")


def check_vendored_openmp():
    if not sys.platform.startswith("linux"):
        return
    with open("/proc/self/maps") as maps:
        runtimes = {line.split()[-1] for line in maps if "libgomp" in line or "libomp" in line}
    assert runtimes, "no OpenMP runtime is loaded"
    outside = [path for path in runtimes if ".libs/" not in path or "site-packages" not in path]
    assert not outside, f"the OpenMP runtime does not come from the wheel: {sorted(runtimes)}"
    print(f"OpenMP runtime:  {', '.join(sorted(runtimes))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--vendored-openmp", action="store_true")
    args = parser.parse_args()
    print(f"fastoptim from:  {fastoptim.__file__}")
    check_config()
    check_steps()
    if args.vendored_openmp:
        check_vendored_openmp()
    if args.bare:
        check_bare_install()
    print("smoke: OK")


if __name__ == "__main__":
    main()
