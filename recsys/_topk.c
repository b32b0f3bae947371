/* Exact top-k of each row of a score block, seen keys excluded: the compiled selection of
 * recsys/score.py (which also holds the pure-torch selection that gives the same lists).
 *
 * Order: higher score first, NaN above +inf, -0 equal to +0, ties to the lower key index.
 * -inf (seen or blocked keys) is never selected: rows with fewer selectable keys get fewer.
 *
 * Exact mode (fp32 blocks), per row: seen keys set to -inf in place; a lower bound t of the
 * k-th score: the k-th largest of S >= 2k strided group maxima (k distinct groups reach t, so
 * k distinct keys do); one pass that offers the keys >= t (about k of them) to a buffer,
 * compacted to its k best whenever it fills (after which a key must beat the k-th kept one);
 * a sort of the k best. The row is read twice, one SIMD compare per 16 keys each time.
 *
 * Certified mode (fp32 or bf16 blocks, each score within `slack` of its fp32 value, then rounded with
 * relative `roundoff`): the same passes keep every key whose block score reaches the certified
 * cut below the k-th block score (score.py's `certified_cut`), those keys are rescored in fp32
 * from the factors (`rescore`: an order of operations the torch twin repeats exactly) and the
 * k best of the rescored keys are listed. Keys below the cut cannot reach the fp32 top-k.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bumped whenever the calling convention changes: score.py refuses a stale build. */
#define TOPK_ABI 2

/* Wider SIMD where the CPU has it, chosen at load time; plain x86-64 otherwise. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

#define KEY_NEG_INF 0x007FFFFFu /* key_of(-inf) */

/* An order-preserving map of floats to unsigned keys: NaN largest, -0 as +0. */
static inline uint32_t key_of(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits = bits == 0x80000000u ? 0 : bits;
    uint32_t key = bits ^ ((uint32_t)((int32_t)bits >> 31) | 0x80000000u);
    return value != value ? 0xFFFFFFFFu : key;
}

