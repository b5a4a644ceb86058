#!/usr/bin/env bash
# Builds the packed GEMM's C sources with AddressSanitizer and UndefinedBehaviorSanitizer
# (and OpenMP) into a checker against naive loops, and runs it for every level.  The
# AVX-512 level is emulated through SIMDe (Debian: libsimde-dev) where the header exists.
# Then batch norm's slice loops, the same way, once per instruction set this CPU has
# (the loops vectorised as the package's -O3 build does), and checks that every build's
# results are the same bits.
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
count="${1:-300}"
"$out" "$count"

bn_check() {   # $1: the build's name, then its extra compiler flags
    local name="$1"
    shift
    cc -O3 -g -ffp-contract=off -fsanitize=address,undefined -fno-sanitize-recover=all "$@" \
        -I"$src" "$here/bn_loops_check.c" "$src/bn_loops.c" -lm -o "$out-bn-$name"
    "$out-bn-$name" "$count" | tee /dev/stderr | sed 's/.*hash //'
}
hashes=("$(bn_check baseline)")
for level in avx2 avx512f; do
    if grep -qw "$level" /proc/cpuinfo 2>/dev/null; then
        hashes+=("$(bn_check "$level" -m"$level")")
    fi
done
if [ "$(printf '%s\n' "${hashes[@]}" | sort -u | wc -l)" -ne 1 ]; then
    echo "bn_loops: the builds' results differ: ${hashes[*]}"
    exit 1
fi
echo "bn_loops: ${#hashes[@]} builds, the same results"
