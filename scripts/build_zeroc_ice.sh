#!/usr/bin/env bash
# Build (once) a Linux wheel of zeroc-ice 3.6.5, the Ice version omero-py 5.x pins, for
# CPython 3.11: PyPI has only its sdist, which needs two one-line fixes for Python 3.11.
# About 7 minutes on 2 cores; the wheel (built without debug symbols) is cached in the folder given
# (default ~/.cache/dlhisto/wheels) and reused. Prints the wheel's path.
set -euo pipefail
WHEELS=${1:-${DLHISTO_CACHE:-$HOME/.cache/dlhisto}/wheels}
PYTHON=${PYTHON:-python3.11}
mkdir -p "$WHEELS"
cached=$(ls "$WHEELS"/zeroc_ice-3.6.5-cp311-*.whl 2>/dev/null | head -1 || true)
if [ -n "$cached" ]; then echo "$cached"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary=:all: zeroc-ice==3.6.5 -d "$work" >&2
tar xzf "$work"/zeroc-ice-3.6.5.tar.gz -C "$work"
src="$work/zeroc-ice-3.6.5"
# 1) <eval.h> is gone in Python 3.11 (its declarations are in Python.h)
sed -i 's|#include <eval.h>|/* eval.h: removed in Python 3.11 */|' "$src/src/Slice.cpp"
# 2) PyThreadState.frame is gone in 3.11: use the public API
sed -i 's|PyFrameObject \*f = PyThreadState_GET()->frame;|PyFrameObject *f = PyEval_GetFrame();|' "$src/src/Util.cpp"
grep -q "PyEval_GetFrame()" "$src/src/Util.cpp" || { echo "zeroc-ice patch did not apply" >&2; exit 1; }
CFLAGS="-g0 -O2" "$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" "$src" >&2
cp "$work"/dist/zeroc_ice-3.6.5-cp311-*.whl "$WHEELS"/
ls "$WHEELS"/zeroc_ice-3.6.5-cp311-*.whl | head -1