static inline float float_of(uint32_t key) {
    uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Score key above, inverted index below: a larger entry is a better (score, index). */
static inline uint64_t entry_of(uint32_t key, int64_t col) {
    return ((uint64_t)key << 32) | (uint32_t)~(uint32_t)col;
}

static inline void swap64(uint64_t *a, uint64_t *b) {
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

/* Move the entries larger than a[n - 1] (the pivot) to the front, then the pivot after them;
 * returns its position. Branch-free (a Lomuto partition that always swaps): the comparisons
 * of random entries would mispredict half the time. Entries are distinct. */
static inline int64_t partition_desc(uint64_t *a, int64_t n) {
    uint64_t pivot = a[n - 1];
    int64_t store = 0;
    for (int64_t i = 0; i < n - 1; i++) {
        uint64_t value = a[i];
        a[i] = a[store];
        a[store] = value;
        store += value > pivot;
    }
    a[n - 1] = a[store];
    a[store] = pivot;
    return store;
}

/* The median of a[0], a[n / 2], a[n - 1] moved to a[n - 1], as the pivot. */
static inline void median_last(uint64_t *a, int64_t n) {
    uint64_t *x = a, *y = a + n / 2, *z = a + n - 1;
    if (*x > *y) swap64(x, y); /* now *x < *y */
    if (*z > *y) swap64(z, y); /* *y is the largest */
    if (*x > *z) swap64(x, z); /* *z is the median */
}

/* Rearrange a[0..n) so that a[0..m) holds its m largest entries (entries are distinct). */
static void select_top64(uint64_t *a, int64_t n, int64_t m) {
    while (n > 1 && m > 0 && m < n) {
        median_last(a, n);
        int64_t at = partition_desc(a, n);
        if (at + 1 == m || at == m) return;
        if (at + 1 < m) { /* the front (with the pivot) is all in: look right */
            a += at + 1;
            n -= at + 1;
            m -= at + 1;
        } else {
            n = at;
        }
    }
}

/* A lower bound of the m-th largest of keys[0..n) (1 <= m <= n), within 2^12 of it: a
 * bisection on the key between the smallest and largest, counting with SIMD compares (a
 * quickselect of a few hundred keys mispredicts most of its branches). */
SIMD_CLONES
static uint32_t kth_largest32(const uint32_t *keys, int64_t n, int64_t m) {
    uint32_t lo = keys[0], hi = keys[0];
    for (int64_t i = 1; i < n; i++) {
        lo = keys[i] < lo ? keys[i] : lo;
        hi = keys[i] > hi ? keys[i] : hi;
    }
    while (hi - lo > 4096) { /* count(>= lo) >= m; count(>= hi) >= m only when hi == max */
        uint32_t mid = lo + (hi - lo) / 2;
        int64_t count = 0;
        for (int64_t i = 0; i < n; i++) count += keys[i] >= mid;
        if (count >= m) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Sort a[0..n) in decreasing order (distinct entries). */
static void sort_desc64(uint64_t *a, int64_t n) {
    while (n > 16) {
        median_last(a, n);
        int64_t at = partition_desc(a, n);
        /* recurse into the smaller side, loop on the larger: O(log n) stack */
        if (at < n - at - 1) {
            sort_desc64(a, at);
            a += at + 1;
            n -= at + 1;
        } else {
            sort_desc64(a + at + 1, n - at - 1);
            n = at;
        }
    }
    for (int64_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j] < v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

/* Rows are fp32, or bf16 (the upper half of fp32: widening is exact). */
typedef struct {
    const void *at;
    int bf16;
} RowIn;

static inline float value_at(RowIn row, int64_t j) {
    if (!row.bf16) return ((const float *)row.at)[j];
    uint32_t bits = (uint32_t)((const uint16_t *)row.at)[j] << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* groups[g] = max of row[g], row[g + m], row[g + 2m], ... (-inf if empty). NaN is left out:
 * the bound from these maxima then counts fewer keys, and stays a lower bound. */
static void group_maxima_generic(RowIn row, int64_t n, float *groups, int64_t m) {
    for (int64_t g = 0; g < m; g++) groups[g] = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        float value = value_at(row, j), *g = groups + j % m;
        *g = value > *g ? value : *g;
    }
}

typedef struct {
    uint64_t *buffer; /* entries kept so far, capacity `capacity` */
    int64_t capacity, size, k;
    uint64_t bar; /* an entry must be larger than this to be kept */
    float floor;  /* floor_of(bar): the SIMD pre-filter */
    float *groups; /* scratch: group maxima (num_groups) */
    uint32_t *group_keys;
    int64_t num_groups; /* 0: no bound (small catalogue) */
    int certified;      /* keep every key at or above certified_cut(k-th), not just k */
    float slack, roundoff, one_minus_roundoff;
    const float *factors; /* certified mode: (n, dim) fp32, rescored from */
    int64_t dim;
    int out_of_memory;
} Row;

/* The smallest score that can still be kept, as a float for the SIMD pre-filter. Keys are
 * offered in increasing column order, so a key equal to the bar's own key never beats it
 * (its column is larger): the floor is the next key up. Every bar has that form: the bound's
 * (t << 32) - 1 and, after a compaction, the k-th kept entry. */
static inline float floor_of(uint64_t bar) {
    uint32_t key = (uint32_t)(bar >> 32);
    if (key == 0xFFFFFFFFu) return INFINITY; /* k NaNs kept: nothing can beat them */
    return key + 1 <= KEY_NEG_INF ? -FLT_MAX : float_of(key + 1);
}

/* The bar that keeps exactly the keys scoring >= t. */
static inline uint64_t bar_at_least(float t) { return ((uint64_t)key_of(t) << 32) - 1; }

/* Certified mode: if k keys have block scores >= t, the fp32 k-th score is at least
 * t - roundoff |t| / (1 - roundoff) - slack, and a key can reach it only if its block score
 * is at least that - slack: the cut (the same formula, in the same fp32 steps, as score.py). */
static inline float certified_cut(const Row *row, float t) {
    float shift = row->roundoff * fabsf(t);
    shift = shift / row->one_minus_roundoff;
    float cut = t - shift;
    return cut - 2.0f * row->slack;
}

static inline uint64_t kth_entry(const Row *row) { /* after select_top64(.., k) */
    uint64_t kth = row->buffer[0];
    for (int64_t i = 1; i < row->k; i++) kth = row->buffer[i] < kth ? row->buffer[i] : kth;
    return kth;
}

/* Certified mode: keep the entries above the cut of the current k-th; grow if that frees
 * less than half the buffer (massive ties within the cut). */
static void compact_certified(Row *row) {
    select_top64(row->buffer, row->size, row->k);
    float kth = float_of((uint32_t)(kth_entry(row) >> 32));
    uint64_t bar = bar_at_least(certified_cut(row, kth));
    row->bar = bar > row->bar ? bar : row->bar;
    int64_t kept = 0;
    for (int64_t i = 0; i < row->size; i++)
        if (row->buffer[i] > row->bar) row->buffer[kept++] = row->buffer[i];
    row->size = kept;
    row->floor = floor_of(row->bar);
    if (kept * 2 > row->capacity) {
        uint64_t *grown = realloc(row->buffer, 2 * row->capacity * sizeof(uint64_t));
        if (!grown) {
            row->out_of_memory = 1;
            row->size = 0;
            return;
        }
        row->buffer = grown;
        row->capacity *= 2;
    }
}

static inline void keep(Row *row, float value, int64_t col) {
    uint32_t key = key_of(value);
    if (key == KEY_NEG_INF) return;
    uint64_t entry = entry_of(key, col);
    if (entry <= row->bar) return;
    row->buffer[row->size++] = entry;
    if (row->size < row->capacity) return;
    if (row->certified) {
        compact_certified(row);
        return;
    }
    select_top64(row->buffer, row->size, row->k); /* keep the k best; later keys beat the k-th */
    row->size = row->k;
    row->bar = kth_entry(row);
    row->floor = floor_of(row->bar);
}

/* Offer every key of the row that is !(score < floor) (NaN included) to `keep`: most of a
 * row lies below the floor, so one compare per 16 keys, with AVX-512 where the CPU has it. */
static void scan_generic(RowIn row, int64_t n, Row *state) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        int any = 0;
        for (int u = 0; u < 16; u++) any |= !(value_at(row, j + u) < state->floor);
        if (any)
            for (int u = 0; u < 16; u++)
                if (!(value_at(row, j + u) < state->floor)) keep(state, value_at(row, j + u), j + u);
    }
    for (; j < n; j++)
        if (!(value_at(row, j) < state->floor)) keep(state, value_at(row, j), j);
}

/* The fp32 score of one key from the factors, in a fixed order of operations that score.py's
 * `rescore_torch` repeats: lane j (of 16) sums q[i] * k[i] over i = j, j + 16, ... in order,
 * each product and sum rounded to fp32 (built with -ffp-contract=off: no fused multiply-add),
 * then lanes fold in halves: lane[i] += lane[i + w] for w = 8, 4, 2, 1. */
static float rescore_generic(const float *q, const float *k, int64_t dim) {
    float lane[16] = {0};
    for (int64_t i = 0; i < dim; i++) lane[i & 15] = lane[i & 15] + q[i] * k[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) lane[i] = lane[i] + lane[i + w];
    return lane[0];
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 load16(RowIn row, int64_t j) {
    if (!row.bf16) return _mm512_loadu_ps((const float *)row.at + j);
    __m256i half = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row.at + j));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

AVX512 static void scan_avx512(RowIn row, int64_t n, Row *state) {
    __m512 floor = _mm512_set1_ps(state->floor);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 values = load16(row, j);
        __mmask16 pass = _mm512_cmp_ps_mask(values, floor, _CMP_NLT_UQ);
        if (!pass) continue;
        float lane[16];
        _mm512_storeu_ps(lane, values);
        for (uint32_t bits = pass; bits; bits &= bits - 1) {
            int u = __builtin_ctz(bits);
            keep(state, lane[u], j + u);
        }
        floor = _mm512_set1_ps(state->floor); /* raised when the buffer was compacted */
    }
    for (; j < n; j++)
        if (!(value_at(row, j) < state->floor)) keep(state, value_at(row, j), j);
}

/* group_maxima for 16 <= m <= 256 groups (a power of two): 256 keys per step into 16
 * registers, lane p of register v holding group (16 v + p) mod m, folded at the end. */
AVX512 static void group_maxima_avx512(RowIn row, int64_t n, float *groups, int64_t m) {
    if (m < 16 || m > 256) {
        group_maxima_generic(row, n, groups, m);
        return;
    }
    __m512 acc[16];
    for (int v = 0; v < 16; v++) acc[v] = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 256 <= n; j += 256)
        for (int v = 0; v < 16; v++) acc[v] = _mm512_max_ps(load16(row, j + 16 * v), acc[v]);
    int lanes = (int)(m / 16);
    for (int v = lanes; v < 16; v++) acc[v % lanes] = _mm512_max_ps(acc[v], acc[v % lanes]);
    for (int v = 0; v < lanes; v++) _mm512_storeu_ps(groups + 16 * v, acc[v]);
    for (; j < n; j++) { /* j - base is j mod m here, since 256 is a multiple of m */
        float value = value_at(row, j), *g = groups + (j & (m - 1));
        *g = value > *g ? value : *g;
    }
}

AVX512 static float rescore_avx512(const float *q, const float *k, int64_t dim) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= dim; i += 16)
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i)));
    if (i < dim) { /* lanes past the last dimension stay as they are */
        __mmask16 tail = (__mmask16)((1u << (dim - i)) - 1);
        __m512 product = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, q + i),
                                       _mm512_maskz_loadu_ps(tail, k + i));
        acc = _mm512_mask_add_ps(acc, tail, acc, product);
    }
    /* the folds: lanes i + 8, i + 4, i + 2, i + 1 onto lane i (addition commutes exactly) */
    __m256 lo = _mm512_castps512_ps256(acc);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    __m256 eight = _mm256_add_ps(lo, hi);
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    __m128 one = _mm_add_ss(two, _mm_shuffle_ps(two, two, 1));
    return _mm_cvtss_f32(one);
}

