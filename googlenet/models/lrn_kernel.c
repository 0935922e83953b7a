/* Local response normalisation across channels, forward and backward, fused: one pass over the tensor each way.
 *
 * Hand-written because no library we can call from PyTorch has a CPU LRN kernel with a backward pass (PyTorch's
 * F.local_response_norm is a chain of pad, avg_pool3d and pow; oneDNN's LRN is not exposed by PyTorch). Built and
 * loaded by lrn_native.py with the system C compiler; without one, lrn.py's PyTorch kernel is used.
 *
 * Layout: channels_last fp32, pixel p's C channels at x + p * C. With d = k + alpha / n * window_sum(x^2), window(c) = [c - n/2, c + n/2]:
 *   forward:  y = x * d^-beta;
 *   backward: dx = g * d^-beta - (2 alpha beta / n) * x * window_sum(g * x * d^(-beta - 1)),
 * with d recomputed from x in the backward pass: a kept d would be one more buffer to write and read, and a fresh
 * buffer's first touch (page faults) costs more than the arithmetic.
 *
 * Pixels go through in blocks of about BLOCK floats, each step one flat loop over the block (the compiler
 * vectorises it), not a short loop per pixel. The window sum's flat shifted adds also pick up the neighbouring
 * pixels' channels at each pixel's first and last n/2 channels; those are then summed again exactly, so every
 * value is a plain sum of its own window (no subtraction, no cancellation).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024

/* out[i] = d[i]^-beta and, where over_d is not NULL, over_d[i] = d[i]^-beta / d[i] (for the backward pass) from
 * the same square roots, without a second division. Each case is its own loop so that it vectorises (powf's does
 * not): Caffe's beta 0.75 as r * sqrt(r) with r = 1 / sqrt(d), TensorFlow's 0.5 as r. */
static void neg_pow(const float *restrict d, float *restrict out, float *restrict over_d, int64_t n, float beta) {
    if (beta == 0.75f && over_d) {
        for (int64_t i = 0; i < n; ++i) {
            float r = 1.0f / sqrtf(d[i]), o = r * sqrtf(r);
            out[i] = o;
            over_d[i] = o * r * r;
        }
    } else if (beta == 0.75f) {
        for (int64_t i = 0; i < n; ++i) {
            float r = 1.0f / sqrtf(d[i]);
            out[i] = r * sqrtf(r);
        }
    } else if (beta == 0.5f && over_d) {
        for (int64_t i = 0; i < n; ++i) {
            float r = 1.0f / sqrtf(d[i]);
            out[i] = r;
            over_d[i] = r * r * r;
        }
    } else if (beta == 0.5f) {
        for (int64_t i = 0; i < n; ++i) out[i] = 1.0f / sqrtf(d[i]);
    } else {
        for (int64_t i = 0; i < n; ++i) out[i] = powf(d[i], -beta);
        if (over_d)
            for (int64_t i = 0; i < n; ++i) over_d[i] = out[i] / d[i];
    }
}

/* For `pixels` pixels of C channels: out[p * C + c] = sum over the window of c within pixel p of v, where v is
 * read at padded + half (padded holds half readable floats before and after the block). */
static void window_sum(const float *restrict padded, float *restrict out, int64_t pixels, int64_t C, int size) {
    /* taps beyond C - 1 only ever reach outside the pixel, where the window is clipped: leave them out */
    const int half = size / 2 < C ? size / 2 : (int)(C > 0 ? C - 1 : 0);
    const int64_t n = pixels * C;
    const float *v = padded + size / 2; /* the block starts after size / 2 readable floats */
    memcpy(out, v, (size_t)n * sizeof(float));
    for (int j = 1; j <= half; ++j)
        for (int64_t i = 0; i < n; ++i) out[i] += v[i - j] + v[i + j];
    if (half == 0) return; /* a window of one channel: nothing crossed */
    for (int64_t p = 0; p < pixels; ++p) { /* the edge channels, whose flat sums crossed into the neighbours */
        const float *vp = v + p * C;
        float *op = out + p * C;
        for (int64_t c = 0; c < C; ++c) {
            if (c == half && C - half > half) c = C - half; /* skip the middle, already right */
            int64_t lo = c - half < 0 ? 0 : c - half, hi = c + half >= C ? C - 1 : c + half;
            float s = vp[c];
            for (int64_t j = 1; j <= half; ++j) {
                if (c - j >= lo) s += vp[c - j];
                if (c + j <= hi) s += vp[c + j];
            }
            op[c] = s;
        }
    }
}

typedef struct {
    float *padded, *sum, *pw, *pw_over_d;
} Scratch;

