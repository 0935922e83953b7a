/* Separable resampling of a uint8 image crop to float pixels in [0, 1]: the data path's resize (resample.py).
 *
 * Written by hand because no library does this at speed: PyTorch's float antialiased and area kernels are scalar
 * (about 1 ms for a 300x400 crop to 224x224 on one core, a third of the data path), Pillow-SIMD and torch's
 * SIMD kernels work on uint8 (rounding every pixel to 1/255), and OpenCV's linear and cubic do not antialias.
 * The weights are not computed here: resample.py takes them from F.interpolate itself, so any mode it has
 * (bilinear and bicubic antialiased, area, nearest) gives its numbers, to float rounding.
 *
 * out[c][o][i] = clamp(sum_k xw[i][k] * sum_j gain * yw[o][j] * src[c][ys[o] + j][xs[i] + k], 0, 1)
 *
 * Pass A combines source rows (vectorised along the row, uint8 read and converted on the fly) TILE output rows at
 * a time and stores them transposed, T[x][o]. Pass B then combines columns of T, vectorised along o, and writes
 * TILE x TILE tiles back in row order. src element (c, y, x) is at src[c*sc + y*sy + x*sx]: planar (sx == 1) or
 * interleaved (sc == 1, sx == C, as a decoded HWC image), any row stride. Single-threaded: it runs in DataLoader
 * workers, one per core. Returns 0, 1 when out of memory, 2 for a layout it does not take.
 */
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#define TILE 16
typedef float vec __attribute__((vector_size(TILE * sizeof(float)), aligned(4), may_alias));

/* One scratch buffer per thread, grown as needed and kept: a fresh one per call would cost more in page faults
 * than the arithmetic. It lives under a pthread key whose destructor frees it when the thread ends. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok = 0;

typedef struct {
    int64_t size;
    float data[];
} Scratch;

static void make_scratch_key(void) { scratch_key_ok = pthread_key_create(&scratch_key, free) == 0; }

static float *get_scratch(int64_t n) {
    pthread_once(&scratch_once, make_scratch_key);
    if (!scratch_key_ok) return 0;
    Scratch *s = pthread_getspecific(scratch_key);
    if (!s || s->size < n) {
        free(s);
        pthread_setspecific(scratch_key, 0);
        s = malloc(sizeof(Scratch) + sizeof(float) * (size_t)n);
        if (!s) return 0;
        s->size = n;
        pthread_setspecific(scratch_key, s);
    }
    return s->data;
}

/* Pass A for one plane: T[x][o] = sum_j yw[o][j] * row(ys[o] + j)[x], o padded to whole tiles with zeros. */
static void rows_pass(const uint8_t *base, int64_t sy, int64_t L, int64_t OH, int64_t OHp, const int32_t *ys,
                      const int32_t *yn, const float *yw, int64_t ky, float gain, float *T, float *block) {
    for (int64_t o0 = 0; o0 < OHp; o0 += TILE) {
        for (int64_t a = 0; a < TILE; a++) {
            float *restrict t = block + a * L;
            int64_t o = o0 + a;
            if (o >= OH) {
                for (int64_t x = 0; x < L; x++) t[x] = 0.f;
                continue;
            }
            const float *w = yw + o * ky;
            const uint8_t *restrict r = base + (int64_t)ys[o] * sy;
            float w0 = w[0] * gain;
            for (int64_t x = 0; x < L; x++) t[x] = w0 * (float)r[x];
            for (int32_t j = 1; j < yn[o]; j++) {
                const uint8_t *restrict rj = r + j * sy;
                float wj = w[j] * gain;
                for (int64_t x = 0; x < L; x++) t[x] += wj * (float)rj[x];
            }
        }
        for (int64_t x = 0; x < L; x++) {
            float *restrict d = T + x * OHp + o0;
            for (int64_t a = 0; a < TILE; a++) d[a] = block[a * L + x];
        }
    }
}

/* Pass B for channel c of a pass-A result with P interleaved channels: dst[o][i] = clamp(sum_k xw[i][k] *
 * T[(xs[i] + k) * P + c][o]). */
