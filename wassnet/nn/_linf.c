/* l-inf-distance neurons in float32 (compiled on first use, see wassnet/nn/linf.py).
 *
 * For rows x_b (B x I) and weight rows w_o (O x I), I a multiple of 16:
 *
 *   linf_max:  out[b, o] = max_i |x_bi - w_oi|, and where arg != NULL the first index
 *              i attaining it (the subgradient's support);
 *   lp_norm:   out[b, o] = m (sum_i (|x_bi - w_oi| / m)^p)^(1/p) with m = out of
 *              linf_max (0 where m = 0) and p = 2^k, k >= 1: the powers by k squarings,
 *              the sum scaled by the maximum so that nothing overflows;
 *   lp_grad:   the backward of lp_norm for a gradient g[b, o] of the output:
 *              t = g (|d| / N)^(p-1) sign(d) with d = x_bi - w_oi, N = out[b, o];
 *              gx[b, i] = sum_o t,  gw[o, i] = -sum_b t.
 *
 * The maximum is exact (a subtraction, correctly rounded, its absolute value and
 * comparisons); the argmax is found again with the same float32 operations, so it
 * points at an element equal to the maximum. Rows are split over POSIX threads.
 * Return codes: 0 success, 1 bad shape, 3 out of memory.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif

#define LANES 16 /* I is padded to a multiple of this by the caller */

#if defined(__AVX512F__)
typedef __m512 vf;
#define VL 16
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vsub _mm512_sub_ps
#define vadd _mm512_add_ps
#define vmul _mm512_mul_ps
#define vmax _mm512_max_ps
#define vabs _mm512_abs_ps
#define vset1 _mm512_set1_ps
#define vzero _mm512_setzero_ps
#elif defined(__AVX2__)
typedef __m256 vf;
#define VL 8
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vsub _mm256_sub_ps
#define vadd _mm256_add_ps
#define vmul _mm256_mul_ps
#define vmax _mm256_max_ps
#define vabs(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (a))
#define vset1 _mm256_set1_ps
#define vzero _mm256_setzero_ps
#else
typedef float vf;
#define VL 1
#define vload(p) (*(p))
#define vstore(p, a) (*(p) = (a))
#define vsub(a, b) ((a) - (b))
#define vadd(a, b) ((a) + (b))
#define vmul(a, b) ((a) * (b))
#define vmax(a, b) ((a) > (b) ? (a) : (b))
#define vabs(a) fabsf(a)
#define vset1(a) (a)
#define vzero() 0.0f
#endif

#define RB 4 /* rows of x per micro-tile */
#define RO 4 /* rows of w per micro-tile */

typedef struct {
    int b0, b1, O, I, k;
    const float *x, *w, *g, *norm;
    float *out, *gx, *gw;
    long long *arg;
} Job;

static float hmax(vf a) {
    float lanes[VL];
    vstore(lanes, a);
    float m = lanes[0];
    for (int l = 1; l < VL; l++) m = lanes[l] > m ? lanes[l] : m;
    return m;
}

static float hsum(vf a) {
    float lanes[VL], s = 0.0f;
    vstore(lanes, a);
    for (int l = 0; l < VL; l++) s += lanes[l];
    return s;
}

/* the first i with |x_i - w_i| == m (m is one of these values), a vector at a time */
static long long first_arg(const float *x, const float *w, int I, float m) {
#if defined(__AVX512F__)
    __m512 mv = _mm512_set1_ps(m);
    for (int i = 0; i < I; i += 16) {
        __mmask16 hit = _mm512_cmp_ps_mask(vabs(vsub(vload(x + i), vload(w + i))), mv, _CMP_EQ_OQ);
        if (hit) return i + __builtin_ctz((unsigned)hit);
    }
#elif defined(__AVX2__)
    __m256 mv = _mm256_set1_ps(m);
    for (int i = 0; i < I; i += 8) {
        int hit = _mm256_movemask_ps(_mm256_cmp_ps(vabs(vsub(vload(x + i), vload(w + i))), mv, _CMP_EQ_OQ));
        if (hit) return i + __builtin_ctz((unsigned)hit);
    }
#else
    for (int i = 0; i < I; i++)
        if (fabsf(x[i] - w[i]) == m) return i;
#endif
    return 0;
}

