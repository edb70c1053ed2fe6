/* Fused float32 pass for wassnet's TiledCost (compiled on first use, see native_tiles.py).
 *
 * For rows x_i and columns y_j given as augmented float32 vectors whose dot product is
 * the (lowered) squared distance, and a float32 potential p:
 *
 *     out[i, b] = min over j in block b of  sqrt(max(0, <xa_i, ya_j>)) + p_j
 *
 * computed in IEEE float32 with round-to-nearest: the dot product in any order, with or
 * without fused multiply-adds; the square root and the addition correctly rounded
 * (this file must not be compiled with -ffast-math, which would allow approximate
 * square roots and flush subnormals). TiledCost's certified margin covers exactly
 * these roundings, and TiledCost checks the first tile against float64 before it
 * trusts this code.
 *
 * Layout: xa [rows][D] row-major; the columns packed in panels of 16,
 * ya [cols / 16][D][16], so that one panel is contiguous (no cache-set conflicts);
 * p [cols]; out [rows][cols / B]. B is a multiple of 16 dividing cols. Rows are split
 * over `threads` POSIX threads. Return codes: 0 success, 1 bad shape, 2 no thread.
 *
 * block_values: the same values, not reduced, for chosen (row, block) pairs:
 *
 *     out[k, c] = sqrt(max(0, <xa_{rows[k]}, ya_j>)) + p_j,   j = blocks[k] * B + c
 */
#include <math.h>
#include <pthread.h>
#include <string.h>
#if defined(__AVX__) || defined(__SSE__)
#include <immintrin.h>
#endif

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 r;
    memcpy(&r, p, sizeof r);
    return r;
}

#define ROWS 6 /* rows per micro-tile: 12 accumulators of 8 lanes, 2 column vectors */

typedef struct {
    int row0, row1, cols, D, B;
    const float *xa, *ya, *p;
    float *out;
    const long long *rows, *blocks; /* block_values only: its pairs row0..row1 */
} Job;

/* six rows (the last group may repeat its last row) against one panel of 16 columns */
static inline void micro(const float *x[ROWS], const float *panel, int D, v8 a0[ROWS],
                         v8 a1[ROWS]) {
    for (int r = 0; r < ROWS; r++) a0[r] = a1[r] = (v8){0};
    for (int k = 0; k < D; k++) {
        v8 y0 = load8(panel + 16 * k), y1 = load8(panel + 16 * k + 8);
#if defined(__AVX__)
        __asm__("" : "+x"(y0), "+x"(y1)); /* keep both in registers: fewer loads */
#endif
        for (int r = 0; r < ROWS; r++) {
            float xv = x[r][k];
            a0[r] += xv * y0;
            a1[r] += xv * y1;
        }
    }
}

/* best[r] = min(best[r], sqrt(max(a, 0)) + p) lane by lane, for both column vectors */
static inline void fold(v8 a0[ROWS], v8 a1[ROWS], const float *p, v8 best[ROWS]) {
    v8 p0 = load8(p), p1 = load8(p + 8);
    for (int r = 0; r < ROWS; r++) {
#if defined(__AVX__)
        __m256 z = _mm256_setzero_ps();
        __m256 d0 = _mm256_add_ps(_mm256_sqrt_ps(_mm256_max_ps((__m256)a0[r], z)), (__m256)p0);
        __m256 d1 = _mm256_add_ps(_mm256_sqrt_ps(_mm256_max_ps((__m256)a1[r], z)), (__m256)p1);
        best[r] = (v8)_mm256_min_ps(_mm256_min_ps(d0, d1), (__m256)best[r]);
#else
        for (int l = 0; l < 8; l++) {
            float s0 = a0[r][l] > 0.0f ? a0[r][l] : 0.0f;
            float s1 = a1[r][l] > 0.0f ? a1[r][l] : 0.0f;
            float d0 = sqrtf(s0) + p0[l], d1 = sqrtf(s1) + p1[l];
            float m = d0 < d1 ? d0 : d1;
            best[r][l] = m < best[r][l] ? m : best[r][l];
        }
#endif
    }
}

/* columns per chunk: a chunk of panels (about 128 KiB) stays in the core's L2 cache
 * while every row of the job passes over it */
static int chunk_columns(int D, int cols) {
    int ch = (int)((128 * 1024 / (4 * (size_t)D)) / 16 * 16);
    if (ch < 16) ch = 16;
    return ch < cols ? ch : cols;
}

static void *run(void *arg) {
    const Job *job = (const Job *)arg;
    const int D = job->D, B = job->B, nb = job->cols / job->B;
    for (int i = job->row0; i < job->row1; i++)
        for (int b = 0; b < nb; b++) job->out[(size_t)i * nb + b] = INFINITY;
    const int ch = chunk_columns(D, job->cols);
    for (int c0 = 0; c0 < job->cols; c0 += ch) {
        int c1 = c0 + ch < job->cols ? c0 + ch : job->cols;
        for (int i0 = job->row0; i0 < job->row1; i0 += ROWS) {
            const float *x[ROWS];
            int rows = job->row1 - i0 < ROWS ? job->row1 - i0 : ROWS;
            for (int r = 0; r < ROWS; r++)
                x[r] = job->xa + (size_t)(i0 + (r < rows ? r : rows - 1)) * D;
            for (int j = c0; j < c1;) { /* the part of block j / B inside the chunk */
                int b = j / B, end = (b + 1) * B < c1 ? (b + 1) * B : c1;
                v8 best[ROWS], a0[ROWS], a1[ROWS];
                for (int r = 0; r < ROWS; r++) best[r] = (v8){0} + INFINITY;
                for (; j < end; j += 16) {
                    micro(x, job->ya + (size_t)(j / 16) * D * 16, D, a0, a1);
                    fold(a0, a1, job->p + j, best);
                }
                for (int r = 0; r < rows; r++) {
                    float v = job->out[(size_t)(i0 + r) * nb + b];
                    for (int l = 0; l < 8; l++) v = best[r][l] < v ? best[r][l] : v;
                    job->out[(size_t)(i0 + r) * nb + b] = v;
                }
            }
        }
    }
    return NULL;
}

