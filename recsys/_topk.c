/* Exact top-k of each row of an fp32 score block, seen keys excluded: the compiled selection
 * of recsys/score.py (which also holds the pure-torch selection that gives the same lists).
 *
 * Order: higher score first, NaN above +inf, -0 equal to +0, ties to the lower key index.
 * -inf (seen or blocked keys) is never selected: rows with fewer selectable keys get fewer.
 *
 * Per row: seen keys set to -inf in place; a lower bound t of the k-th score: the k-th
 * largest of S >= 2k strided group maxima (k distinct groups reach t, so k distinct keys do);
 * one pass that offers the keys >= t (about k of them) to a buffer, compacted to its k best
 * whenever it fills (after which a key must beat the k-th kept one); a sort of the k best.
 * The row is read twice, one SIMD compare per 16 keys each time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bumped whenever the calling convention changes: score.py refuses a stale build. */
#define TOPK_ABI 1

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

/* Rearrange a[0..n) so that a[0..m) holds its m largest entries (entries are distinct). */
static void select_top64(uint64_t *a, int64_t n, int64_t m) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint64_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi], pivot;
        if (x < y) pivot = y < z ? y : (x < z ? z : x);
        else pivot = x < z ? x : (y < z ? z : y);
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) swap64(&a[i++], &a[j--]);
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else return;
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
    while (n > 24) {
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1], pivot;
        if (x < y) pivot = y < z ? y : (x < z ? z : x);
        else pivot = x < z ? x : (y < z ? z : y);
        int64_t i = 0, j = n - 1;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) swap64(&a[i++], &a[j--]);
        }
        /* recurse into the smaller side, loop on the larger: O(log n) stack */
        if (j + 1 < n - i) {
            sort_desc64(a, j + 1);
            a += i;
            n -= i;
        } else {
            sort_desc64(a + i, n - i);
            n = j + 1;
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

/* groups[g] = max of row[g], row[g + m], row[g + 2m], ... (-inf if empty). NaN is left out:
 * the bound from these maxima then counts fewer keys, and stays a lower bound. */
static void group_maxima_generic(const float *row, int64_t n, float *groups, int64_t m) {
    for (int64_t g = 0; g < m; g++) groups[g] = -INFINITY;
    int64_t base = 0;
    for (; base + m <= n; base += m)
        for (int64_t g = 0; g < m; g++) groups[g] = row[base + g] > groups[g] ? row[base + g] : groups[g];
    for (int64_t g = 0; base + g < n; g++)
        groups[g] = row[base + g] > groups[g] ? row[base + g] : groups[g];
}

typedef struct {
    uint64_t *buffer; /* entries kept so far, capacity `capacity` */
    int64_t capacity, size, k;
    uint64_t bar; /* an entry must be larger than this to be kept */
    float floor;  /* floor_of(bar): the SIMD pre-filter */
    float *groups; /* scratch: group maxima (num_groups) */
    uint32_t *group_keys;
    int64_t num_groups; /* 0: no bound (small catalogue) */
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

static inline void keep(Row *row, float value, int64_t col) {
    uint32_t key = key_of(value);
    if (key == KEY_NEG_INF) return;
    uint64_t entry = entry_of(key, col);
    if (entry <= row->bar) return;
    row->buffer[row->size++] = entry;
    if (row->size == row->capacity) { /* keep the k best; later keys must beat the k-th */
        select_top64(row->buffer, row->size, row->k);
        row->size = row->k;
        uint64_t kth = row->buffer[0];
        for (int64_t i = 1; i < row->k; i++) kth = row->buffer[i] < kth ? row->buffer[i] : kth;
        row->bar = kth;
        row->floor = floor_of(kth);
    }
}

/* Offer every key of the row that is !(score < floor) (NaN included) to `keep`: most of a
 * row lies below the floor, so one compare per 16 keys, with AVX-512 where the CPU has it. */
static void scan_generic(const float *row, int64_t n, Row *state) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        int any = 0;
        for (int u = 0; u < 16; u++) any |= !(row[j + u] < state->floor);
        if (any)
            for (int u = 0; u < 16; u++)
                if (!(row[j + u] < state->floor)) keep(state, row[j + u], j + u);
    }
    for (; j < n; j++)
        if (!(row[j] < state->floor)) keep(state, row[j], j);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static void scan_avx512(const float *row, int64_t n,
                                                           Row *state) {
    __m512 floor = _mm512_set1_ps(state->floor);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __mmask16 pass = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j), floor, _CMP_NLT_UQ);
        if (!pass) continue;
        for (uint32_t bits = pass; bits; bits &= bits - 1) {
            int u = __builtin_ctz(bits);
            keep(state, row[j + u], j + u);
        }
        floor = _mm512_set1_ps(state->floor); /* raised when the buffer was compacted */
    }
    for (; j < n; j++)
        if (!(row[j] < state->floor)) keep(state, row[j], j);
}

/* group_maxima for 16 <= m <= 256 groups (a power of two): 256 keys per step into 16
 * registers, lane p of register v holding group (16 v + p) mod m, folded at the end. */
