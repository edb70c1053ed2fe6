/* Primal network simplex for sparse transport problems, warm-startable (see simplex.py).
 *
 * Nodes 0..n-1 are sources (supplies a_i), n..n+m-1 sinks (demands b_j), node N = n+m
 * the root. Arcs 0..E-1 go from source src[e] to sink n + dst[e] at cost cost[e], with
 * no capacity; arc E + v is node v's artificial arc to or from the root (cost ART, a
 * "big M"): v -> root for sources and for sinks of zero demand, root -> v for the other
 * sinks, so that the all-artificial starting tree is strongly feasible.
 *
 * The basis is a spanning tree stored as each node's parent, the arc to it (pred) and
 * its direction (UP: pred goes node -> parent), children in doubly linked lists and
 * depths. Entering arcs by block search (most negative reduced cost within blocks of
 * ~sqrt(E) arcs, cyclically); the leaving arc by the strongly-feasible-tree rule (the
 * last blocking arc met walking the cycle from its apex in the flow's direction), which
 * rules out cycling on degenerate pivots. Reduced costs: c_e + pi_s - pi_t.
 *
 * Warm start: the caller passes every node's pred arc and that arc's flow (a previous
 * optimal tree, its arcs re-indexed into the new, larger arc set); arcs outside the tree
 * start at zero flow. A pred array that is not a spanning tree falls back on the cold
 * start, as does a tree with a zero-flow arc pointing away from the root. After
 * optimality the potentials are recomputed exactly along the tree and pricing is
 * repeated until no arc prices out; the potentials returned are exact sums of real
 * costs along the tree (output_potentials).
 *
 * Masses are integers (as doubles, summing to at most 2^53): every flow update is
 * exact, so the strongly feasible rule holds as in exact arithmetic.
 *
 * Nothing certified rests on this code: wassnet certifies the plan and potentials it
 * returns (plan_bound, c-transforms). Return codes: 0 optimal, 1 pivot budget spent,
 * 2 out of memory, 3 unbounded (cannot happen for transport problems), 4 the warm start
 * is not a strongly feasible spanning tree.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef long long i64;

typedef struct {
    int n, N;              /* sources; real nodes (root = N) */
    i64 E;                 /* real arcs */
    const i64 *src, *dst;  /* arc endpoints: source, sink index (without the n offset) */
    const double *cost;
    double art;            /* the artificial arcs' cost */
    double *flow;          /* E + N: real arcs, then each node's artificial arc */
    int *art_up;           /* artificial arc of v goes v -> root */
    int *parent, *depth, *up, *first, *next, *prev, *stack;
    i64 *pred;
    double *pi;
} Tree;

static inline int tail(const Tree *t, i64 e) {
    if (e < t->E) return (int)t->src[e];
    int v = (int)(e - t->E);
    return t->art_up[v] ? v : t->N;
}

static inline int head(const Tree *t, i64 e) {
    if (e < t->E) return t->n + (int)t->dst[e];
    int v = (int)(e - t->E);
    return t->art_up[v] ? t->N : v;
}

static inline double arc_cost(const Tree *t, i64 e) { return e < t->E ? t->cost[e] : t->art; }

static void unlink_child(Tree *t, int v) {
    int p = t->parent[v];
    if (t->prev[v] >= 0) t->next[t->prev[v]] = t->next[v];
    else t->first[p] = t->next[v];
    if (t->next[v] >= 0) t->prev[t->next[v]] = t->prev[v];
}

static void link_child(Tree *t, int v, int p) {
    t->parent[v] = p;
    t->prev[v] = -1;
    t->next[v] = t->first[p];
    if (t->first[p] >= 0) t->prev[t->first[p]] = v;
    t->first[p] = v;
}

/* Potentials and depths of the subtree below v from v's own (already set); returns the
 * number of nodes visited. art_cost: the cost used for artificial arcs. */
static int descend(Tree *t, int v, double art_cost) {
    int top = 0, count = 0;
    t->stack[top++] = v;
    while (top > 0) {
        int x = t->stack[--top];
        count++;
        for (int c = t->first[x]; c >= 0; c = t->next[c]) {
            i64 e = t->pred[c];
            double ce = e < t->E ? t->cost[e] : art_cost;
            /* tree arcs have zero reduced cost: c_e + pi_tail - pi_head = 0 */
            t->pi[c] = t->up[c] ? t->pi[x] - ce : t->pi[x] + ce;
            t->depth[c] = t->depth[x] + 1;
            t->stack[top++] = c;
        }
    }
    return count;
}