static void (*scan)(RowIn, int64_t, Row *) = scan_generic;
static void (*group_maxima)(RowIn, int64_t, float *, int64_t) = group_maxima_generic;
static float (*rescore)(const float *, const float *, int64_t) = rescore_generic;

static void choose_simd(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        scan = scan_avx512;
        group_maxima = group_maxima_avx512;
        rescore = rescore_avx512;
    }
}
#else
static void (*scan)(RowIn, int64_t, Row *) = scan_generic;
static void (*group_maxima)(RowIn, int64_t, float *, int64_t) = group_maxima_generic;
static float (*rescore)(const float *, const float *, int64_t) = rescore_generic;

static void choose_simd(void) {}
#endif

/* One row: fills values[0..k), cols[0..k) and returns how many are valid (<= k), or -1 when
 * memory ran out. Certified mode rescores from `query` (dim,) and `factors` (n, dim). */
static int64_t select_row(RowIn row, int64_t n, Row *state, const float *query, float *values,
                          int32_t *cols) {
    int64_t k = state->k;
    state->size = 0;
    state->bar = 0;
    if (state->num_groups) {
        group_maxima(row, n, state->groups, state->num_groups);
        for (int64_t g = 0; g < state->num_groups; g++)
            state->group_keys[g] = key_of(state->groups[g]);
        uint32_t bound = kth_largest32(state->group_keys, state->num_groups, k);
        if (bound > KEY_NEG_INF)
            state->bar = state->certified ? bar_at_least(certified_cut(state, float_of(bound)))
                                          : ((uint64_t)bound << 32) - 1;
    }
    state->floor = floor_of(state->bar);
    scan(row, n, state);
    if (state->out_of_memory) return -1;
    int64_t size = state->size;
    if (state->certified) {
        if (size > k) { /* the cut of the final k-th block score */
            select_top64(state->buffer, size, k);
            float kth = float_of((uint32_t)(kth_entry(state) >> 32));
            uint64_t bar = bar_at_least(certified_cut(state, kth));
            int64_t kept = 0;
            for (int64_t i = 0; i < size; i++)
                if (state->buffer[i] > bar) state->buffer[kept++] = state->buffer[i];
            size = kept;
        }
        const int64_t ahead = 8; /* the factors of candidate i + ahead are fetched meanwhile */
        for (int64_t i = 0; i < size; i++) {
            if (i + ahead < size) {
                uint32_t later = ~(uint32_t)state->buffer[i + ahead];
                const char *at = (const char *)(state->factors + (int64_t)later * state->dim);
                for (int64_t byte = 0; byte < state->dim * 4; byte += 64) __builtin_prefetch(at + byte);
            }
            uint32_t col = ~(uint32_t)state->buffer[i];
            float exact = rescore(query, state->factors + (int64_t)col * state->dim, state->dim);
            state->buffer[i] = entry_of(key_of(exact), col);
        }
    }
    if (size > k) {
        select_top64(state->buffer, size, k);
        size = k;
    }
    sort_desc64(state->buffer, size);
    for (int64_t i = 0; i < size; i++) {
        values[i] = float_of((uint32_t)(state->buffer[i] >> 32));
        cols[i] = (int32_t)~(uint32_t)state->buffer[i];
    }
    for (int64_t i = size; i < k; i++) {
        values[i] = -INFINITY;
        cols[i] = 0;
    }
    return size;
}