__attribute__((target("avx512f"))) static void group_maxima_avx512(const float *row, int64_t n,
                                                                   float *groups, int64_t m) {
    if (m < 16 || m > 256) {
        group_maxima_generic(row, n, groups, m);
        return;
    }
    __m512 acc[16];
    for (int v = 0; v < 16; v++) acc[v] = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 256 <= n; j += 256)
        for (int v = 0; v < 16; v++) acc[v] = _mm512_max_ps(_mm512_loadu_ps(row + j + 16 * v), acc[v]);
    int lanes = (int)(m / 16);
    for (int v = lanes; v < 16; v++) acc[v % lanes] = _mm512_max_ps(acc[v], acc[v % lanes]);
    for (int v = 0; v < lanes; v++) _mm512_storeu_ps(groups + 16 * v, acc[v]);
    for (; j < n; j++) { /* j - base is j mod m here, since 256 is a multiple of m */
        float *g = groups + (j & (m - 1));
        *g = row[j] > *g ? row[j] : *g;
    }
}

static void (*scan)(const float *, int64_t, Row *) = scan_generic;
static void (*group_maxima)(const float *, int64_t, float *, int64_t) = group_maxima_generic;

static void choose_simd(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        scan = scan_avx512;
        group_maxima = group_maxima_avx512;
    }
}
#else
static void (*scan)(const float *, int64_t, Row *) = scan_generic;
static void (*group_maxima)(const float *, int64_t, float *, int64_t) = group_maxima_generic;

static void choose_simd(void) {}
#endif

/* One row: fills values[0..k), cols[0..k) and returns how many are valid (<= k). */
static int64_t select_row(const float *row, int64_t n, Row *state, float *values,
                          int32_t *cols) {
    int64_t k = state->k;
    state->size = 0;
    state->bar = 0;
    if (state->num_groups) {
        group_maxima(row, n, state->groups, state->num_groups);
        for (int64_t g = 0; g < state->num_groups; g++)
            state->group_keys[g] = key_of(state->groups[g]);
        uint32_t bound = kth_largest32(state->group_keys, state->num_groups, k);
        if (bound > KEY_NEG_INF) state->bar = ((uint64_t)bound << 32) - 1;
    }
    state->floor = floor_of(state->bar);
    scan(row, n, state);
    int64_t size = state->size;
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

/* select(block, rows, cols, stride, k, queries, num_queries, indptr, indices, values,
 *        keys, counts): addresses of contiguous buffers, checked by the caller.
 * block (rows, stride) float32, written in place (seen keys -> -inf); queries (rows,) int64;
 * indptr (num_queries + 1,) int64 and indices int32: the seen CSR, or both 0 for none;
 * values (rows, k) float32, keys (rows, k) int32, counts (rows,) int64 out. */
static PyObject *topk_select(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_ssize_t block_at, rows, n, stride, k, queries_at, num_queries, indptr_at, indices_at;
    Py_ssize_t values_at, keys_at, counts_at;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnn", &block_at, &rows, &n, &stride, &k, &queries_at,
                          &num_queries, &indptr_at, &indices_at, &values_at, &keys_at,
                          &counts_at))
        return NULL;
    if (rows < 0 || n < 0 || stride < n || k < 0 || k > n || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "topk select: bad shape");
        return NULL;
    }
    float *block = (float *)block_at, *values = (float *)values_at;
    int32_t *keys = (int32_t *)keys_at;
    int64_t *counts = (int64_t *)counts_at;
    const int64_t *queries = (const int64_t *)queries_at, *indptr = (const int64_t *)indptr_at;
    const int32_t *indices = (const int32_t *)indices_at;
    if (k == 0) {
        for (Py_ssize_t r = 0; r < rows; r++) counts[r] = 0;
        Py_RETURN_NONE;
    }
    /* S >= 2k strided groups: the k-th group maximum is then close to the k-th score (about
     * 1.25 k keys reach it on random rows); below 4 keys per group, keep every key instead */
    int64_t num_groups = 16;
    while (num_groups < 2 * k) num_groups *= 2;
    if (n < 4 * num_groups) num_groups = 0;
    int64_t capacity = 2 * k > k + 1024 ? 2 * k : k + 1024;
    Row state = {malloc(capacity * sizeof(uint64_t)), capacity, 0, k, 0, 0.0f,
                 malloc((num_groups + 1) * sizeof(float)),
                 malloc((num_groups + 1) * sizeof(uint32_t)), num_groups};
    if (!state.buffer || !state.groups || !state.group_keys) {
        free(state.buffer), free(state.groups), free(state.group_keys);
        return PyErr_NoMemory();
    }
    const char *error = NULL;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t r = 0; r < rows && !error; r++) {
        float *row = block + r * stride;
        if (indptr) {
            int64_t q = queries[r];
            if (q < 0 || q >= num_queries) {
                error = "query index out of range of the seen matrix";
                break;
            }
            for (int64_t p = indptr[q]; p < indptr[q + 1]; p++) {
                int32_t col = indices[p];
                if (col < 0 || col >= n) {
                    error = "seen key index out of range";
                    break;
                }
                row[col] = -INFINITY;
            }
            if (error) break;
        }
        counts[r] = select_row(row, n, &state, values + r * k, keys + r * k);
    }
    Py_END_ALLOW_THREADS;
    free(state.buffer), free(state.groups), free(state.group_keys);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"select", topk_select, METH_VARARGS, "Exact top-k of each row of a score block."},
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