static void *max_rows(void *arg) {
    const Job *j = (const Job *)arg;
    const int O = j->O, I = j->I;
    for (int b = j->b0; b < j->b1; b += RB) {
        const float *xr[RB];
        for (int r = 0; r < RB; r++) xr[r] = j->x + (long long)(b + r < j->b1 ? b + r : j->b1 - 1) * I;
        for (int o = 0; o < O; o += RO) {
            const float *wr[RO];
            for (int q = 0; q < RO; q++) wr[q] = j->w + (long long)(o + q < O ? o + q : O - 1) * I;
            vf acc[RB][RO];
            for (int r = 0; r < RB; r++)
                for (int q = 0; q < RO; q++) acc[r][q] = vzero();
            for (int i = 0; i < I; i += VL) {
                vf xv[RB];
                for (int r = 0; r < RB; r++) xv[r] = vload(xr[r] + i);
                for (int q = 0; q < RO; q++) {
                    vf wv = vload(wr[q] + i);
                    for (int r = 0; r < RB; r++) acc[r][q] = vmax(acc[r][q], vabs(vsub(xv[r], wv)));
                }
            }
            for (int r = 0; r < RB && b + r < j->b1; r++)
                for (int q = 0; q < RO && o + q < O; q++) {
                    float m = hmax(acc[r][q]);
                    long long at = (long long)(b + r) * O + o + q;
                    j->out[at] = m;
                    if (j->arg) j->arg[at] = first_arg(xr[r], wr[q], I, m);
                }
        }
    }
    return NULL;
}

/* r^(2^k) and, where odd != NULL, r^(2^k - 1) = r r^2 r^4 ... r^(2^(k-1)) */
static inline vf powers(vf r, int k, vf *odd) {
    vf prod = r;
    for (int s = 1; s < k; s++) {
        r = vmul(r, r);
        prod = vmul(prod, r);
    }
    if (odd) *odd = prod;
    return vmul(r, r);
}

static void *norm_rows(void *arg) {
    const Job *j = (const Job *)arg;
    const int O = j->O, I = j->I, k = j->k;
    const float p = (float)(1 << k);
    for (int b = j->b0; b < j->b1; b++) {
        const float *xr = j->x + (long long)b * I;
        for (int o = 0; o < O; o++) {
            float m = j->out[(long long)b * O + o];
            if (m == 0.0f) continue;
            const float *wr = j->w + (long long)o * I;
            vf inv = vset1(1.0f / m), sum = vzero();
            for (int i = 0; i < I; i += VL)
                sum = vadd(sum, powers(vmul(vabs(vsub(vload(xr + i), vload(wr + i))), inv), k, NULL));
            j->out[(long long)b * O + o] = m * powf(hsum(sum), 1.0f / p);
        }
    }
    return NULL;
}

#if defined(__AVX512F__)
static inline vf vcopysign(vf mag, vf sign) {
    __m512i s = _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), s));
}
#elif defined(__AVX2__)
static inline vf vcopysign(vf mag, vf sign) {
    return _mm256_or_ps(mag, _mm256_and_ps(sign, _mm256_set1_ps(-0.0f)));
}
#else
static inline vf vcopysign(vf mag, vf sign) { return copysignf(mag, sign); }
#endif

static void *grad_rows(void *arg) {
    const Job *j = (const Job *)arg;
    const int O = j->O, I = j->I, k = j->k;
    for (int b = j->b0; b < j->b1; b++) {
        const float *xr = j->x + (long long)b * I;
        float *gxr = j->gx + (long long)b * I;
        for (int o = 0; o < O; o++) {
            float n = j->norm[(long long)b * O + o], g = j->g[(long long)b * O + o];
            if (n == 0.0f || g == 0.0f) continue;
            const float *wr = j->w + (long long)o * I;
            float *gwr = j->gw + (long long)o * I;
            vf inv = vset1(1.0f / n), gv = vset1(g);
            for (int i = 0; i < I; i += VL) {
                vf d = vsub(vload(xr + i), vload(wr + i)), odd;
                powers(vmul(vabs(d), inv), k, &odd);
                vf t = vmul(gv, vcopysign(odd, d));
                vstore(gxr + i, vadd(vload(gxr + i), t));
                vstore(gwr + i, vsub(vload(gwr + i), t));
            }
        }
    }
    return NULL;
}

/* the powers r^(2^k) of ratios r < 1 underflow: flush subnormals to zero while a power job
 * (k > 0) runs; the maximum (k = 0) keeps them, it is exact
 * (they are below 2^-126 relative to a sum >= 1, and subnormal arithmetic is ~100x slower) */
