/* The encoder's REC candidate search for Gaussian chunks drawn at 16 bits, fused (see native.py and coder.py).

For chunk c (columns offsets[c] .. offsets[c + 1] - 1, m of them) and each candidate row j < count, the row's
draws are the next ceil(m / 4) raw outputs of the chunk's PCG64 stream (numpy's PCG64: a 128-bit LCG stepped
before each XSL-RR output), its 16-bit lanes least significant first (rng.lanes16). With n_e = table[k_e], the
row's key is log T_j - sum_e n_e (n_e quad_e + lin_e) (score.GaussianScreen.exact, summed in element order:
`exact_key`), T_j the sum of the chunk's first j + 1 gaps; the row of the smallest key wins (the first on ties).
Nothing is written per candidate: the draws are made, read and summed in one pass, LANES rows at a time from jumps
ahead in the stream, so the CPU overlaps their multiplications; a lane keeps only the stream state of its best row,
and the winner's draws are made again from it at the end.

Every row is first scored through table32, the table in float32: 256 KiB, which stays in a core's L2 cache where the
512 KiB of the float64 table do not. That rough key is within `tolerance` of the exact key, so a row whose rough key
is further than twice that from its lane's best is decided by it alone; a closer one is scored exactly, and so is
the best it is compared with. The picks are those of the exact search, bit for bit.
*/
#include <math.h>
#include <stdint.h>

typedef unsigned __int128 u128;

static const u128 PCG_MULT = (((u128)0x2360ED051FC65DA4ULL) << 64) | (u128)0x4385DF649FCCF645ULL;

static inline uint64_t pcg64_next(u128 *state, u128 inc) {
    *state = *state * PCG_MULT + inc;  /* step, then output the new state (numpy's pcg64_next64) */
    uint64_t hi = (uint64_t)(*state >> 64), lo = (uint64_t)*state;
    unsigned rot = (unsigned)(hi >> 58);
    uint64_t x = hi ^ lo;
    return (x >> rot) | (x << ((64 - rot) & 63));
}

static u128 pcg64_advanced(u128 state, u128 inc, uint64_t delta) {
    /* the state `delta` steps later: x -> M x + inc applied delta times, by squaring (O'Neill's pcg_advance) */
    u128 acc_mult = 1, acc_plus = 0, cur_mult = PCG_MULT, cur_plus = inc;
    for (; delta; delta >>= 1) {
        if (delta & 1) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1) * cur_plus;
        cur_mult *= cur_mult;
    }
    return acc_mult * state + acc_plus;
}

static double exact_key(u128 state, u128 inc, int64_t m, const double *q, const double *l, const double *table,
                        double log_t) {
    /* the key of the row whose draws follow `state`, scored through the float64 table in element order */
    double sum = 0.0;
    for (int64_t e = 0; e < m; e += 4) {
        uint64_t raw = pcg64_next(&state, inc);
        for (int64_t i = e, end = e + 4 < m ? e + 4 : m; i < end; i++, raw >>= 16) {
            double n = table[raw & 0xFFFF];
            sum += n * (n * q[i] + l[i]);
        }
    }
    return log_t - sum;
}

static double tolerance(int64_t m, const double *q, const double *l, const double *table, const double *log_t,
                        int64_t count) {
    /* a bound on |rough key - exact key| of every row of a chunk. With |n| <= N (the table's ends), a float32 n is
       within 2^-24 |n| of the float64 one, which moves the sum by at most 2^-23 (1 + 2^-24) A,
       A = sum_e (N^2 |q_e| + N |l_e|); either sum's rounding adds at most (m + 3) 2^-53 A, and the subtraction from
       log T at most 2^-53 (|log T| + A). 2^-20 (A + max |log T|) covers all of it 4 times over. */
    double big = fmax(fabs(table[0]), fabs(table[65535])), a = 0.0, t = 0.0;
    for (int64_t e = 0; e < m; e++) a += big * big * fabs(q[e]) + big * fabs(l[e]);
    for (int64_t j = 0; j < count; j++) t = fmax(t, fabs(log_t[j]));
    return ldexp(a + t, -20);
}