/* Exact potentials along the tree, shifted so that the first real node below the
 * root has potential 0 (keeps magnitudes at the scale of the costs). */
static void potentials(Tree *t, double art_cost) {
    t->pi[t->N] = 0.0;
    t->depth[t->N] = 0;
    descend(t, t->N, art_cost);
    int v = t->first[t->N];
    if (v < 0) return;
    double shift = t->pi[v];
    for (int x = 0; x <= t->N; x++) t->pi[x] -= shift;
}

/* Potentials for output: exact along the tree with the artificial arcs at cost 0.
 * Components hanging from the root by arcs towards it (rows, empty columns: zero flow
 * at an optimum) then share one offset. A component hanging by an arc away from it
 * carries a few units of integer rounding residue that the sparse graph cannot route;
 * its offset is moved to the largest value keeping the arcs into it from the rest
 * dual feasible (the smallest keeping the arcs out of it feasible if none enter). */
static int output_potentials(Tree *t) {
    int N = t->N, n = t->n;
    potentials(t, 0.0);
    int *comp = malloc(sizeof(int) * (size_t)(N + 1));
    double *lo = malloc(sizeof(double) * (size_t)(N + 1));
    double *hi = malloc(sizeof(double) * (size_t)(N + 1));
    if (!comp || !lo || !hi) {
        free(comp), free(lo), free(hi);
        return 0;
    }
    int away = 0;
    for (int top = t->first[N]; top >= 0; top = t->next[top]) {
        int size = 0;
        t->stack[size++] = top;
        while (size > 0) {
            int x = t->stack[--size];
            comp[x] = top;
            for (int c = t->first[x]; c >= 0; c = t->next[c]) t->stack[size++] = c;
        }
        lo[top] = -INFINITY;
        hi[top] = INFINITY;
        away |= !t->up[top];
    }
    if (away) {
        for (i64 e = 0; e < t->E; e++) {
            int i = (int)t->src[e], j = n + (int)t->dst[e];
            int ci = comp[i], cj = comp[j];
            if (ci == cj || t->up[ci] == t->up[cj]) continue;
            if (!t->up[ci]) { /* arc out of a hanging-away component: c + pi_i + s - pi_j >= 0 */
                double bound = t->pi[j] - t->pi[i] - t->cost[e];
                if (bound > lo[ci]) lo[ci] = bound;
            } else { /* arc into one: c + pi_i - pi_j - s >= 0 */
                double bound = t->cost[e] + t->pi[i] - t->pi[j];
                if (bound < hi[cj]) hi[cj] = bound;
            }
        }
        for (int v = 0; v < N; v++) {
            int top = comp[v];
            if (t->up[top]) continue;
            t->pi[v] += isfinite(hi[top]) ? hi[top] : (isfinite(lo[top]) ? lo[top] : 0.0);
        }
    }
    free(comp), free(lo), free(hi);
    return 1;
}

static void cold_start(Tree *t, const double *a, const double *b) {
    int N = t->N;
    for (int v = 0; v <= N; v++) t->first[v] = -1;
    for (int v = 0; v < N; v++) {
        double supply = v < t->n ? a[v] : b[v - t->n];
        t->pred[v] = t->E + v;
        t->flow[t->E + v] = supply > 0.0 ? supply : 0.0;
        t->up[v] = t->art_up[v];
        link_child(t, v, N);
    }
}

/* Tree flows from the supplies (subtree sums, leaves first); 0 if one is negative. */
static int tree_flows(Tree *t, const double *a, const double *b) {
    int N = t->N, top = 0, count = 0;
    double *net = malloc(sizeof(double) * (size_t)(N + 1));
    if (!net) return 0;
    for (int v = 0; v < N; v++) net[v] = v < t->n ? a[v] : -b[v - t->n];
    int *order = malloc(sizeof(int) * (size_t)(N + 1)); /* preorder from the root */
    if (!order) {
        free(net);
        return 0;
    }
    t->stack[top++] = N;
    while (top > 0) {
        int x = t->stack[--top];
        order[count++] = x;
        for (int c = t->first[x]; c >= 0; c = t->next[c]) t->stack[top++] = c;
    }
    int ok = 1;
    for (int k = count - 1; k > 0; k--) { /* order[0] is the root */
        int v = order[k];
        double f = t->up[v] ? net[v] : -net[v];
        if (f < 0.0) ok = 0;
        t->flow[t->pred[v]] = f;
        net[t->parent[v]] += net[v];
    }
    free(order);
    free(net);
    return ok;
}