typedef struct {
    void *(*work)(void *);
    Job *job;
} Call;

static int fan_calls(Call *calls, int threads);

static void *flushing(void *arg) {
    const Call *call = (const Call *)arg;
#if defined(__SSE__)
    unsigned int csr = _mm_getcsr();
    if (call->job->k) _mm_setcsr(csr | 0x8040u); /* FTZ (bit 15), DAZ (bit 6): powers only */
#endif
    call->work(call->job);
#if defined(__SSE__)
    _mm_setcsr(csr);
#endif
    return NULL;
}

static int fan_out(void *(*work)(void *), Job *jobs, int threads) {
    Call calls[64];
    for (int t = 0; t < threads; t++) calls[t] = (Call){work, &jobs[t]};
    return fan_calls(calls, threads);
}

static int fan_calls(Call *calls, int threads) {
    pthread_t tid[64];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, flushing, &calls[t]) != 0) break;
        started = t;
    }
    flushing(&calls[0]);
    for (int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    for (int t = started + 1; t < threads; t++) flushing(&calls[t]); /* threads that did not start */
    return 0;
}

static int split(Job *jobs, Job base, int B, int threads, int step) {
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    int groups = (B + step - 1) / step;
    if (threads > groups) threads = groups > 0 ? groups : 1;
    for (int t = 0; t < threads; t++) {
        jobs[t] = base;
        int g0 = (int)((long long)groups * t / threads), g1 = (int)((long long)groups * (t + 1) / threads);
        jobs[t].b0 = g0 * step;
        jobs[t].b1 = g1 * step < B ? g1 * step : B;
    }
    return threads;
}

int linf_max(int B, int O, int I, const float *x, const float *w, float *out, long long *arg,
             int threads) {
    if (B < 0 || O < 1 || I < LANES || I % LANES) return 1;
    Job jobs[64], base = {0, 0, O, I, 0, x, w, NULL, NULL, out, NULL, NULL, arg};
    threads = split(jobs, base, B, threads, RB);
    return fan_out(max_rows, jobs, threads);
}

int lp_norm(int B, int O, int I, int k, const float *x, const float *w, float *out, int threads) {
    if (k < 1 || k > 30) return 1;
    int status = linf_max(B, O, I, x, w, out, NULL, threads);
    if (status) return status;
    Job jobs[64], base = {0, 0, O, I, k, x, w, NULL, NULL, out, NULL, NULL, NULL};
    threads = split(jobs, base, B, threads, 1);
    return fan_out(norm_rows, jobs, threads);
}

/* gx [B][I] and gw [O][I] are overwritten */
int lp_grad(int B, int O, int I, int k, const float *x, const float *w, const float *norm,
            const float *g, float *gx, float *gw, int threads) {
    if (B < 0 || O < 1 || I < LANES || I % LANES || k < 1 || k > 30) return 1;
    Job jobs[64], base = {0, 0, O, I, k, x, w, g, norm, NULL, gx, gw, NULL};
    threads = split(jobs, base, B, threads, 1);
    size_t size = (size_t)O * I;
    float *extra = NULL;
    if (threads > 1) {
        extra = (float *)calloc(size * (threads - 1), sizeof(float));
        if (!extra) return 3;
    }
    memset(gx, 0, sizeof(float) * (size_t)B * I);
    memset(gw, 0, sizeof(float) * size);
    for (int t = 1; t < threads; t++) jobs[t].gw = extra + size * (t - 1);
    fan_out(grad_rows, jobs, threads);
    for (int t = 1; t < threads; t++)
        for (size_t e = 0; e < size; e++) gw[e] += extra[size * (t - 1) + e];
    free(extra);
    return 0;
}

#ifdef WASSNET_BUILD_KEY
/* Only when setup.py builds this file at install time, as the extension module
 * wassnet.nn._linf so that the wheel ships it compiled: wassnet loads it with ctypes
 * (wassnet/ot/cbuild.py), which first checks the key (source, flags, CPU) it was built
 * with. Importing the module gives an empty module. */
#include <Python.h>
const char *wassnet_build_key(void) { return WASSNET_BUILD_KEY; }
static struct PyModuleDef wassnet_module = {PyModuleDef_HEAD_INIT, "_linf", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__linf(void) { return PyModule_Create(&wassnet_module); }
#endif