static int scratch_new(Scratch *s, int64_t n, int half) {
    s->padded = calloc((size_t)(n + 2 * half), sizeof(float));
    s->sum = malloc((size_t)n * sizeof(float));
    s->pw = malloc((size_t)n * sizeof(float));
    s->pw_over_d = malloc((size_t)n * sizeof(float));
    return s->padded && s->sum && s->pw && s->pw_over_d ? 0 : -1;
}

static void scratch_free(Scratch *s) {
    free(s->padded);
    free(s->sum);
    free(s->pw);
    free(s->pw_over_d);
}

/* s->sum = d = k + alpha / size * window_sum(x^2), s->pw = d^-beta and, for the backward pass (backward != 0),
 * s->pw_over_d = d^-beta / d, for a block of pixels starting at x. */
static void denominator(const float *restrict x, Scratch *s, int64_t pixels, int64_t C, int size, float alpha,
                        float beta, float k, int backward) {
    const int64_t n = pixels * C;
    const float scale = alpha / (float)size;
    float *restrict sq = s->padded + size / 2, *restrict d = s->sum;
    for (int64_t i = 0; i < n; ++i) sq[i] = x[i] * x[i];
    window_sum(s->padded, d, pixels, C, size);
    for (int64_t i = 0; i < n; ++i) d[i] = k + scale * d[i];
    neg_pow(d, s->pw, backward ? s->pw_over_d : NULL, n, beta);
}

/* One block of the forward pass: pixels [p, p + pixels). */
static void forward_block(const float *x, float *y, Scratch *s, int64_t p, int64_t pixels, int64_t C, int size,
                          float alpha, float beta, float k) {
    const int64_t n = pixels * C;
    const float *restrict xb = x + p * C;
    float *restrict yb = y + p * C;
    denominator(xb, s, pixels, C, size, alpha, beta, k, 0);
    for (int64_t i = 0; i < n; ++i) yb[i] = xb[i] * s->pw[i];
}

/* One block of the backward pass: pixels [p, p + pixels). */
static void backward_block(const float *g, const float *x, float *dx, Scratch *s, int64_t p, int64_t pixels,
                           int64_t C, int size, float alpha, float beta, float k) {
    const int64_t n = pixels * C;
    const float coef = 2.0f * alpha * beta / (float)size;
    const float *restrict gb = g + p * C, *restrict xb = x + p * C;
    float *restrict out = dx + p * C, *restrict t = s->padded + size / 2, *restrict d = s->sum;
    denominator(xb, s, pixels, C, size, alpha, beta, k, 1);
    for (int64_t i = 0; i < n; ++i) t[i] = gb[i] * xb[i] * s->pw_over_d[i]; /* g * y / d */
    window_sum(s->padded, d, pixels, C, size);
    for (int64_t i = 0; i < n; ++i) out[i] = gb[i] * s->pw[i] - coef * xb[i] * d[i];
}

/* What one call computes: the forward pass (g NULL) or the backward pass. */
typedef struct {
    const float *x, *g;
    float *out;
    int64_t C;
    int size;
    float alpha, beta, k;
} Job;

/* P pixels in blocks across `threads` OpenMP threads: torch's own OpenMP runtime when the library is loaded after
 * torch (the same soname, so one thread pool and no second set of spinning threads). Returns 0, or -1 when a
 * thread's scratch memory could not be had (the output is then incomplete). */
static int run(const Job *j, int64_t P, int threads) {
    if (j->C <= 0 || P <= 0) return 0; /* nothing to do */
    if (j->size < 1) return -1;        /* no window (lrn.py refuses such sizes before this) */
    const int64_t bp = j->C >= BLOCK ? 1 : BLOCK / j->C, blocks = (P + bp - 1) / bp;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && blocks > 1)
    {
        Scratch s;
        const int ok = scratch_new(&s, bp * j->C, j->size / 2) == 0;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t p = b * bp, pixels = P - p < bp ? P - p : bp;
            if (!ok) continue;
            if (j->g)
                backward_block(j->g, j->x, j->out, &s, p, pixels, j->C, j->size, j->alpha, j->beta, j->k);
            else
                forward_block(j->x, j->out, &s, p, pixels, j->C, j->size, j->alpha, j->beta, j->k);
        }
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        scratch_free(&s);
    }
    return failed ? -1 : 0;
}

int lrn_forward(const float *x, float *y, int64_t P, int64_t C, int size, float alpha, float beta, float k,
                int threads) {
    const Job j = {x, NULL, y, C, size, alpha, beta, k};
    return run(&j, P, threads);
}

int lrn_backward(const float *g, const float *x, float *dx, int64_t P, int64_t C, int size, float alpha,
                 float beta, float k, int threads) {
    const Job j = {x, g, dx, C, size, alpha, beta, k};
    return run(&j, P, threads);
}
