/*
 * replay.c — a build checked one layer at a time, on its own inputs
 * (`ds3 replay`, docs/COMPARING.md "Replay").
 *
 * End to end, a build's errors accumulate through the layers, and once a
 * near-tie in a router tips the other way a row follows other experts; a bug
 * in layer 40 hides behind the drift of layers 0-39. A replay feeds every
 * layer the build's own values instead ("teacher forcing" of activations):
 *
 *   embed                 from the tokens
 *   layers.N.attn.out     Attn(RMSNorm_in(h)) with h = the build's layer input
 *                         (embed for N = 0, layers.{N-1}.out after), over all
 *                         T positions in one pass from position 0, so the KV
 *                         of earlier positions comes from the same tensor
 *   layers.N.moe.*        the router on RMSNorm_post(h'), h' = h + the build's
 *                         attn.out (rounded as the residual stream): scores,
 *                         ds3's own top-K, and the weights of the experts run
 *   layers.N.ffn.out      FFN(RMSNorm_post(h')); with routing from the build
 *                         the experts are the build's topk_idx, weighted by
 *                         ds3's scores at them as (13) weighs ds3's own choice,
 *                         so an expert kernel is checked even where a near-tie
 *                         flipped the choice (the router is judged by itself)
 *   layers.N.out          h' + ffn.out
 *   norm                  RMSNorm_final of the build's last layers.*.out
 *   logits                lm_head · the build's norm (ds3's norm where the
 *                         build has none)
 *   mtp.K.in              eh_proj · [enorm(Emb) | hnorm(H)], H the build's norm
 *                         (K = 0) or mtp.{K-1}.norm; the block as a layer from
 *                         the build's mtp.K.in; mtp.K.norm from the build's
 *                         mtp.K.out; mtp.K.logits from the build's mtp.K.norm
 *
 * So each tensor measures the error of one operation, not of everything
 * before it. The sublayers are layer.c's own functions (ds3_layer_attn,
 * ds3_layer_ffn): no second copy of the math. The router hook (model.h,
 * ds3_route_hook) is the only change the replay needs inside the pass.
 */
#include "model/model.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* One layer (ds3.h)                                                           */
/* ========================================================================== */

static void copy_rows(ds3_real *dst, const ds3_real *src, size_t n) {
    if (dst) memcpy(dst, src, n * sizeof(ds3_real));
}

