#!/usr/bin/env bash
# fastoptim's extensions built with AddressSanitizer and UndefinedBehaviorSanitizer,
# and the kernel and optimizer tests run under them.
#
#   .ci/sanitize.sh [PYTHON [TEST...]]
#
# PYTHON: an interpreter whose environment has the test extra and torch (README's test
# command); default: python3 on PATH.  TEST: test files (default: the list below).
# The environment is left alone: the sanitized build goes into a temporary directory put
# first on PYTHONPATH.  Needs gcc (its libasan) on Linux.
#
# Python itself is not instrumented, so the ASan runtime is preloaded (it must be the
# first library loaded); leak detection is off because CPython frees little at exit; a
# UBSan report stops the run with a stack trace.  Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
python=${1:-python3}
shift || true
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    tests=(tests/test_kernels.py tests/test_optimizer.py tests/test_errors.py tests/test_train.py
           tests/test_torch_optim.py tests/test_hogwild.py tests/test_build.py tests/test_schedules.py)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# A copy of the sources (tracked and new files), so no earlier build in ./build is reused.
mkdir "$work/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - | tar xf - -C "$work/src"
else
    tar cf - --exclude=./build --exclude='*.so' . | tar xf - -C "$work/src"
fi

sanitize="-fsanitize=address,undefined -fno-omit-frame-pointer -g"
python_cflags=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')
echo "sanitize: building with $sanitize"
CFLAGS="$python_cflags $sanitize" LDFLAGS="$sanitize" FASTOPTIM_FAIL_NO_OPENMP=1 \
    "$python" -m pip install --quiet --no-deps --no-build-isolation --target "$work/site" "$work/src" \
    >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
extensions=$(find "$work/site/fastoptim" -name '*.so')
for so in $extensions; do
    ldd "$so" | grep libasan >/dev/null || { echo "sanitize: $so is not linked with libasan" >&2; exit 1; }
done
echo "sanitize: built $(echo "$extensions" | wc -w) extensions in $((SECONDS - start)) s"

# libstdc++ is preloaded too: ASan intercepts __cxa_throw only if libstdc++ is there when
# it starts, and torch (C++) throws for the errors some tests provoke.  Reports go to
# files, because pytest captures the tests' stderr and a halted process loses it.
reports="$work/reports"
mkdir "$reports"
# Only the Python processes get the runtime (a preloaded ASan can hang unrelated tools).
sanitized() {
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)" \
    ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
    PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" "$python" "$@"
}
sanitized -c "import fastoptim; assert fastoptim.__file__.startswith('$work/site'), fastoptim.__file__"

start=$SECONDS
status=0
sanitized -m pytest -p no:cacheprovider -q "${tests[@]}" || status=$?
if [ -n "$(ls -A "$reports")" ]; then
    cat "$reports"/*
    echo "sanitize: the sanitizers reported the errors above" >&2
    status=1
fi
echo "sanitize: tests took $((SECONDS - start)) s under ASan+UBSan"
exit $status