/* What one call selects over; addresses come from score.py, which checks shapes and types. */
typedef struct {
    void *block; /* (rows, stride) float32, or bfloat16 bits when `bf16` */
    int bf16;
    int64_t rows, n, stride, k;
    const int64_t *queries, *indptr; /* queries (rows,); indptr (num_queries + 1,) or NULL */
    const int32_t *indices;          /* the seen CSR's key indices */
    int64_t num_queries;
    const float *slack; /* certified mode: (rows,); NULL in exact mode */
    double roundoff;
    const float *query, *factors; /* certified mode: (rows, dim) and (n, dim) fp32 */
    int64_t dim;
    float *values;
    int32_t *keys;
    int64_t *counts;
} Job;

/* Every row of the job; NULL, or what went wrong. Runs without the GIL. */
static const char *run(const Job *job) {
    int64_t k = job->k, n = job->n;
    if (k == 0) {
        for (int64_t r = 0; r < job->rows; r++) job->counts[r] = 0;
        return NULL;
    }
    /* S >= 2k strided groups: the k-th group maximum is then close to the k-th score (about
     * 1.25 k keys reach it on random rows); below 4 keys per group, keep every key instead */
    int64_t num_groups = 16;
    while (num_groups < 2 * k) num_groups *= 2;
    if (n < 4 * num_groups) num_groups = 0;
    int64_t capacity = 2 * k + 64; /* small: a compaction raises the bar past ties early */
    double u = job->roundoff;
    Row state = {malloc(capacity * sizeof(uint64_t)), capacity, 0, k, 0, 0.0f,
                 malloc((num_groups + 1) * sizeof(float)),
                 malloc((num_groups + 1) * sizeof(uint32_t)), num_groups, job->slack != NULL,
                 0.0f, (float)u, (float)(1.0 - u), job->factors, job->dim, 0};
    const char *error = NULL;
    if (!state.buffer || !state.groups || !state.group_keys) error = "out of memory";
    size_t width = job->bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int64_t r = 0; r < job->rows && !error; r++) {
        void *at = (char *)job->block + r * job->stride * width;
        if (job->indptr) { /* seen keys -> -inf, in place */
            int64_t q = job->queries[r];
            if (q < 0 || q >= job->num_queries) {
                error = "query index out of range of the seen matrix";
                break;
            }
            for (int64_t p = job->indptr[q]; p < job->indptr[q + 1]; p++) {
                int32_t col = job->indices[p];
                if (col < 0 || col >= n) {
                    error = "seen key index out of range";
                    break;
                }
                if (job->bf16) ((uint16_t *)at)[col] = 0xFF80; /* bf16 -inf */
                else ((float *)at)[col] = -INFINITY;
            }
            if (error) break;
        }
        if (state.certified) state.slack = job->slack[r];
        RowIn row = {at, job->bf16};
        int64_t count = select_row(row, n, &state, job->query ? job->query + r * job->dim : NULL,
                                   job->values + r * k, job->keys + r * k);
        if (count < 0) error = "out of memory";
        job->counts[r] = count;
    }
    free(state.buffer), free(state.groups), free(state.group_keys);
    return error;
}