static void columns_pass(const float *T, int64_t P, int64_t c, int64_t OH, int64_t OHp, int64_t OW,
                         const int32_t *xs, const int32_t *xn, const float *xw, int64_t kx, float *dst) {
    for (int64_t i0 = 0; i0 < OW; i0 += TILE) {
        int64_t ni = OW - i0 < TILE ? OW - i0 : TILE;
        for (int64_t o0 = 0; o0 < OHp; o0 += TILE) {
            float tile[TILE][TILE];
            for (int64_t b = 0; b < ni; b++) {
                int64_t i = i0 + b;
                const float *w = xw + i * kx;
                const float *s = T + ((int64_t)xs[i] * P + c) * OHp + o0;
                vec acc = w[0] * *(const vec *)s;
                for (int32_t k = 1; k < xn[i]; k++) acc += w[k] * *(const vec *)(s + k * P * OHp);
                *(vec *)tile[b] = acc;
            }
            int64_t na = OH - o0 < TILE ? OH - o0 : TILE;
            for (int64_t a = 0; a < na; a++) {
                float *restrict d = dst + (o0 + a) * OW + i0;
                for (int64_t b = 0; b < ni; b++) {
                    float v = tile[b][a];  /* comparisons, not fminf/fmaxf: those cost 4x the whole pass here */
                    v = v < 0.f ? 0.f : v;
                    d[b] = v > 1.f ? 1.f : v;
                }
            }
        }
    }
}

int resample_u8(const uint8_t *src, int64_t C, int64_t H, int64_t W, int64_t sc, int64_t sy, int64_t sx,
                int64_t OH, int64_t OW, const int32_t *ys, const int32_t *yn, const float *yw, int64_t ky,
                const int32_t *xs, const int32_t *xn, const float *xw, int64_t kx, float gain, float *out) {
    if (C <= 0 || H <= 0 || W <= 0 || OH <= 0 || OW <= 0 || ky <= 0 || kx <= 0) return 2;
    int interleaved = C > 1 && sc == 1 && sx == C;
    if (!interleaved && sx != 1) return 2;
    int64_t P = interleaved ? C : 1, L = W * P, planes = interleaved ? 1 : C;
    int64_t OHp = (OH + TILE - 1) / TILE * TILE;
    float *T = get_scratch(L * OHp + TILE * L);
    if (!T) return 1;
    float *block = T + L * OHp;
    for (int64_t p = 0; p < planes; p++) {
        rows_pass(src + p * sc, sy, L, OH, OHp, ys, yn, yw, ky, gain, T, block);
        for (int64_t c = 0; c < P; c++)
            columns_pass(T, P, c, OH, OHp, OW, xs, xn, xw, kx, out + (p + c) * OH * OW);
    }
    return 0;
}

/* The probe for resample_taps: `period` impulse trains (row r: ones at inputs j = r, r + period, ...), then
 * `signal` as the last row; (period + 1) x n_in floats. */
void resample_probe(float *probe, const float *signal, int64_t n_in, int64_t period) {
    for (int64_t r = 0; r < period; r++)
        for (int64_t j = 0; j < n_in; j++) probe[r * n_in + j] = j % period == r ? 1.f : 0.f;
    for (int64_t j = 0; j < n_in; j++) probe[period * n_in + j] = signal[j];
}

/* One axis's weights from F.interpolate's response (n_out values per probe row, rows as resample_probe made
 * them): within the window of `period` inputs around output i, lo = ceil((i + 0.5) * ratio - 0.5 - period / 2),
 * each impulse train has exactly one impulse, whose weight is the train's response; `period` is wider than any
 * output's band of inputs. Writes start[i], count[i] and weights[i * period + k] (zero past count[i]). Returns
 * 0; -1 when the weights do not reproduce the response to the signal (the band was wider than `period`, which
 * the caller's choice rules out), -2 when out of memory. */
int resample_taps(const float *response, const float *signal, int64_t n_in, int64_t n_out, int64_t period,
                  double ratio, int32_t *start, int32_t *count, float *weights) {
    float *window = malloc(sizeof(float) * (size_t)period);
    if (!window) return -2;
    int status = 0;
    for (int64_t i = 0; i < n_out && status == 0; i++) {
        int64_t lo = (int64_t)ceil((i + 0.5) * ratio - 0.5 - period / 2.0);
        for (int64_t r = 0; r < period; r++) window[((r - lo) % period + period) % period] = response[r * n_out + i];
        int64_t first = 0, last = -1;
        for (int64_t t = 0; t < period; t++)
            if (window[t] != 0.f) {
                if (last < 0) first = t;
                last = t;
            }
        if (last < 0) {  /* no weight at all (never seen): one zero tap at a valid input */
            lo = lo < 0 ? 0 : (lo >= n_in ? n_in - 1 : lo);
            first = last = 0;
        }
        start[i] = (int32_t)(lo + first);
        count[i] = (int32_t)(last - first + 1);
        if (lo + first < 0 || lo + last >= n_in) {  /* a weight outside the input: the window was too narrow */
            status = -1;
            break;
        }
        double check = 0;
        for (int64_t k = 0; k < period; k++) {
            float w = k < count[i] ? window[first + k] : 0.f;
            weights[i * period + k] = w;
            if (k < count[i]) check += (double)w * signal[start[i] + k];
        }
        if (fabs(check - response[period * n_out + i]) > 1e-5) status = -1;
    }
    free(window);
    return status;
}
