/* Sparse min-cost perfect matching for wassnet (compiled on first use, see native.py).
 *
 * Rows are matched to columns along the edges of a sparse graph (CSR: indptr, indices,
 * cost). Potentials follow wassnet's convention: column potentials v, row potentials
 * u_i = min_j (c_ij + v_j), so that u_i - v_j <= c_ij on every edge.
 *
 *  - sparse_auction: forward Gauss-Seidel auction with eps-scaling (Bertsekas). A free
 *    row takes its cheapest column j1 and raises v_j1 by (second - best) + eps,
 *    evicting j1's owner. Ends eps_final-optimal: c_{i,x(i)} + v_{x(i)} <= u_i + eps.
 *  - sparse_assign: shortest augmenting paths (Jonker-Volgenant) warm-started from any
 *    matching and potentials: rows whose matched edge is not (within tol) their
 *    cheapest are freed, a greedy pass and two sweeps of augmenting row reduction
 *    match most of them, and Dijkstra on reduced costs (binary heap, only touched
 *    columns reset) augments the rest. Ends optimal within tol per row.
 *
 * Nothing certified rests on this code: wassnet certifies the plan and the potentials
 * it returns independently (plan_bound, c-transforms). Return codes: 0 success,
 * 1 no perfect matching, 2 out of memory, 3 bid budget exhausted.
 */
#include <math.h>
#include <stdlib.h>

typedef long long i64;

static void heap_up(int *heap, int *pos, const double *key, int k) {
    int x = heap[k];
    while (k > 0) {
        int p = (k - 1) >> 1;
        if (key[heap[p]] <= key[x]) break;
        heap[k] = heap[p];
        pos[heap[k]] = k;
        k = p;
    }
    heap[k] = x;
    pos[x] = k;
}

static void heap_down(int *heap, int *pos, const double *key, int size, int k) {
    int x = heap[k];
    for (;;) {
        int c = 2 * k + 1;
        if (c >= size) break;
        if (c + 1 < size && key[heap[c + 1]] < key[heap[c]]) c++;
        if (key[x] <= key[heap[c]]) break;
        heap[k] = heap[c];
        pos[heap[k]] = k;
        k = c;
    }
    heap[k] = x;
    pos[x] = k;
}

/* cheapest and second cheapest c_ij + v_j of row i */
static void row_best(const i64 *indptr, const i64 *indices, const double *cost,
                     const double *v, int i, double *u1, double *u2, int *j1, int *j2) {
    *u1 = INFINITY;
    *u2 = INFINITY;
    *j1 = -1;
    *j2 = -1;
    for (i64 e = indptr[i]; e < indptr[i + 1]; e++) {
        int j = (int)indices[e];
        double h = cost[e] + v[j];
        if (h < *u1) {
            *u2 = *u1;
            *j2 = *j1;
            *u1 = h;
            *j1 = j;
        } else if (h < *u2) {
            *u2 = h;
            *j2 = j;
        }
    }
}

static double edge_value(const i64 *indptr, const i64 *indices, const double *cost,
                         const double *v, int i, int j) {
    for (i64 e = indptr[i]; e < indptr[i + 1]; e++)
        if (indices[e] == j) return cost[e] + v[j];
    return INFINITY;
}