/* Build the tree from pred arcs (and their flows, or with flow0 == NULL the flows the
 * supplies imply); 0 if they do not form a strongly feasible spanning tree. */
static int warm_start(Tree *t, const i64 *pred0, const double *flow0, const double *a,
                      const double *b) {
    int N = t->N;
    for (int v = 0; v <= N; v++) t->first[v] = -1;
    for (int v = 0; v < N; v++) {
        i64 e = pred0[v];
        if (e < 0 || e >= t->E + N) return 0;
        int s = tail(t, e), h = head(t, e);
        int other = s == v ? h : (h == v ? s : -1);
        if (other < 0 || (flow0 && (flow0[v] < 0.0 || !isfinite(flow0[v])))) return 0;
        t->pred[v] = e;
        t->up[v] = s == v;
        if (flow0) t->flow[e] = flow0[v];
        link_child(t, v, other);
    }
    t->pi[N] = 0.0;
    t->depth[N] = 0;
    if (descend(t, N, t->art) != N + 1) return 0; /* some node not below the root */
    if (!flow0 && !tree_flows(t, a, b)) return 0;
    for (int v = 0; v < N; v++) /* strongly feasible: zero flow only towards the root */
        if (!t->up[v] && t->flow[t->pred[v]] == 0.0) return 0;
    return 1;
}

/* The most negative reduced cost arc by block search from *next_arc; -1 if none is
 * below -tol. */
static i64 entering(Tree *t, i64 *next_arc, i64 block, double tol) {
    i64 E = t->E, best = -1, scanned = 0, e = *next_arc;
    double min = -tol;
    for (i64 count = 0; count < E; count++) {
        double c = t->cost[e] + t->pi[t->src[e]] - t->pi[t->n + t->dst[e]];
        if (c < min && t->pred[t->src[e]] != e && t->pred[t->n + t->dst[e]] != e) {
            min = c;
            best = e;
        }
        if (++e == E) e = 0;
        if (++scanned == block) {
            if (best >= 0) break;
            scanned = 0;
        }
    }
    *next_arc = e;
    return best;
}

/* One pivot on entering arc e; 3 if the cycle is unbounded. */
static int pivot(Tree *t, i64 e) {
    int s = tail(t, e), h = head(t, e);
    double c = arc_cost(t, e) + t->pi[s] - t->pi[h];
    /* apex of the cycle */
    int x = s, y = h;
    while (x != y) {
        if (t->depth[x] >= t->depth[y]) x = t->parent[x];
        else y = t->parent[y];
    }
    int join = x, out = -1, side = 0;
    double delta = INFINITY;
    for (int u = s; u != join; u = t->parent[u]) /* flow runs down towards s */
        if (t->up[u] && t->flow[t->pred[u]] < delta) {
            delta = t->flow[t->pred[u]];
            out = u;
            side = 1;
        }
    for (int u = h; u != join; u = t->parent[u]) /* flow runs up from h */
        if (!t->up[u] && t->flow[t->pred[u]] <= delta) {
            delta = t->flow[t->pred[u]];
            out = u;
            side = 2;
        }
    if (out < 0) return 3;
    if (delta > 0.0) {
        t->flow[e] += delta;
        for (int u = s; u != join; u = t->parent[u]) t->flow[t->pred[u]] += t->up[u] ? -delta : delta;
        for (int u = h; u != join; u = t->parent[u]) t->flow[t->pred[u]] += t->up[u] ? delta : -delta;
    }
    /* re-hang the subtree below `out`: the path from the entering node (s or h) up to
     * `out` reverses, and the entering node hangs from the other end of e */
    int low = side == 1 ? s : h, high = side == 1 ? h : s;
    i64 arc = e;
    int up = side == 1; /* e goes low -> high when low is s */
    int u = low, p = high;
    for (;;) {
        int old_parent = t->parent[u];
        i64 old_arc = t->pred[u];
        int old_up = t->up[u];
        int last = u == out;
        unlink_child(t, u);
        link_child(t, u, p);
        t->pred[u] = arc;
        t->up[u] = up;
        if (last) break;
        p = u;
        u = old_parent;
        arc = old_arc;
        up = !old_up;
    }
    /* potentials shift by the entering arc's reduced cost over the moved subtree */
    t->pi[low] += side == 1 ? -c : c;
    t->depth[low] = t->depth[high] + 1;
    descend(t, low, t->art);
    return 0;
}

