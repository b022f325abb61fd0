"""Build of fastoptim's Cython/OpenMP extension.

The build compiles and runs a tiny OpenMP program first.  Without OpenMP it
prints what is missing and builds a serial extension, unless
FASTOPTIM_FAIL_NO_OPENMP=1 makes that an error (CI sets it).  Kernels are
compiled for the x86-64 baseline plus AVX2 and AVX-512 target regions chosen
at run time (csrc/kernels.c), never with -march=native.
"""
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.sysconfig import customize_compiler

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, omp_get_max_threads());
        return n == omp_get_max_threads() ? 0 : 1;
    }
""")


def openmp_flags():
    """(compile flags, link flags) for OpenMP with this compiler."""
    cc = os.environ.get("CC", sysconfig.get_config_var("CC") or "")
    if sys.platform == "win32":
        return ["/openmp"], []
    if sys.platform == "darwin" and "gcc" not in cc:
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def check_openmp():
    """Compile, link and run a small OpenMP program; return (ok, error text)."""
    compile_flags, link_flags = openmp_flags()
    compiler = new_compiler()
    customize_compiler(compiler)
    start = os.getcwd()
    tmp = tempfile.mkdtemp()
    try:
        os.chdir(tmp)
        with open("probe.c", "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile(["probe.c"], extra_postargs=compile_flags)
        # distutils adds LDFLAGS to shared-library links only; the probe needs them too
        # (macOS: -L of Homebrew's libomp; a sanitizer build: -fsanitize=...).
        ldflags = shlex.split(os.environ.get("LDFLAGS", "")) if os.name != "nt" else []
        compiler.link_executable(objects, "probe", extra_preargs=ldflags, extra_postargs=link_flags)
        out = subprocess.run([os.path.join(tmp, "probe")], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            return False, f"the probe ran but its threads did not start: {out.stdout}{out.stderr}"
        return True, ""
    except Exception as exc:  # any compiler or linker failure means no OpenMP
        return False, str(exc)
    finally:
        os.chdir(start)
        shutil.rmtree(tmp, ignore_errors=True)


def no_openmp_banner(error):
    lines = [
        "fastoptim: OpenMP is NOT available with this compiler; building a SERIAL extension.",
        "Every step will run on one thread.",
        f"The probe failed with: {error.strip()[:300]}",
        "On Linux, install a compiler with OpenMP (gcc, or clang with libomp-dev).",
        "On macOS: brew install libomp, then",
        '  export CPPFLAGS="$CPPFLAGS -Xpreprocessor -fopenmp -I$(brew --prefix libomp)/include"',
        '  export LDFLAGS="$LDFLAGS -L$(brew --prefix libomp)/lib -lomp"',
        "Set FASTOPTIM_FAIL_NO_OPENMP=1 to make this an error instead.",
    ]
    width = max(map(len, lines)) + 4
    return "\n".join(["*" * width, *(f"* {line}" for line in lines), "*" * width])


def extension_flags():
    if sys.platform == "win32":
        # MSVC (VS 2022+) never contracts to FMA under /fp:precise, our -ffp-contract=off;
        # it has no target pragmas, so csrc/kernels.c builds the baseline table only.
        compile_args, link_args = ["/O2", "/fp:precise"], []
    else:
        # -fno-math-errno lets GCC vectorise sqrt (a 2-5x difference here);
        # -ffp-contract=off keeps every SIMD level bit-identical to the others.
        compile_args = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
        link_args = []
    has_openmp, error = check_openmp()
    if has_openmp:
        omp_compile, omp_link = openmp_flags()
        compile_args += omp_compile
        link_args += omp_link
    else:
        if os.environ.get("FASTOPTIM_FAIL_NO_OPENMP", "") not in ("", "0"):
            raise RuntimeError("fastoptim: OpenMP is required (FASTOPTIM_FAIL_NO_OPENMP is set) "
                               f"but the OpenMP probe failed:\n{error}")
        print(no_openmp_banner(error), file=sys.stderr)
    return compile_args, link_args


# Metadata and the sdist need neither the OpenMP probe nor Cython's output (the sdist
# ships the .pyx and never generated C, see MANIFEST.in): only a build runs them.
METADATA_ONLY = bool({"egg_info", "dist_info", "sdist"} & set(sys.argv[1:])) and not (
    {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"} & set(sys.argv[1:]))

compile_args, link_args = ([], []) if METADATA_ONLY else extension_flags()
numpy_api = ("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")
kernel_headers = ["csrc/fastoptim/" + name for name in (
    "kernels.h", "update_rules.h", "rules.h", "loops.inc", "loop_helpers.inc", "level_table.inc",
    "halfprec.h", "staged.inc", "blockwise8.inc")]
kernel_headers += ["csrc/fastoptim/rules/" + name for name in sorted(os.listdir("csrc/fastoptim/rules"))]


def extension(name, sources=(), depends=(), macros=()):
    """fastoptim._ext.<name>, from src/fastoptim/_ext/<name>.pyx and `sources`."""
    return Extension(
        f"fastoptim._ext.{name}",
        sources=[f"src/fastoptim/_ext/{name}.pyx", *sources],
        depends=[*kernel_headers, *depends],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[numpy_api, *macros],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


extensions = [
    # The kernel tables (csrc/kernels.c) are compiled into runtime alone.
    extension("runtime", sources=["csrc/kernels.c"], macros=[
        # reported by fastoptim.show_config()
        ("FASTOPTIM_COMPILE_ARGS", '"' + " ".join(compile_args).replace('"', "") + '"')]),
    extension("checks"),
    extension("step"),
    extension("train", depends=["csrc/fastoptim/counter_rng.h", "csrc/fastoptim/reductions.h"]),
    extension("bandwidth"),
    # DC-ASGD's delay compensation, for fastoptim.distributed's parameter server and simulator
    extension("compensation", sources=["csrc/compensation.c"], depends=["csrc/fastoptim/compensation.inc"]),
    # L-BFGS's fused vector operations (dot products, axpy), deterministic sums
    extension("vector", sources=["csrc/vector_ops.c"],
              depends=["csrc/fastoptim/vector_ops.h", "csrc/fastoptim/vector_ops.inc", "csrc/fastoptim/reductions.h"]),
    Extension(
        "fastoptim.hogwild._kernel",
        sources=["src/fastoptim/hogwild/_kernel.pyx"],
        depends=["csrc/hogwild/losses.h", "csrc/hogwild/shuffle.h", "csrc/hogwild/threads.h"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[numpy_api],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    ),
]

setup(
    ext_modules=extensions if METADATA_ONLY else cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "freethreading_compatible": True,
        },
    ),
    # the extensions compile side by side, one per core (MSVC's distutils driver is not
    # thread-safe, so Windows builds them in turn)
    options={"build_ext": {"parallel": (os.cpu_count() or 1) if os.name != "nt" else 1}},
)
