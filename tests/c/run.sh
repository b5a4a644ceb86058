#!/usr/bin/env bash
# Builds the packed GEMM's C sources with AddressSanitizer and UndefinedBehaviorSanitizer
# (and OpenMP) into a checker against naive loops, and runs it for every level.  The
# AVX-512 level is emulated through SIMDe (Debian: libsimde-dev) where the header exists.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../../im2colnet/_kernels/csrc"
out="${TMPDIR:-/tmp}/packed_gemm_check"
emulate=()
if [ -f /usr/include/simde/x86/avx512.h ] && ! grep -q avx512f /proc/cpuinfo 2>/dev/null; then
    emulate=(-DPG_EMULATE_AVX512)
fi
cc -O1 -g -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=all "${emulate[@]}" \
    -I"$src" "$here/packed_gemm_check.c" "$src/packed_conv.c" "$src/gemm_avx512.c" \
    "$src/gemm_avx2.c" "$src/gemm_portable.c" -lm -o "$out"
"$out" "${1:-300}"
