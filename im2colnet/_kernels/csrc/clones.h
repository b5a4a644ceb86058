/* CLONES: a function compiled three times, for AVX-512F, AVX2 and the baseline, the
 * loader picking one by the CPU (GNU ifunc), so that its loops move 64 or 32 bytes at a
 * time where the CPU can.  Only where GCC makes ifuncs (not under AddressSanitizer). */
#ifndef IM2COLNET_CLONES_H
#define IM2COLNET_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(__clang__) \
    && !defined(__SANITIZE_ADDRESS__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

#endif
