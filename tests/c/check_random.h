/* The checkers' random numbers: xorshift64 from a fixed seed, the same numbers on every
 * run. */
#ifndef IM2COLNET_CHECK_RANDOM_H
#define IM2COLNET_CHECK_RANDOM_H

static unsigned long long state = 88172645463325252ULL;
static double uniform(void)   /* in [0, 1) */
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}

#endif