static ds3_status replay_layer_body(ds3_state *s, int layer, int T, const ds3_replay_inputs *in, ds3_replay_outputs *out) {
    if (!s || !in || !in->in) return ds3_fail(DS3_ERR_ARG, "ds3_replay_layer: state, inputs and in->in are required");
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const int L = c->num_hidden_layers, D = c->hidden_size, K = c->num_experts_per_tok, E = c->n_routed_experts;
    if (layer < 0 || layer >= L + m->n_mtp)
        return ds3_fail(DS3_ERR_ARG, "ds3_replay_layer: layer %d, the model has 0..%d (%d main, %d MTP)", layer,
                        L + m->n_mtp - 1, L, m->n_mtp);
    if (T < 1 || T > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_replay_layer: %d positions, the state holds 1..%d", T, s->max_seq);
    const ds3_layer *l = layer < L ? &m->layers[layer] : &m->mtp[layer - L].block;
    if (in->topk_idx && l->is_moe)
        for (long i = 0; i < (long)T * K; i++)
            if (in->topk_idx[i] < 0 || in->topk_idx[i] >= E)
                return ds3_fail(DS3_ERR_ARG, "ds3_replay_layer: topk_idx[%ld][%ld] = %d is not an expert (0..%d)",
                                i / K, i % K, (int)in->topk_idx[i], E - 1);
    ds3_replay_outputs none = {0};
    if (!out) out = &none;

    ds3_route_hook hook = {in->topk_idx, out->topk_idx, out->scores, out->topk_weight};
    ds3_dumper *saved = s->dump;  /* a replay is no row of a sequence: never dumped */
    s->dump = NULL;
    for (int off = 0; off < T; off += s->max_T) {
        const int n = T - off < s->max_T ? T - off : s->max_T;
        const size_t o = (size_t)off * D, nd = (size_t)n * D;
        memcpy(s->x, in->in + o, nd * sizeof(ds3_real));
        ds3_layer_attn(s, l, &s->cache[layer], n, off, "replay");
        copy_rows(out->attn_out ? out->attn_out + o : NULL, s->y, nd);
        if (in->attn_out) {
            /* the FFN's input is the build's residual stream, not ds3's */
            for (size_t i = 0; i < nd; i++) s->x[i] = in->in[o + i] + in->attn_out[o + i];
            ds3_round(s, s->x, nd, DS3_EMUL_RESIDUAL);
        }
        s->route = l->is_moe ? &hook : NULL;
        ds3_layer_ffn(s, l, n, off, "replay");
        s->route = NULL;
        copy_rows(out->ffn_out ? out->ffn_out + o : NULL, s->y, nd);
        copy_rows(out->out ? out->out + o : NULL, s->x, nd);
    }
    s->dump = saved;
    /* The caches now hold the replayed layer's inputs, not a sequence. */
    return ds3_state_truncate(s, 0);
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
ds3_status ds3_replay_layer(ds3_state *s, int layer, int T, const ds3_replay_inputs *in, ds3_replay_outputs *out) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = replay_layer_body(s, layer, T, in, out);
    ds3_fpenv_leave(&env);
    return st;
}

/* ========================================================================== */
/* A whole dump                                                                */
/* ========================================================================== */

static ds3_status note(ds3_replay_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ds3_status note(ds3_replay_report *r, const char *fmt, ...) {
    char **nn = realloc(r->not_checked, sizeof(char *) * (size_t)(r->n_not_checked + 1));
    if (!nn) return ds3_fail(DS3_ERR_NOMEM, "replay: out of memory");
    r->not_checked = nn;
    char *msg = ds3_malloc(256);
    if (!msg) return DS3_ERR_NOMEM;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, 256, fmt, ap);
    va_end(ap);
    r->not_checked[r->n_not_checked++] = msg;
    return DS3_OK;
}

void ds3_replay_report_free(ds3_replay_report *r) {
    if (!r) return;
    for (int i = 0; i < r->n_not_checked; i++) free(r->not_checked[i]);
    free(r->not_checked);
    free(r->done);
    memset(r, 0, sizeof *r);
}

static bool is_int(ds3_dtype dt) { return dt == DS3_DT_I32 || dt == DS3_DT_I64 || dt == DS3_DT_U8; }

/* BUILD's tensor `name` as [rows][cols] into dst (reals, or int32 when idx):
 * *have = false when BUILD has no such tensor; an error naming it when its
 * shape or dtype is not the one the replay needs. */
static ds3_status build_read(const ds3_st_file *b, const char *name, long rows, long cols, void *dst, bool idx,
                             bool *have) {
    const ds3_st_entry *e = ds3_st_find(b, name);
    *have = e != NULL;
    if (!e) return DS3_OK;
    if (e->ndim != 2 || e->shape[0] != rows || e->shape[1] != cols) {
        char shp[96];
        size_t k = (size_t)snprintf(shp, sizeof shp, "[");
        for (int i = 0; i < e->ndim && k < sizeof shp; i++)
            k += (size_t)snprintf(shp + k, sizeof shp - k, "%s%lld", i ? "," : "", (long long)e->shape[i]);
        if (k < sizeof shp) snprintf(shp + k, sizeof shp - k, "]");
        return ds3_fail(DS3_ERR_SHAPE, "BUILD %s: shape %s, expected [%ld,%ld]%s", name, shp, rows, cols,
                        e->shape[0] != rows && e->ndim == 2 && e->shape[1] == cols
                            ? " (one row per token: check --tokens)" : "");
    }
    if (idx != is_int(e->dtype))
        return ds3_fail(DS3_ERR_SHAPE, "BUILD %s: dtype %s, expected %s", name, ds3_dtype_name(e->dtype),
                        idx ? "an integer dtype (I32, I64, U8)" : "a float dtype (F32, F64, BF16, F16, F8_E4M3)");
    const long n = rows * cols;
    if (!idx && e->dtype == DS3_DT_REAL) {  /* the common case: a dump in this build's own type */
        memcpy(dst, e->data, (size_t)n * sizeof(ds3_real));
        return DS3_OK;
    }
    /* any other dtype, through compare's reader, a row block at a time */
    const long step = 4096 > cols ? 4096 / cols * cols : cols;
    for (long off = 0; off < n; off += step) {
        ds3_st_entry part = *e;
        const long m = n - off < step ? n - off : step;
        part.ndim = 1;
        part.shape[0] = m;
        part.data = (const unsigned char *)e->data + (size_t)off * ds3_dtype_size(e->dtype);
        long got;
        double *v = ds3_cmp_read(&part, &got);
        if (!v) return DS3_ERR_NOMEM;
        for (long i = 0; i < m; i++) {
            /* out of int32's range: -1, which the caller's range check refuses */
            if (idx) ((int32_t *)dst)[off + i] = v[i] >= 0 && v[i] < 2147483647.0 ? (int32_t)v[i] : -1;
            else ((ds3_real *)dst)[off + i] = (ds3_real)v[i];
        }
        free(v);
    }
    return DS3_OK;
}

/* Store rows [row0, row0 + rows) of a [..][cols] tensor under `name`. */
static void keep_at(ds3_dumper *d, const char *name, ds3_dtype dt, long row0, long rows, long cols,
                    const void *data) {
    const int64_t inner = cols;
    ds3_dump_rows(d, name, dt, 1, &inner, (int)row0, (int)rows, data);
}

/* Store rows [0, rows) of a [rows][cols] tensor under `name`. */
static void keep(ds3_dumper *d, const char *name, ds3_dtype dt, long rows, long cols, const void *data) {
    keep_at(d, name, dt, 0, rows, cols, data);
}

/* Scratch of one replay: the build's inputs and ds3's outputs of one layer. */
typedef struct {
    ds3_real *in, *attn_b, *attn, *ffn, *out, *scores, *w;
    int32_t *idx_b, *idx;
} bufs;

static void bufs_free(bufs *b) {
    free(b->in);
    free(b->attn_b);
    free(b->attn);
    free(b->ffn);
    free(b->out);
    free(b->scores);
    free(b->w);
    free(b->idx_b);
    free(b->idx);
}

/* One decoder layer (main N, or MTP depth k's block) on R rows. */
static ds3_status replay_block(ds3_state *s, const ds3_st_file *b, int layer, const char *prefix,
                               const char *in_name, long R, bool routing_build, bufs *u, ds3_dumper *d,
                               ds3_replay_report *rep) {
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const long D = c->hidden_size, K = c->num_experts_per_tok, E = c->n_routed_experts;
    const int L = c->num_hidden_layers;
    const bool moe = (layer < L ? &m->layers[layer] : &m->mtp[layer - L].block)->is_moe;
    char name[96];
    bool have_in, have_attn, have_idx = false;
    ds3_status st = build_read(b, in_name, R, D, u->in, false, &have_in);
    if (st != DS3_OK) return st;
    if (!have_in) return note(rep, "%s: NOT CHECKED (no %s in BUILD)", prefix, in_name);
    snprintf(name, sizeof name, "%s.attn.out", prefix);
    if ((st = build_read(b, name, R, D, u->attn_b, false, &have_attn)) != DS3_OK) return st;
    if (moe && routing_build) {
        snprintf(name, sizeof name, "%s.moe.topk_idx", prefix);
        if ((st = build_read(b, name, R, K, u->idx_b, true, &have_idx)) != DS3_OK) return st;
        for (long i = 0; have_idx && i < R * K; i++)
            if (u->idx_b[i] < 0 || u->idx_b[i] >= E)
                return ds3_fail(DS3_ERR_SHAPE, "BUILD %s: row %ld holds %d, not an expert (0..%ld)", name, i / K,
                                (int)u->idx_b[i], E - 1);
        if (!have_idx) return note(rep, "%s: NOT CHECKED (--routing build: no %s in BUILD)", prefix, name);
    }
    ds3_replay_inputs ri = {u->in, have_attn ? u->attn_b : NULL, have_idx ? u->idx_b : NULL};
    ds3_replay_outputs ro = {u->attn, u->ffn, u->out, moe ? u->idx : NULL, moe ? u->w : NULL,
                             moe ? u->scores : NULL};
    if ((st = ds3_replay_layer(s, layer, (int)R, &ri, &ro)) != DS3_OK) return st;

    snprintf(name, sizeof name, "%s.attn.out", prefix);
    keep(d, name, DS3_DT_REAL, R, D, u->attn);
    /* Without the build's attention output the FFN would run on ds3's own. */
    if (!have_attn) return note(rep, "%s: FFN NOT CHECKED (no %s.attn.out in BUILD)", prefix, prefix);
    if (moe) {
        snprintf(name, sizeof name, "%s.moe.topk_idx", prefix);
        keep(d, name, DS3_DT_I32, R, K, u->idx);
        snprintf(name, sizeof name, "%s.moe.topk_weight", prefix);
        keep(d, name, DS3_DT_REAL, R, K, u->w);
        snprintf(name, sizeof name, "%s.moe.scores", prefix);
        keep(d, name, DS3_DT_REAL, R, E, u->scores);
    }
    snprintf(name, sizeof name, "%s.ffn.out", prefix);
    keep(d, name, DS3_DT_REAL, R, D, u->ffn);
    snprintf(name, sizeof name, "%s.out", prefix);
    keep(d, name, DS3_DT_REAL, R, D, u->out);
    return DS3_OK;
}

/* What the caller will compare (ds3_replay_dump's cmp, keep). */
typedef struct {
    const ds3_cmp_opts *o;  /* NULL: nothing compared here */
    bool keep;
} cmp_now;

/*
 * The logits [R][V] in data, compared against BUILD's now (ds3_cmp_entry), as
 * ds3_cmp_files would compare them afterwards: true if done, the result in
 * rep->done. A replay's logits are most of the values it compares (on small,
 * 17 M of 18 M), and they exist only in the state's buffer for one chunk of
 * rows: compared here, they need no copy into the dumper, whose fresh pages
 * cost more than the copy itself, and no second pass over them from memory.
 * Only where the result is the same: every row kept (all_rows: no routing
 * flags needed), the tensor selected, BUILD has it (if not, ds3_cmp_files
 * lists it as missing).
 */
static bool compare_now(const cmp_now *c, const ds3_st_file *b, const char *name, long R, long V,
                        const ds3_real *data, ds3_replay_report *rep, ds3_status *st) {
    const ds3_st_entry *te = c->o ? ds3_st_find(b, name) : NULL;
    if (!te || !c->o->all_rows || !ds3_cmp_name_selected(c->o->names, name)) return false;
    ds3_cmp_result *nd = realloc(rep->done, sizeof *nd * (size_t)(rep->n_done + 1));
    if (!nd) {
        *st = ds3_fail(DS3_ERR_NOMEM, "replay: out of memory");
        return false;
    }
    rep->done = nd;
    /* as the dumper's view would list it (ds3_dumper_view) */
    const ds3_st_entry re = {.name = (char *)name, .dtype = DS3_DT_REAL, .ndim = 2, .shape = {R, V}, .data = data,
                             .nbytes = (uint64_t)(R * V) * sizeof(ds3_real)};
    if ((*st = ds3_cmp_entry(&nd[rep->n_done], &re, te, c->o)) != DS3_OK) return false;
    rep->n_done++;
    return true;
}

/* rows of RMSNorm(x[rows][D]) with w, then (if head) head · the build's
 * `head_in` (or the norm when the build lacks it): the model's or an MTP
 * depth's final norm and head. */
static ds3_status replay_head(ds3_state *s, const ds3_st_file *b, const char *x_name, const char *norm_name,
                              const char *logits_name, long R, const ds3_real *w, const ds3_tensor *head, bufs *u,
                              const cmp_now *c, ds3_dumper *d, ds3_replay_report *rep) {
    const long D = s->m->cfg.hidden_size, V = s->m->cfg.vocab_size;
    bool have;
    ds3_status st = build_read(b, x_name, R, D, u->in, false, &have);
    if (st != DS3_OK) return st;
    if (!have) return note(rep, "%s, %s: NOT CHECKED (no %s in BUILD)", norm_name, logits_name, x_name);
    for (long t = 0; t < R; t++) ds3_norm(s, u->out + t * D, u->in + t * D, w, (int)D);
    keep(d, norm_name, DS3_DT_REAL, R, D, u->out);
    /* the head from the build's own norm, where it has one */
    if ((st = build_read(b, norm_name, R, D, u->in, false, &have)) != DS3_OK) return st;
    const ds3_real *hn = have ? u->in : u->out;
    /* a chunk of rows at a time, in the state's buffer for a dump's logits
     * (ds3_replay_dump makes sure of it), as a dumping forward pass does */
    for (long off = 0; off < R; off += s->max_T) {
        long n = R - off < s->max_T ? R - off : s->max_T;
        ds3_proj(s, s->dump_logits, hn + off * D, head, (int)n);
        /* all of them in this one chunk: compared now (more chunks: later) */
        if (n == R && compare_now(c, b, logits_name, R, V, s->dump_logits, rep, &st) && !c->keep) {
            const int64_t inner = V;
            ds3_dump_compared(d, logits_name, DS3_DT_REAL, 1, &inner);
            continue;
        }
        if (st != DS3_OK) return st;
        keep_at(d, logits_name, DS3_DT_REAL, off, n, V, s->dump_logits);
    }
    return DS3_OK;
}

ds3_status ds3_replay_dump(ds3_state *s, const ds3_st_file *b, const int32_t *tok, int T, bool routing_build,
                           const ds3_cmp_opts *cmp, bool keep_compared, ds3_dumper *d, ds3_replay_report *rep) {
    const cmp_now now = {cmp, keep_compared};
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const long D = c->hidden_size, V = c->vocab_size, K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1,
               E = c->n_routed_experts > 0 ? c->n_routed_experts : 1;
    const int L = c->num_hidden_layers;
    memset(rep, 0, sizeof *rep);
    if (T < 1 || T > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "replay: %d tokens, the state holds 1..%d", T, s->max_seq);
    for (int i = 0; i < T; i++)
        if (tok[i] < 0 || tok[i] >= V)
            return ds3_fail(DS3_ERR_ARG, "token %d at index %d is out of range (vocab %ld)", tok[i], i, V);

    bufs u = {0};
    const size_t TD = (size_t)T * D;
    u.in = ds3_malloc(TD * sizeof(ds3_real));
    u.attn_b = ds3_malloc(TD * sizeof(ds3_real));
    u.attn = ds3_malloc(TD * sizeof(ds3_real));
    u.ffn = ds3_malloc(TD * sizeof(ds3_real));
    u.out = ds3_malloc(TD * sizeof(ds3_real));
    u.scores = ds3_malloc((size_t)T * E * sizeof(ds3_real));
    u.w = ds3_malloc((size_t)T * K * sizeof(ds3_real));
    u.idx_b = ds3_malloc((size_t)T * K * sizeof(int32_t));
    u.idx = ds3_malloc((size_t)T * K * sizeof(int32_t));
    ds3_status st = DS3_OK;
    if (!u.in || !u.attn_b || !u.attn || !u.ffn || !u.out || !u.scores || !u.w || !u.idx_b || !u.idx)
        st = ds3_fail(DS3_ERR_NOMEM, "replay: out of memory for %d positions", T);
    /* the logits: the state's buffer for a dump's, [max_T][V], once per state */
    if (st == DS3_OK && !s->dump_logits && !(s->dump_logits = ds3_calloc((size_t)s->max_T * V, sizeof(ds3_real))))
        st = ds3_fail(DS3_ERR_NOMEM, "replay: out of memory for %d rows of logits", s->max_T);

    /* embed: from the tokens, as the forward pass (rounded as the residual) */
    if (st == DS3_OK) {
        for (int t = 0; t < T; t++) ds3_tensor_rows(u.out + (size_t)t * D, &m->embed_tokens, tok[t], 1);
        ds3_round(s, u.out, TD, DS3_EMUL_RESIDUAL);
        keep(d, "embed", DS3_DT_REAL, T, D, u.out);
    }
    char prefix[32], in_name[64];
    for (int i = 0; i < L && st == DS3_OK; i++) {
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        if (i == 0) snprintf(in_name, sizeof in_name, "embed");
        else snprintf(in_name, sizeof in_name, "layers.%d.out", i - 1);
        st = replay_block(s, b, i, prefix, in_name, T, routing_build, &u, d, rep);
    }
    if (st == DS3_OK) {
        snprintf(in_name, sizeof in_name, "layers.%d.out", L - 1);
        st = replay_head(s, b, in_name, "norm", "logits", T, m->norm, &m->lm_head, &u, &now, d, rep);
    }

    /* MTP depth k: rows i < T-1-k, each with the token t_{i+1+k} */
    for (int k = 0; k < m->n_mtp && st == DS3_OK; k++) {
        const long R = T - 1 - k;
        if (R <= 0) break;
        char h_name[64], name[64];
        if (k == 0) snprintf(h_name, sizeof h_name, "norm");
        else snprintf(h_name, sizeof h_name, "mtp.%d.norm", k - 1);
        snprintf(prefix, sizeof prefix, "mtp.%d", k);
        bool have;  /* H has a row per position of the depth before (T at depth 0); rows 0..R-1 are read */
        if ((st = build_read(b, h_name, R + 1, D, u.attn_b, false, &have)) != DS3_OK) break;
        if (!have) {
            st = note(rep, "%s.in: NOT CHECKED (no %s in BUILD)", prefix, h_name);
        } else {
            for (long off = 0; off < R; off += s->max_T) {
                long n = R - off < s->max_T ? R - off : s->max_T;
                ds3_mtp_in(s, k, u.attn_b + off * D, tok + off + 1 + k, (int)n);
                memcpy(u.out + off * D, s->x, (size_t)(n * D) * sizeof(ds3_real));
            }
            snprintf(name, sizeof name, "%s.in", prefix);
            keep(d, name, DS3_DT_REAL, R, D, u.out);
        }
        if (st != DS3_OK) break;
        snprintf(in_name, sizeof in_name, "%s.in", prefix);
        st = replay_block(s, b, L + k, prefix, in_name, R, routing_build, &u, d, rep);
        if (st != DS3_OK) break;
        char x_name[64], n_name[64], l_name[64];
        snprintf(x_name, sizeof x_name, "%s.out", prefix);
        snprintf(n_name, sizeof n_name, "%s.norm", prefix);
        snprintf(l_name, sizeof l_name, "%s.logits", prefix);
        st = replay_head(s, b, x_name, n_name, l_name, R, m->mtp[k].shared_head_norm, &m->mtp[k].shared_head_head,
                         &u, &now, d, rep);
    }
    bufs_free(&u);
    return st;
}

ds3_status ds3_replay_compare(const ds3_dumper *d, const ds3_st_file *b, const ds3_cmp_opts *o,
                              const ds3_replay_report *gaps, ds3_cmp_report *out) {
    ds3_st_file *view = NULL;
    ds3_status st = ds3_dumper_view(d, &view);
    if (st != DS3_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    ds3_cmp_opts with = *o;
    with.done = gaps->done;
    with.n_done = gaps->n_done;
    st = ds3_cmp_files(view, b, &with, out);
    ds3_dumper_view_free(view);
    return st;
}