/* Returns 0 (optimal), 1 (pivot budget spent), 2 (no memory), 3 (unbounded), 4 (bad
 * warm start). warm: 0 cold, 1 from pred and flow_pred, 2 from pred (flows from the
 * supplies). pred, flow_pred: in (warm start) and out: each node's tree arc and its
 * flow. flow: out, the E real arcs' flows. pi: out, N + 1 potentials (root last).
 * stats: pivots, warm start used. */
int transport_simplex(int n, int m, i64 E, const i64 *src, const i64 *dst,
                      const double *cost, const double *a, const double *b, int warm,
                      i64 *pred, double *flow_pred, double *flow, double *pi,
                      i64 max_pivots, double tol, i64 *stats) {
    Tree t;
    int N = n + m;
    t.n = n;
    t.N = N;
    t.E = E;
    t.src = src;
    t.dst = dst;
    t.cost = cost;
    double cmax = 0.0;
    for (i64 e = 0; e < E; e++)
        if (fabs(cost[e]) > cmax) cmax = fabs(cost[e]);
    /* more than any path's cost, at the costs' own scale (potentials keep their precision) */
    t.art = cmax > 0.0 ? 2.0 * cmax * (double)(N + 1) : 1.0;
    t.flow = calloc((size_t)(E + N), sizeof(double));
    t.art_up = malloc(sizeof(int) * (size_t)N);
    t.parent = malloc(sizeof(int) * (size_t)(N + 1));
    t.depth = malloc(sizeof(int) * (size_t)(N + 1));
    t.up = malloc(sizeof(int) * (size_t)(N + 1));
    t.first = malloc(sizeof(int) * (size_t)(N + 1));
    t.next = malloc(sizeof(int) * (size_t)(N + 1));
    t.prev = malloc(sizeof(int) * (size_t)(N + 1));
    t.stack = malloc(sizeof(int) * (size_t)(N + 1));
    t.pred = malloc(sizeof(i64) * (size_t)(N + 1));
    t.pi = pi;
    int status = 0;
    if (!t.flow || !t.art_up || !t.parent || !t.depth || !t.up || !t.first || !t.next ||
        !t.prev || !t.stack || !t.pred) {
        status = 2;
        goto done;
    }
    for (int v = 0; v < N; v++) t.art_up[v] = v < n || b[v - n] <= 0.0;
    t.parent[N] = -1;
    stats[1] = 0;
    if (warm && warm_start(&t, pred, warm == 1 ? flow_pred : NULL, a, b)) {
        stats[1] = 1;
    } else if (warm) {
        status = 4;
        goto done;
    } else {
        memset(t.flow, 0, sizeof(double) * (size_t)(E + N));
        cold_start(&t, a, b);
    }
    potentials(&t, t.art);
    i64 block = (i64)sqrt((double)E);
    if (block < 10) block = 10;
    i64 next_arc = 0, pivots = 0;
    double eps = tol * (cmax > 0.0 ? cmax : 1.0);
    for (int round = 0; round < 4; round++) { /* pivots, then exact potentials, price again */
        i64 e;
        while ((e = entering(&t, &next_arc, block, eps)) >= 0) {
            if (pivots++ >= max_pivots) {
                status = 1;
                goto out;
            }
            if ((status = pivot(&t, e)) != 0) goto out;
        }
        potentials(&t, t.art);
        if (entering(&t, &next_arc, block, eps) < 0) break;
    }
out:
    for (int v = 0; v < N; v++) {
        pred[v] = t.pred[v];
        flow_pred[v] = t.flow[t.pred[v]];
    }
    memcpy(flow, t.flow, sizeof(double) * (size_t)E);
    if (!output_potentials(&t)) status = 2;
    stats[0] = pivots;
done:
    free(t.flow);
    free(t.art_up);
    free(t.parent);
    free(t.depth);
    free(t.up);
    free(t.first);
    free(t.next);
    free(t.prev);
    free(t.stack);
    free(t.pred);
    return status;
}

#ifdef WASSNET_BUILD_KEY
/* Only when setup.py builds this file at install time, as the extension module
 * wassnet.ot._simplex so that the wheel ships it compiled: wassnet loads it with ctypes
 * (wassnet/ot/cbuild.py), which first checks the key (source, flags, CPU) it was built
 * with. Importing the module gives an empty module. */
#include <Python.h>
const char *wassnet_build_key(void) { return WASSNET_BUILD_KEY; }
static struct PyModuleDef wassnet_module = {PyModuleDef_HEAD_INIT, "_simplex", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__simplex(void) { return PyModule_Create(&wassnet_module); }
#endif
