/* The paper recipe's photometric distortions on one float image, in place: torchvision's ColorJitter (brightness,
 * contrast, saturation, in the drawn order), AlexNet's PCA lighting, then Normalize (photometric.py).
 *
 * Written by hand because torchvision applies them as 8-12 separate tensor operations, each a new 3 x H x W tensor
 * and a Python dispatch: 0.6-1 ms an image at 224 on one core, a third of the data path. Here each distortion is
 * one pass over an image that stays in cache. The random draws are not made here: photometric.py takes them from
 * ColorJitter.make_params and Lighting themselves. The arithmetic is torchvision's, in float:
 *
 *   brightness b:  x = clamp(x * b, 0, 1)
 *   contrast c:    x = clamp(x * c + (1 - c) * mean(grey(x)), 0, 1)
 *   saturation s:  x = clamp(x * s + (1 - s) * grey(x), 0, 1),   grey = 0.2989 r + 0.587 g + 0.114 b
 *   lighting:      x_ch += shift[ch];   normalize: x_ch = (x_ch - mean[ch]) / std[ch]
 *
 * x is planar RGB (3 x n floats). order[k]: torchvision's fn_idx (0 brightness, 1 contrast, 2 saturation, 3 hue,
 * which the caller never passes here); a factor below 0 means that distortion is off. shift may be NULL; mean and
 * std both NULL (no normalisation) or both given.
 */
#include <stdint.h>

static float clamp01(float v) {
    v = v < 0.f ? 0.f : v;  /* comparisons, not fminf/fmaxf: those are slow here (resample_kernel.c) */
    return v > 1.f ? 1.f : v;
}

static void brightness(float *restrict x, int64_t n3, float f) {
    for (int64_t i = 0; i < n3; i++) x[i] = clamp01(x[i] * f);
}

/* x = clamp(x * ratio + (1 - ratio) * other) with `other` one value (contrast's mean) */
static void blend_value(float *restrict x, int64_t n3, float ratio, float other) {
    float rest = (1.f - ratio) * other;
    for (int64_t i = 0; i < n3; i++) x[i] = clamp01(x[i] * ratio + rest);
}

/* torchvision's rgb_to_grayscale weights */
static float grey(float r, float g, float b) { return r * 0.2989f + g * 0.587f + b * 0.114f; }

static void saturation(float *restrict r, float *restrict g, float *restrict b, int64_t n, float s) {
    float t = 1.f - s;
    for (int64_t i = 0; i < n; i++) {
        float mix = t * grey(r[i], g[i], b[i]);
        r[i] = clamp01(r[i] * s + mix);
        g[i] = clamp01(g[i] * s + mix);
        b[i] = clamp01(b[i] * s + mix);
    }
}

static float grey_mean(const float *restrict r, const float *restrict g, const float *restrict b, int64_t n) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += grey(r[i], g[i], b[i]);
    return (float)(sum / (double)n);
}

void photometric(float *x, int64_t n, const int64_t *order, float bright, float contrast, float sat,
                 const float *shift, const float *mean, const float *std) {
    if (n <= 0) return;
    float *r = x, *g = x + n, *b = x + 2 * n;
    for (int k = 0; k < 4; k++) {
        if (order[k] == 0 && bright >= 0.f) brightness(x, 3 * n, bright);
        else if (order[k] == 1 && contrast >= 0.f) blend_value(x, 3 * n, contrast, grey_mean(r, g, b, n));
        else if (order[k] == 2 && sat >= 0.f) saturation(r, g, b, n, sat);
    }
    for (int c = 0; c < 3; c++) {
        float *restrict p = x + c * n;
        if (shift) {
            float add = shift[c];
            for (int64_t i = 0; i < n; i++) p[i] += add;
        }
        if (mean && std) {
            float m = mean[c], s = std[c];
            for (int64_t i = 0; i < n; i++) p[i] = (p[i] - m) / s;
        }
    }
}
