/* GPT-2's tanh GELU on float32, one pass over the activations forward and one backward (sfbench/tasks/gpt2_fast.py).

   gelu(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e),  u = sqrt(2/pi) (x + 0.044715 x^3),  e = exp(-2u)
   gelu'(x) = s (1 + x 2u' e s),  s = 1 / (1 + e),  2u' = 2 sqrt(2/pi) (1 + 3 0.044715 x^2)

   The backward takes 1 - s as e s, not 1 - s, so it keeps its precision where s rounds to 1 (x > 4).
   exp is Cephes' single-precision scheme (range reduction by ln 2 in two parts, a degree-7 polynomial, the exponent
   written into the bits), branch-free so that the compiler vectorises the loops; about 1 ulp.

   Built and loaded by sfbench/tasks/native.py with the C compiler found at run time. The loops run in parallel
   through OpenMP when it was built against the OpenMP runtime PyTorch itself loaded (one thread pool, no second set
   of threads fighting PyTorch's spinning workers for the cores); `threads` is torch.get_num_threads(). */

#include <stdint.h>
#include <string.h>

#define K2 1.5957691216057308f                      /* 2 sqrt(2/pi) */
#define K2A (1.5957691216057308f * 0.044715f)       /* 2 sqrt(2/pi) 0.044715 */
#define BLOCK 16384L                                /* elements per work item (64 KiB) */

/* exp(w) for w clamped to [-87.3, hi]: hi = 89 lets w > 88.7 give +inf (the forward's x -> -inf limit),
   hi = 88.3 keeps the result finite (the backward's e s). */
static inline float exp_clamped(float w, float hi) {
    w = w > -87.3f ? w : -87.3f;        /* NaN goes to -87.3 here; x itself carries the NaN through */
    w = w < hi ? w : hi;
    float n = (w * 1.44269504088896341f + 12582912.0f) - 12582912.0f;     /* round(w / ln 2) */
    float r = w - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static void forward_range(const float *restrict x, float *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float e = exp_clamped(-v * (K2 + K2A * v * v), 89.0f);
        y[i] = v / (1.0f + e);
    }
}

static void backward_range(const float *restrict g, const float *restrict x, float *restrict dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], w = v * v;
        float e = exp_clamped(-v * (K2 + K2A * w), 88.3f);
        float s = 1.0f / (1.0f + e);
        float d = v * (K2 + 3.0f * K2A * w);
        dx[i] = g[i] * (s * (1.0f + d * (e * s)));
    }
}

/* kind 0: out = gelu(a); kind 1: out = a * gelu'(b). Returns the number of threads asked for. */
int sfbench_gelu_tanh(int kind, const float *a, const float *b, float *out, int64_t n, int threads) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    if (threads < 1) threads = 1;
    if (blocks < threads) threads = blocks > 0 ? (int)blocks : 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t k = 0; k < blocks; k++) {
        int64_t start = k * BLOCK, len = n - start < BLOCK ? n - start : BLOCK;
        if (kind == 0)
            forward_range(a + start, out + start, len);
        else
            backward_range(a + start, b + start, out + start, len);
    }
    return threads;
}