int sparse_auction(int n, const i64 *indptr, const i64 *indices, const double *cost,
                   double *v, i64 *row_match, i64 *col_match, double eps0, double eps_final,
                   double factor, i64 max_bids, i64 *stats) {
    int *queue = (int *)malloc(sizeof(int) * (size_t)n);
    if (!queue) return 2;
    i64 bids = 0;
    double eps = eps0 > eps_final ? eps0 : eps_final;
    for (;;) {
        int count = 0;
        for (int i = 0; i < n; i++) { /* rows violating eps-CS at this eps are freed */
            int j = (int)row_match[i];
            if (j >= 0) {
                double u1, u2;
                int j1, j2;
                row_best(indptr, indices, cost, v, i, &u1, &u2, &j1, &j2);
                if (edge_value(indptr, indices, cost, v, i, j) <= u1 + eps) continue;
                row_match[i] = -1;
                col_match[j] = -1;
            }
            queue[count++] = i;
        }
        int head = 0;
        while (count > 0) {
            int i = queue[head];
            head = (head + 1) % n;
            count--;
            double u1, u2;
            int j1, j2;
            row_best(indptr, indices, cost, v, i, &u1, &u2, &j1, &j2);
            if (j1 < 0) {
                free(queue);
                return 1;
            }
            if (!isfinite(u2)) u2 = u1 + 1e6 * eps + 1.0; /* one edge: win outright */
            v[j1] += (u2 - u1) + eps;
            int k = (int)col_match[j1];
            row_match[i] = j1;
            col_match[j1] = i;
            if (k >= 0) {
                row_match[k] = -1;
                queue[(head + count) % n] = k;
                count++;
            }
            if (++bids > max_bids) {
                free(queue);
                stats[0] = bids;
                return 3;
            }
        }
        if (eps <= eps_final) break;
        eps = eps / factor > eps_final ? eps / factor : eps_final;
    }
    stats[0] = bids;
    free(queue);
    return 0;
}