static PyObject *finish(const Job *job) {
    const char *error;
    Py_BEGIN_ALLOW_THREADS;
    error = run(job);
    Py_END_ALLOW_THREADS;
    if (!error) Py_RETURN_NONE;
    PyErr_SetString(strcmp(error, "out of memory") ? PyExc_ValueError : PyExc_MemoryError,
                    error);
    return NULL;
}

static int check_shape(const Job *job) {
    if (job->rows < 0 || job->n < 0 || job->stride < job->n || job->k < 0 || job->k > job->n ||
        job->n > INT32_MAX || job->dim < 0) {
        PyErr_SetString(PyExc_ValueError, "topk: bad shape");
        return 0;
    }
    return 1;
}

/* select(block, rows, n, stride, k, queries, num_queries, indptr, indices, values, keys,
 *        counts): exact mode on an fp32 block, written in place (seen keys -> -inf).
 * Addresses of contiguous buffers: block (rows, stride) float32; queries (rows,) int64;
 * indptr (num_queries + 1,) int64 and indices int32, the seen CSR, or both 0 for none;
 * values (rows, k) float32, keys (rows, k) int32 and counts (rows,) int64 out. */
static PyObject *topk_select(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_ssize_t block, rows, n, stride, k, queries, num_queries, indptr, indices;
    Py_ssize_t values, keys, counts;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnn", &block, &rows, &n, &stride, &k, &queries,
                          &num_queries, &indptr, &indices, &values, &keys, &counts))
        return NULL;
    Job job = {(void *)block, 0, rows, n, stride, k, (const int64_t *)queries,
               (const int64_t *)indptr, (const int32_t *)indices, num_queries, NULL, 0.0,
               NULL, NULL, 0, (float *)values, (int32_t *)keys, (int64_t *)counts};
    return check_shape(&job) ? finish(&job) : NULL;
}

