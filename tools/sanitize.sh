#!/usr/bin/env bash
# Build fastconv's kernels with AddressSanitizer + UndefinedBehaviorSanitizer in a
# scratch copy of the repository, then run a command against that build.
#
#   tools/sanitize.sh                       build, then the sanitizer test subset (below)
#   tools/sanitize.sh pytest tests -q       build, then any command (here: the whole suite)
#   tools/sanitize.sh python tools/fuzz.py --seconds 600
#
# Environment: PYTHON (default: python3) is the interpreter, which needs numpy,
# Cython, setuptools, threadpoolctl, pytest and hypothesis; FASTCONV_SANITIZE_DIR
# keeps the build there (default: a fresh temporary directory, removed afterwards).
#
# The interpreter itself is not instrumented, so the ASan runtime is preloaded
# (LD_PRELOAD) and leak checking is off (CPython keeps objects alive until exit by
# design). Any ASan or UBSan report aborts the process with a non-zero status, so
# a finding fails the command; allocator_may_return_null lets NumPy turn an
# impossible allocation into MemoryError, as it does without ASan.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
cc="${CC:-gcc}"

if [ -n "${FASTCONV_SANITIZE_DIR:-}" ]; then
    work="$FASTCONV_SANITIZE_DIR"
    mkdir -p "$work"
else
    work="$(mktemp -d -t fastconv-sanitize-XXXXXX)"
    trap 'rm -rf "$work"' EXIT
fi

# A copy of the tracked (and untracked, not ignored) files: no build products.
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work" 2>/dev/null) ||
    cp -r "$repo/fastconv" "$repo/tests" "$repo/tools" "$repo/setup.py" "$repo/pyproject.toml" "$work/"
cd "$work"
rm -f fastconv/_kernels/*.so fastconv/_kernels/*.c

echo "== sanitizer build (ASan + UBSan) in $work"
CC="$cc" FASTCONV_SANITIZE=1 "$python" setup.py build_ext --inplace -q --force -j 2 >build.log 2>&1 ||
    { cat build.log; exit 1; }
grep -q "fsanitize=address" build.log || { echo "sanitizer flags missing from the build"; cat build.log; exit 1; }

asan="$("$cc" -print-file-name=libasan.so)"
ubsan="$("$cc" -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
export FASTCONV_SANITIZED=1
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-sanitize}"

# Canaries: the raw kernels driven out of bounds and into signed overflow must be reported,
# or the build is not sanitizing. The kernels check their arrays' shapes against the
# geometry, so the first canary hands im2col a column array whose shape is right but
# whose memory is 16 bytes, and the second a geometry whose stride overflows. They call
# the raw im2col kernel by its signature (x, cols, geometry dict, num_threads): keep them
# in step with fastconv/_kernels/im2col.pyx.
canary() {  # canary EXPECTED-TEXT PYTHON-CODE
    local out
    if out="$("$python" -c "import numpy as np; from fastconv._kernels import im2col as k; $2" 2>&1)"; then
        echo "sanitizer canary survived: $2"; exit 1
    fi
    grep -q "$1" <<<"$out" || { echo "sanitizer canary died without '$1':"; echo "$out" | tail -5; exit 1; }
    echo "canary reported: $(grep -m1 "$1" <<<"$out" | cut -c1-110)"
}
echo "== canaries"
canary "AddressSanitizer: heap-buffer-overflow" \
    "k.im2col(np.ones((1, 1, 4, 4), np.float32), np.lib.stride_tricks.as_strided(np.empty(4, np.float32), (1, 4, 9), (144, 36, 4)), dict(kh=2, kw=2, sh=1, sw=1, pt=0, pl=0, dh=1, dw=1, out_h=3, out_w=3), 1)"
canary "runtime error: signed integer overflow" \
    "k.im2col(np.ones((1, 1, 4, 4), np.float32), np.empty((1, 1, 3), np.float32), dict(kh=1, kw=1, sh=2**62, sw=1, pt=0, pl=0, dh=1, dw=1, out_h=3, out_w=1), 1)"

if [ "$#" -eq 0 ]; then
    # The CI subset: kernels against the reference, the limits, the property tests
    # at the small "sanitize" profile, concurrency and untouched inputs, the signal kernels, and
    # the direct kernels on every build (pixel and channel tiles), the task pool.
    set -- "$python" -m pytest -q -p no:cacheprovider -x \
        tests/test_columns.py tests/test_conv2d.py tests/test_limits.py tests/test_properties.py \
        tests/test_signal.py tests/test_direct.py tests/test_kernel_checks.py tests/test_task_pool.py \
        tests/test_backward_tiles.py \
        -k "not Torch and not finite_differences"
fi
echo "== $*"
"$@"