int sparse_assign(int n, const i64 *indptr, const i64 *indices, const double *cost, double *v,
                  i64 *row_match, i64 *col_match, double tol, i64 *stats) {
    double *dist = (double *)malloc(sizeof(double) * (size_t)n);
    i64 *pred = (i64 *)malloc(sizeof(i64) * (size_t)n);
    char *state = (char *)calloc((size_t)n, 1); /* 0 unseen, 1 in heap, 2 final */
    int *touched = (int *)malloc(sizeof(int) * (size_t)n);
    int *heap = (int *)malloc(sizeof(int) * (size_t)n);
    int *pos = (int *)malloc(sizeof(int) * (size_t)n);
    double *mval = (double *)malloc(sizeof(double) * (size_t)n); /* u_i, implicit */
    int *queue = (int *)malloc(sizeof(int) * (size_t)n);
    if (!dist || !pred || !state || !touched || !heap || !pos || !mval || !queue) return 2;
    i64 explored = 0, augmented = 0, freed = 0;
    for (int i = 0; i < n; i++) { /* free rows whose matched edge is not their cheapest */
        double u1, u2;
        int j1, j2;
        row_best(indptr, indices, cost, v, i, &u1, &u2, &j1, &j2);
        if (row_match[i] >= 0) {
            double here = edge_value(indptr, indices, cost, v, i, (int)row_match[i]);
            if (here > u1 + tol) {
                col_match[row_match[i]] = -1;
                row_match[i] = -1;
                freed++;
            } else {
                u1 = here;
            }
        }
        mval[i] = u1;
    }
    for (int i = 0; i < n; i++) { /* greedy: a free row takes a free cheapest column */
        if (row_match[i] >= 0) continue;
        for (i64 e = indptr[i]; e < indptr[i + 1]; e++) {
            int j = (int)indices[e];
            if (col_match[j] < 0 && cost[e] + v[j] <= mval[i] + tol) {
                row_match[i] = j;
                col_match[j] = i;
                break;
            }
        }
    }
    for (int sweep = 0; sweep < 2; sweep++) { /* augmenting row reduction */
        int nq = 0;
        for (int i = 0; i < n; i++)
            if (row_match[i] < 0) queue[nq++] = i;
        i64 budget = 4 * (i64)nq + 16;
        for (int q = 0; q < nq && budget > 0; q++, budget--) {
            int i = queue[q];
            double u1, u2;
            int j1, j2;
            row_best(indptr, indices, cost, v, i, &u1, &u2, &j1, &j2);
            if (j1 < 0) continue;
            int k = (int)col_match[j1];
            if (u1 < u2 - tol) {
                if (isfinite(u2)) v[j1] += u2 - u1;
            } else if (k >= 0 && j2 >= 0) {
                j1 = j2;
                k = (int)col_match[j2];
            }
            row_match[i] = j1;
            col_match[j1] = i;
            if (k >= 0) {
                row_match[k] = -1;
                if (nq < n) queue[nq++] = k;
            }
        }
    }
    for (int i = 0; i < n; i++) { /* refresh the implicit row potentials */
        double u1, u2;
        int j1, j2;
        row_best(indptr, indices, cost, v, i, &u1, &u2, &j1, &j2);
        mval[i] = row_match[i] >= 0
                      ? edge_value(indptr, indices, cost, v, i, (int)row_match[i])
                      : u1;
    }
    int status = 0;
    for (int f = 0; f < n && status == 0; f++) {
        if (row_match[f] >= 0) continue;
        augmented++;
        int ntouched = 0, size = 0, sink = -1;
        double uf = mval[f], dsink = 0;
        for (i64 e = indptr[f]; e < indptr[f + 1]; e++) {
            int j = (int)indices[e];
            double d = cost[e] + v[j] - uf;
            if (d < 0) d = 0;
            if (state[j] == 0) {
                state[j] = 1;
                dist[j] = d;
                pred[j] = f;
                touched[ntouched++] = j;
                heap[size] = j;
                pos[j] = size;
                heap_up(heap, pos, dist, size);
                size++;
            } else if (d < dist[j]) {
                dist[j] = d;
                pred[j] = f;
                heap_up(heap, pos, dist, pos[j]);
            }
        }
        while (size > 0) {
            int j = heap[0];
            size--;
            if (size > 0) {
                heap[0] = heap[size];
                pos[heap[0]] = 0;
                heap_down(heap, pos, dist, size, 0);
            }
            state[j] = 2;
            explored++;
            if (col_match[j] < 0) {
                sink = j;
                dsink = dist[j];
                break;
            }
            int i = (int)col_match[j];
            double base = dist[j] - mval[i];
            for (i64 e = indptr[i]; e < indptr[i + 1]; e++) {
                int k = (int)indices[e];
                if (state[k] == 2) continue;
                double d = base + cost[e] + v[k];
                if (d < dist[j]) d = dist[j];
                if (state[k] == 0) {
                    state[k] = 1;
                    dist[k] = d;
                    pred[k] = i;
                    touched[ntouched++] = k;
                    heap[size] = k;
                    pos[k] = size;
                    heap_up(heap, pos, dist, size);
                    size++;
                } else if (d < dist[k]) {
                    dist[k] = d;
                    pred[k] = i;
                    heap_up(heap, pos, dist, pos[k]);
                }
            }
        }
        if (sink < 0) {
            status = 1;
        } else {
            for (int t = 0; t < ntouched; t++) { /* dual update on the final columns */
                int j = touched[t];
                if (state[j] == 2 && j != sink) v[j] += dsink - dist[j];
            }
            for (int j = sink;;) { /* augment */
                int i = (int)pred[j];
                int next = (int)row_match[i];
                row_match[i] = j;
                col_match[j] = i;
                if (i == f) break;
                j = next;
            }
        }
        for (int t = 0; t < ntouched; t++) {
            int j = touched[t];
            state[j] = 0;
            int i = (int)col_match[j];
            if (i >= 0) mval[i] = edge_value(indptr, indices, cost, v, i, j);
        }
    }
    stats[0] = explored;
    stats[1] = augmented;
    stats[2] = freed;
    free(dist);
    free(pred);
    free(state);
    free(touched);
    free(heap);
    free(pos);
    free(mval);
    free(queue);
    return status;
}

#ifdef WASSNET_BUILD_KEY
/* Only when setup.py builds this file at install time, as the extension module
 * wassnet.ot._assign so that the wheel ships it compiled: wassnet loads it with ctypes
 * (wassnet/ot/cbuild.py), which first checks the key (source, flags, CPU) it was built
 * with. Importing the module gives an empty module. */
#include <Python.h>
const char *wassnet_build_key(void) { return WASSNET_BUILD_KEY; }
static struct PyModuleDef wassnet_module = {PyModuleDef_HEAD_INIT, "_assign", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__assign(void) { return PyModule_Create(&wassnet_module); }
#endif