/* select_certified(block, bf16, rows, n, stride, k, queries, num_queries, indptr, indices,
 *                  slack, roundoff, query, factors, dim, values, keys, counts): certified
 * mode. block is float32 or (bf16 = 1) bfloat16; slack (rows,) float32; roundoff the block's
 * relative rounding; query (rows, dim) and factors (n, dim) the fp32 factors to rescore. */
static PyObject *topk_select_certified(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_ssize_t block, bf16, rows, n, stride, k, queries, num_queries, indptr, indices, slack;
    Py_ssize_t query, factors, dim, values, keys, counts;
    double roundoff;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnndnnnnnn", &block, &bf16, &rows, &n, &stride, &k,
                          &queries, &num_queries, &indptr, &indices, &slack, &roundoff, &query,
                          &factors, &dim, &values, &keys, &counts))
        return NULL;
    Job job = {(void *)block, bf16 != 0, rows, n, stride, k, (const int64_t *)queries,
               (const int64_t *)indptr, (const int32_t *)indices, num_queries,
               (const float *)slack, roundoff, (const float *)query, (const float *)factors,
               dim, (float *)values, (int32_t *)keys, (int64_t *)counts};
    if (!slack || !query || !factors || !(roundoff >= 0.0 && roundoff < 1.0)) {
        PyErr_SetString(PyExc_ValueError, "topk: certified mode needs slack, factors, roundoff");
        return NULL;
    }
    return check_shape(&job) ? finish(&job) : NULL;
}

static PyMethodDef methods[] = {
    {"select", topk_select, METH_VARARGS, "Exact top-k of each row of an fp32 score block."},
    {"select_certified", topk_select_certified, METH_VARARGS,
     "The fp32 top-k of each row of an approximate score block, rescored from the factors."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_topk", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__topk(void) {
    choose_simd();
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", TOPK_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