static void log_arrivals(double *gaps, int64_t count) {
    /* log T_j in place of the gaps: T_j = gaps[0] + ... + gaps[j], summed in order (as numpy's cumsum) */
    double t = 0.0;
    for (int64_t j = 0; j < count; j++) {
        t += gaps[j];
        gaps[j] = log(t);
    }
}

#define LANES 8 /* rows searched side by side, each from its own stretch of the stream (independent work) */

void rec_search(int64_t chunks, const uint64_t *streams, const int64_t *offsets, const double *quad,
                const double *lin, const double *table, const float *table32, int64_t count, double *gaps,
                int64_t *best_j, uint16_t *best_k) {
    /* streams: 4 words per chunk: state high, state low, increment high, increment low. gaps: (chunks, count), the
       exponential gaps between the arrivals of each chunk's candidates, overwritten by log T.
       Lane r takes rows r per .. (r + 1) per - 1 of the chunk, per = ceil(count / LANES). A lane's best row has its
       rough key and, once it was needed, its exact key (`sure`). */
    int64_t per = (count + LANES - 1) / LANES;
    for (int64_t c = 0; c < chunks; c++) {
        u128 inc = ((u128)streams[4 * c + 2] << 64) | streams[4 * c + 3];
        u128 start = ((u128)streams[4 * c] << 64) | streams[4 * c + 1];
        int64_t a = offsets[c], m = offsets[c + 1] - a, words = (m + 3) / 4;
        const double *q = quad + a, *l = lin + a;
        double *lt = gaps + c * count;
        log_arrivals(lt, count);
        double eps = tolerance(m, q, l, table, lt, count);
        u128 state[LANES], row_start[LANES], kept[LANES];
        double rough[LANES], exact[LANES];
        int sure[LANES];
        int64_t won[LANES];
        for (int r = 0; r < LANES; r++) {
            state[r] = pcg64_advanced(start, inc, (uint64_t)(r * per * words));
            won[r] = -1;
        }
        for (int64_t t = 0; t < per; t++) {
            double sum[LANES] = {0.0};
            for (int r = 0; r < LANES; r++) row_start[r] = state[r];
            for (int64_t w = 0; w < words; w++) {
                uint64_t raw[LANES];
                for (int r = 0; r < LANES; r++) raw[r] = pcg64_next(&state[r], inc);
                for (int64_t e = 4 * w, end = e + 4 < m ? e + 4 : m; e < end; e++) {
                    for (int r = 0; r < LANES; r++) {
                        double n = table32[raw[r] & 0xFFFF];
                        raw[r] >>= 16;
                        sum[r] += n * (n * q[e] + l[e]);
                    }
                }
            }
            for (int r = 0; r < LANES; r++) {
                int64_t j = r * per + t;
                if (j >= count) continue;
                double key = lt[j] - sum[r];
                if (won[r] < 0 || key + eps < rough[r] - eps) {  /* surely smaller, so the exact key is too */
                    rough[r] = key;
                    sure[r] = 0;
                    won[r] = j;
                    kept[r] = row_start[r];
                } else if (!(key - eps > rough[r] + eps)) {  /* too close to tell (or NaN): score both exactly */
                    if (!sure[r]) exact[r] = exact_key(kept[r], inc, m, q, l, table, lt[won[r]]);
                    sure[r] = 1;
                    double x = exact_key(row_start[r], inc, m, q, l, table, lt[j]);
                    if (x < exact[r]) { /* the first row of the lane on ties */
                        rough[r] = key;
                        exact[r] = x;
                        won[r] = j;
                        kept[r] = row_start[r];
                    }
                }
            }
        }
        for (int r = 0; r < LANES; r++)
            if (won[r] >= 0 && !sure[r]) exact[r] = exact_key(kept[r], inc, m, q, l, table, lt[won[r]]);
        int w = 0; /* the lane of the smallest exact key; the earlier lane (smaller j) on ties */
        for (int r = 1; r < LANES; r++)
            if (won[r] >= 0 && exact[r] < exact[w]) w = r;
        best_j[c] = won[w];
        u128 again = kept[w];
        for (int64_t w4 = 0; w4 < words; w4++) {
            uint64_t raw = pcg64_next(&again, inc);
            for (int64_t e = 4 * w4, end = e + 4 < m ? e + 4 : m; e < end; e++, raw >>= 16)
                best_k[a + e] = (uint16_t)(raw & 0xFFFF);
        }
    }
}
