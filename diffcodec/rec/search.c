/* The encoder's REC candidate search for Gaussian chunks drawn at 16 bits, fused (see native.py and coder.py).

For chunk c (columns offsets[c] .. offsets[c + 1] - 1, m of them) and each candidate row j < count, the row's
draws are the next ceil(m / 4) raw outputs of the chunk's PCG64 stream (numpy's PCG64: a 128-bit LCG stepped
before each XSL-RR output), its 16-bit lanes least significant first (rng.lanes16). With n_e = table[k_e], the
row's key is log_t[j, c] - sum_e n_e (n_e quad_e + lin_e) (score.GaussianScreen.exact); the row of the smallest
key wins (the first on ties). Nothing is written per candidate: the draws are made, read and summed in one pass,
LANES rows at a time from jumps ahead in the stream, so the CPU overlaps their multiplications; a lane keeps only
the stream state of its best row, and the winner's draws are made again from it at the end.
*/
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

#define LANES 4 /* rows searched side by side, each from its own stretch of the stream (independent work) */

void rec_search(int64_t chunks, const uint64_t *streams, const int64_t *offsets, const double *quad,
                const double *lin, const double *table, int64_t count, const double *log_t, int64_t *best_j,
                uint16_t *best_k) {
    /* streams: 4 words per chunk: state high, state low, increment high, increment low. log_t: (count, chunks).
       Lane r takes rows r per .. (r + 1) per - 1 of the chunk, per = ceil(count / LANES). */
    int64_t per = (count + LANES - 1) / LANES;
    for (int64_t c = 0; c < chunks; c++) {
        u128 inc = ((u128)streams[4 * c + 2] << 64) | streams[4 * c + 3];
        u128 start = ((u128)streams[4 * c] << 64) | streams[4 * c + 1];
        int64_t a = offsets[c], m = offsets[c + 1] - a, words = (m + 3) / 4;
        const double *q = quad + a, *l = lin + a;
        u128 state[LANES], row_start[LANES], kept[LANES];
        double best[LANES];
        int64_t won[LANES];
        for (int r = 0; r < LANES; r++) {
            state[r] = pcg64_advanced(start, inc, (uint64_t)(r * per * words));
            best[r] = 0.0;
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
                        uint16_t k = (uint16_t)(raw[r] & 0xFFFF);
                        double n = table[k];
                        raw[r] >>= 16;
                        sum[r] += n * (n * q[e] + l[e]);
                    }
                }
            }
            for (int r = 0; r < LANES; r++) {
                int64_t j = r * per + t;
                if (j >= count) continue;
                double key = log_t[j * chunks + c] - sum[r];
                if (won[r] < 0 || key < best[r]) { /* the first row of the lane on ties */
                    best[r] = key;
                    won[r] = j;
                    kept[r] = row_start[r];
                }
            }
        }
        int w = 0; /* the lane of the smallest key; the earlier lane (smaller j) on ties */
        for (int r = 1; r < LANES; r++)
            if (won[r] >= 0 && best[r] < best[w]) w = r;
        best_j[c] = won[w];
        u128 again = kept[w];
        for (int64_t w4 = 0; w4 < words; w4++) {
            uint64_t raw = pcg64_next(&again, inc);
            for (int64_t e = 4 * w4, end = e + 4 < m ? e + 4 : m; e < end; e++, raw >>= 16)
                best_k[a + e] = (uint16_t)(raw & 0xFFFF);
        }
    }
}