static void *run_pairs(void *arg) {
    const Job *job = (const Job *)arg;
    const int D = job->D, B = job->B;
    for (int k = job->row0; k < job->row1; k++) {
        const float *x = job->xa + (size_t)job->rows[k] * D;
        float *out = job->out + (size_t)k * B;
        for (int j0 = (int)job->blocks[k] * B, c = 0; c < B; j0 += 16, c += 16) {
            const float *panel = job->ya + (size_t)(j0 / 16) * D * 16;
            v8 a0 = (v8){0}, a1 = (v8){0};
            for (int q = 0; q < D; q++) {
                a0 += x[q] * load8(panel + 16 * q);
                a1 += x[q] * load8(panel + 16 * q + 8);
            }
            for (int l = 0; l < 8; l++) {
                float s0 = a0[l] > 0.0f ? a0[l] : 0.0f, s1 = a1[l] > 0.0f ? a1[l] : 0.0f;
                out[c + l] = sqrtf(s0) + job->p[j0 + l];
                out[c + 8 + l] = sqrtf(s1) + job->p[j0 + 8 + l];
            }
        }
    }
    return NULL;
}

/* subnormals kept (no flush-to-zero, no denormals-are-zero) while fn runs: the margin
 * charges an underflowing product 2^-150, which a flushed one could exceed */
typedef struct {
    void *(*fn)(void *);
    Job *job;
} Call;

static void *with_subnormals(void *arg) {
    const Call *call = (const Call *)arg;
#if defined(__SSE__)
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr & ~0x8040u); /* clear FTZ (bit 15) and DAZ (bit 6) */
#endif
    call->fn(call->job);
#if defined(__SSE__)
    _mm_setcsr(csr);
#endif
    return NULL;
}

/* run jobs[0..threads) on threads (the calling one included) */
static int fan_out(void *(*work)(void *), Job *jobs, int threads) {
    Call calls[64];
    for (int t = 0; t < threads; t++) calls[t] = (Call){work, &jobs[t]};
    void *(*fn)(void *) = with_subnormals;
    pthread_t tid[64];
    int started = 0, status = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, fn, &calls[t]) != 0) {
            status = 2;
            break;
        }
        started = t;
    }
    fn(&calls[0]);
    for (int t = 1; t <= started; t++) pthread_join(tid[t], NULL);
    if (status) /* a thread could not start: do its share here */
        for (int t = started + 1; t < threads; t++) fn(&calls[t]);
    return 0;
}

static int clamp_threads(int threads, long long work) {
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (threads > work) threads = work > 0 ? (int)work : 1;
    return threads;
}

int block_min(int n, int cols, int D, const float *xa, const float *ya, const float *p, int B,
              float *out, int threads) {
    if (n < 0 || D < 1 || B < 16 || B % 16 || cols % B) return 1;
    int groups = (n + ROWS - 1) / ROWS;
    threads = clamp_threads(threads, groups);
    Job jobs[64];
    for (int t = 0; t < threads; t++) {
        int g0 = (int)((long long)groups * t / threads);
        int g1 = (int)((long long)groups * (t + 1) / threads);
        int r1 = g1 * ROWS < n ? g1 * ROWS : n;
        jobs[t] = (Job){g0 * ROWS, r1, cols, D, B, xa, ya, p, out, NULL, NULL};
    }
    return fan_out(run, jobs, threads);
}

int block_values(int pairs, const long long *rows, const long long *blocks, int cols, int D,
                 const float *xa, const float *ya, const float *p, int B, float *out,
                 int threads) {
    if (pairs < 0 || D < 1 || B < 16 || B % 16 || cols % B) return 1;
    for (int k = 0; k < pairs; k++)
        if (blocks[k] < 0 || blocks[k] >= cols / B || rows[k] < 0) return 1;
    threads = clamp_threads(threads, pairs / 256 + 1);
    Job jobs[64];
    for (int t = 0; t < threads; t++) {
        int k0 = (int)((long long)pairs * t / threads);
        int k1 = (int)((long long)pairs * (t + 1) / threads);
        jobs[t] = (Job){k0, k1, cols, D, B, xa, ya, p, out, rows, blocks};
    }
    return fan_out(run_pairs, jobs, threads);
}

#ifdef WASSNET_BUILD_KEY
/* Only when setup.py builds this file at install time, as the extension module
 * wassnet.ot._tiles so that the wheel ships it compiled: wassnet loads it with ctypes
 * (wassnet/ot/cbuild.py), which first checks the key (source, flags, CPU) it was built
 * with. Importing the module gives an empty module. */
#include <Python.h>
const char *wassnet_build_key(void) { return WASSNET_BUILD_KEY; }
static struct PyModuleDef wassnet_module = {PyModuleDef_HEAD_INIT, "_tiles", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__tiles(void) { return PyModule_Create(&wassnet_module); }
#endif
