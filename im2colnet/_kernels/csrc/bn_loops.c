/* Batch normalisation's loops over one slice (bn_loops.h), for float32 and float64: the
 * typed bodies are in bn_loops_typed.h, included once per type. */
#pragma GCC optimize("fp-contract=off")   /* no fused multiply-adds: one rounding per step */

#include "bn_loops.h"
#include "clones.h"

/* The lanes' partial sums added pairwise, in a fixed order. */
_Static_assert(BN_LANES == 16, "lanes_total adds 16 lanes");
static inline __attribute__((always_inline)) double lanes_total(const double *acc)
{
    double half[8], quarter[4];
    for (int j = 0; j < 8; j++)
        half[j] = acc[j] + acc[j + 8];
    for (int j = 0; j < 4; j++)
        quarter[j] = half[j] + half[j + 4];
    return (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
}

#define T float
#define TYPED(name) name##_f32
#include "bn_loops_typed.h"
#undef T
#undef TYPED

#define T double
#define TYPED(name) name##_f64
#include "bn_loops_typed.h"
#undef T
#undef TYPED
