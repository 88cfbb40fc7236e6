/*
 * test_replay.c — `ds3 replay` and the call behind it (src/model/replay.c,
 * ds3_replay_layer in ds3.h).
 *
 *   - ds3's own dump replayed gives the same bits in every tensor (fp32 and
 *     with --emulate bf16 on both sides; absorbed and naive attention);
 *   - ds3_replay_layer: the outputs of one layer from given inputs equal the
 *     forward pass's, argument errors;
 *   - the logits compared as the replay computes them (not kept, or kept for
 *     -o): the report of ds3_cmp_files on everything kept, field for field,
 *     on clean, bf16 and broken builds, every bound, one chunk of logits and
 *     several (where they are kept and compared afterwards);
 *   - planted faults, each a build made by running ds3 with one layer broken,
 *     dumped, then replayed on the clean checkpoint: each must fail first at
 *     its own layer's tensor, and every tensor of every other layer must pass
 *     (a wrong expert in every row of one MoE layer; a layer's softmax scale
 *     without YaRN's mscale²; q's RoPE on the wrong half, in an attention
 *     written out here; 1% on one expert's down projection in a copy of the
 *     checkpoint);
 *   - the CLI: usage errors (exit 2), a missing input (NOT CHECKED, exit 1), a
 *     shape mismatch naming the tensor, -o written only on success, --json.
 */
#include "model/model.h"
#include "harness.h"
#include "cli_run.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

static const char *TOKENS = "5,17,300,2,99,41,7,250,128,3";

/* Expect exit `rc` and, if want != NULL, `want` in stdout+stderr. */
static void expect(result r, int rc, const char *want, const char *what) {
    CHECK(r.rc == rc, "%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.rc, rc, r.out, r.err);
    if (want) CHECK(has(r.out, want) || has(r.err, want), "%s: output lacks \"%s\"\n%s%s", what, want, r.out, r.err);
    done(&r);
}

static int32_t *parse(const char *s, int *T) {
    int32_t *t = malloc(64 * sizeof *t);
    *T = 0;
    for (const char *p = s; *p;) {
        t[(*T)++] = (int32_t)strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
    }
    return t;
}

/* ========================================================================== */
/* A build: ds3's forward pass, optionally with one layer broken               */
/* ========================================================================== */

typedef enum { FAULT_NONE, FAULT_WRONG_EXPERT, FAULT_NO_MSCALE, FAULT_ROPE_HALF } fault;

/*
 * The build under test for FAULT_ROPE_HALF: naive MLA written out here
 * (docs/MODEL.md §3) from x [T][D] = RMSNorm_in(h) at positions 0..T-1, with
 * q's RoPE applied to the wrong half when `wrong`: the first Dr values of
 * each head's q (part of q^C) rotated, q^R left as it is. With wrong = false
 * it is the plain attention, which the test holds against ds3's own first.
 */
static void attn_written_out(ds3_state *s, const ds3_layer *l, ds3_real *out, const ds3_real *x, int T, bool wrong) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size, H = c->num_attention_heads, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim,
              Dv = c->v_head_dim, C = c->kv_lora_rank, Rq = c->q_lora_rank, Dq = Dn + Dr;
    ds3_real *q = calloc((size_t)T * H * Dq, sizeof(ds3_real)), *kv = calloc((size_t)T * (C + Dr), sizeof(ds3_real));
    ds3_real *ckv = calloc((size_t)T * C, sizeof(ds3_real)), *kvb = calloc((size_t)T * H * (Dn + Dv), sizeof(ds3_real));
    ds3_real *o = calloc((size_t)T * H * Dv, sizeof(ds3_real)), *p = calloc((size_t)T, sizeof(ds3_real));
    if (Rq > 0) {
        ds3_real *cq = calloc((size_t)T * Rq, sizeof(ds3_real));
        ds3_proj(s, cq, x, &l->q_a_proj, T);
        for (int t = 0; t < T; t++) ds3_norm(s, cq + (size_t)t * Rq, cq + (size_t)t * Rq, l->q_a_layernorm, Rq);
        ds3_proj(s, q, cq, &l->q_b_proj, T);
        free(cq);
    } else {
        ds3_proj(s, q, x, &l->q_proj, T);
    }
    ds3_proj(s, kv, x, &l->kv_a_proj_with_mqa, T);
    for (int t = 0; t < T; t++) {
        ds3_norm(s, ckv + (size_t)t * C, kv + (size_t)t * (C + Dr), l->kv_a_layernorm, C);
        ds3_rotate(s, kv + (size_t)t * (C + Dr) + C, t);                       /* k^R */
        for (int h = 0; h < H; h++) ds3_rotate(s, q + ((size_t)t * H + h) * Dq + (wrong ? 0 : Dn), t);
    }
    ds3_proj(s, kvb, ckv, &l->kv_b_proj, T);
    const double scale = s->m->attn_scale;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const ds3_real *qh = q + ((size_t)t * H + h) * Dq;
            for (int u = 0; u <= t; u++) {
                const ds3_real *k = kvb + ((size_t)u * H + h) * (Dn + Dv), *kr = kv + (size_t)u * (C + Dr) + C;
                double a = 0;
                for (int d = 0; d < Dn; d++) a += (double)qh[d] * k[d];
                for (int d = 0; d < Dr; d++) a += (double)qh[Dn + d] * kr[d];
                p[u] = (ds3_real)(a * scale);
            }
            ds3_softmax(p, t + 1);
            ds3_real *oh = o + ((size_t)t * H + h) * Dv;
            for (int u = 0; u <= t; u++)
                for (int d = 0; d < Dv; d++) oh[d] += p[u] * kvb[((size_t)u * H + h) * (Dn + Dv) + Dn + d];
        }
    ds3_proj(s, out, o, &l->o_proj, T);
    (void)D;
    free(q);
    free(kv);
    free(ckv);
    free(kvb);
    free(o);
    free(p);
}

/*
 * The forward pass of model.c, layer by layer, so that one layer can be
 * broken: FAULT_WRONG_EXPERT runs `wrong` [T][K] as that layer's experts,
 * FAULT_NO_MSCALE its softmax scale without YaRN's m². Dumped to path.
 */
static void build_dump(ds3_model *m, const int32_t *tok, int T, const ds3_emulation *emu, fault f, int layer,
                       const int32_t *wrong, const char *path) {
    const ds3_config *c = &m->cfg;
    const int D = c->hidden_size;
    ds3_state *s = NULL;
    CHECK(ds3_state_new(m, T, DS3_ATTN_ABSORB, &s) == DS3_OK, "state: %s", ds3_last_error());
    if (emu) ds3_set_emulation(s, emu);
    ds3_dump_begin(s, T);
    s->dump_logits = ds3_calloc((size_t)T * c->vocab_size, sizeof(ds3_real));
    for (int t = 0; t < T; t++) ds3_tensor_rows(s->x + (size_t)t * D, &m->embed_tokens, tok[t], 1);
    ds3_round(s, s->x, (size_t)T * D, DS3_EMUL_RESIDUAL);
    ds3_dump_act(s, DS3_DT_REAL, D, 0, T, s->x, "embed");
    char prefix[32];
    const double scale = m->attn_scale;
    ds3_route_hook hook = {wrong, NULL, NULL, NULL};
    for (int i = 0; i < c->num_hidden_layers; i++) {
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        if (i == layer && f == FAULT_WRONG_EXPERT) s->route = &hook;
        if (i == layer && f == FAULT_NO_MSCALE) m->attn_scale = 1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim));
        if (i == layer && f == FAULT_ROPE_HALF) {
            /* the attention sublayer of layer.c with the written-out, faulty MLA */
            const ds3_layer *l = &m->layers[i];
            for (int t = 0; t < T; t++) ds3_norm(s, s->xn + (size_t)t * D, s->x + (size_t)t * D, l->input_layernorm, D);
            attn_written_out(s, l, s->y, s->xn, T, true);
            ds3_dump_act(s, DS3_DT_REAL, D, 0, T, s->y, "%s.attn.out", prefix);
            for (size_t j = 0; j < (size_t)T * D; j++) s->x[j] += s->y[j];
            ds3_layer_ffn(s, l, T, 0, prefix);
        } else {
            ds3_layer_forward(s, &m->layers[i], &s->cache[i], T, 0, prefix);
        }
        s->route = NULL;
        m->attn_scale = scale;
    }
    ds3_real *hn = ds3_hwin_begin(&s->hfinal, 0, D);
    for (int t = 0; t < T; t++) ds3_norm(s, hn + (size_t)t * D, s->x + (size_t)t * D, m->norm, D);
    s->hfinal.n += T;
    ds3_dump_act(s, DS3_DT_REAL, D, 0, T, hn, "norm");
    ds3_proj(s, s->dump_logits, hn, &m->lm_head, T);
    ds3_dump_act(s, DS3_DT_REAL, c->vocab_size, 0, T, s->dump_logits, "logits");
    if (m->n_mtp > 0) ds3_mtp_chunk(s, tok, T, 0);
    const char *meta[] = {"tokens", TOKENS, NULL};
    CHECK(ds3_dump_write(s, path, meta) == DS3_OK, "dump %s: %s", path, ds3_last_error());
    ds3_state_free(s);
}

/* ========================================================================== */
/* Replaying ds3's own dump gives its bits                                     */
/* ========================================================================== */

/* ds3's own dump of T tokens to path (rounded as a bf16 build when bf16 is
 * set); returns the state that made it, for the caller to replay with or free. */
static ds3_state *dump_self(ds3_model *m, const int32_t *tok, int T, ds3_attn_mode attn, bool bf16, const char *path) {
    static const ds3_emulation emu = {DS3_EMULATE_BF16, 0, 0};
    ds3_state *s = NULL;
    ds3_state_new(m, T, attn, &s);
    if (bf16) ds3_set_emulation(s, &emu);
    ds3_dump_begin(s, T);
    CHECK(ds3_forward(s, tok, T, 0, NULL) == DS3_OK, "forward");
    CHECK(ds3_dump_write(s, path, NULL) == DS3_OK, "dump: %s", ds3_last_error());
    return s;
}

static void test_self(const char *models) {
    th_section("replay of ds3's own dump: the same bits in every tensor");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tiny-f32", models);
    ds3_model *m = NULL;
    CHECK(ds3_model_load(dir, &m) == DS3_OK, "load %s: %s", dir, ds3_last_error());
    if (!m) return;
    int T;
    int32_t *tok = parse(TOKENS, &T);
    for (int e = 0; e < 2; e++)
        for (int a = 0; a < 2; a++) {
            const ds3_attn_mode attn = a ? DS3_ATTN_NAIVE : DS3_ATTN_ABSORB;
            snprintf(path, sizeof path, "%s/self-%d-%d.safetensors", tmpdir, e, a);
            ds3_state *s = dump_self(m, tok, T, attn, e, path);
            ds3_st_file *b = NULL;
            CHECK(ds3_st_open(path, &b) == DS3_OK, "open %s", path);
            ds3_dumper *d = ds3_dumper_new(T);
            ds3_replay_report rep;
            CHECK(ds3_replay_dump(s, b, tok, T, true, NULL, false, d, &rep) == DS3_OK, "replay: %s", ds3_last_error());
            CHECK(rep.n_not_checked == 0, "%d layers not checked", rep.n_not_checked);
            ds3_st_file *v = NULL;
            ds3_dumper_view(d, &v);
            CHECK(v->n == b->n, "%s%s: %d tensors replayed, the dump has %d", e ? "bf16 " : "",
                  a ? "naive" : "absorb", v->n, b->n);
            int same = 0;
            for (int i = 0; i < v->n; i++) {
                const ds3_st_entry *x = &v->entries[i], *y = ds3_st_find(b, x->name);
                bool eq = y && x->nbytes == y->nbytes && memcmp(x->data, y->data, x->nbytes) == 0;
                CHECK(eq, "%s%s: %s differs from the dump", e ? "bf16 " : "", a ? "naive" : "absorb", x->name);
                same += eq;
            }
            printf("  %s %s: %d of %d tensors bit-identical\n", e ? "--emulate bf16" : "fp32", a ? "naive" : "absorb",
                   same, v->n);
            ds3_dumper_view_free(v);
            ds3_dumper_free(d);
            ds3_replay_report_free(&rep);
            ds3_st_close(b);
            ds3_state_free(s);
        }

    th_section("ds3_replay_layer: one layer from given inputs");
    {
        snprintf(path, sizeof path, "%s/self-0-0.safetensors", tmpdir);
        ds3_st_file *b = NULL;
        ds3_st_open(path, &b);
        ds3_state *s = NULL;
        ds3_state_new(m, T, DS3_ATTN_ABSORB, &s);
        const int D = m->cfg.hidden_size, K = m->cfg.num_experts_per_tok, E = m->cfg.n_routed_experts;
        const ds3_st_entry *in = ds3_st_find(b, "layers.1.out"), *att = ds3_st_find(b, "layers.2.attn.out"),
                           *ffn = ds3_st_find(b, "layers.2.ffn.out"), *idx = ds3_st_find(b, "layers.2.moe.topk_idx"),
                           *sc = ds3_st_find(b, "layers.2.moe.scores");
        ds3_real *o_att = calloc((size_t)T * D, sizeof(ds3_real)), *o_ffn = calloc((size_t)T * D, sizeof(ds3_real));
        ds3_real *o_sc = calloc((size_t)T * E, sizeof(ds3_real));
        int32_t *o_idx = calloc((size_t)T * K, sizeof(int32_t));
        ds3_replay_inputs ri = {in->data, att->data, idx->data};
        ds3_replay_outputs ro = {o_att, o_ffn, NULL, o_idx, NULL, o_sc};
        CHECK(ds3_replay_layer(s, 2, T, &ri, &ro) == DS3_OK, "replay layer 2: %s", ds3_last_error());
        CHECK(memcmp(o_att, att->data, att->nbytes) == 0, "attn.out: not the forward pass's bits");
        CHECK(memcmp(o_ffn, ffn->data, ffn->nbytes) == 0, "ffn.out: not the forward pass's bits");
        CHECK(memcmp(o_idx, idx->data, idx->nbytes) == 0, "topk_idx: not the forward pass's choice");
        CHECK(memcmp(o_sc, sc->data, sc->nbytes) == 0, "scores: not the forward pass's bits");
        /* Afterwards the state runs a sequence from 0 as if new. */
        ds3_real *l1 = malloc(sizeof(ds3_real) * (size_t)T * m->cfg.vocab_size);
        CHECK(ds3_forward(s, tok, T, 0, l1) == DS3_OK, "forward after replay");
        const ds3_st_entry *lg = ds3_st_find(b, "logits");
        CHECK(memcmp(l1, lg->data, lg->nbytes) == 0, "a forward after a replay: not the same logits");
        CHECK(ds3_replay_layer(s, -1, T, &ri, &ro) == DS3_ERR_ARG, "layer -1 accepted");
        CHECK(ds3_replay_layer(s, m->cfg.num_hidden_layers + m->n_mtp, T, &ri, &ro) == DS3_ERR_ARG,
              "layer past the MTP blocks accepted");
        CHECK(ds3_replay_layer(s, 2, T + 1, &ri, &ro) == DS3_ERR_ARG, "T past max_seq accepted");
        int32_t *bad = malloc((size_t)T * K * sizeof(int32_t));
        memcpy(bad, idx->data, idx->nbytes);
        bad[3] = E;
        ri.topk_idx = bad;
        CHECK(ds3_replay_layer(s, 2, T, &ri, &ro) == DS3_ERR_ARG && has(ds3_last_error(), "not an expert"),
              "an expert index out of range: %s", ds3_last_error());
        free(bad);
        free(l1);
        free(o_att);
        free(o_ffn);
        free(o_sc);
        free(o_idx);
        ds3_state_free(s);
        ds3_st_close(b);
    }
    free(tok);
    ds3_model_free(m);
}

/* ========================================================================== */
/* The logits compared as the replay computes them                             */
/* ========================================================================== */

/* The first field in which two results differ (doubles bit for bit), or NULL. */
static const char *result_differs(const ds3_cmp_result *a, const ds3_cmp_result *b) {
#define SAME(f) (memcmp(&a->f, &b->f, sizeof a->f) == 0)
    if (strcmp(a->name, b->name) != 0) return "name";
    if (strcmp(a->why, b->why) != 0) return "why";
    if (!SAME(kind) || !SAME(ndim) || !SAME(shape) || !SAME(n) || !SAME(ok)) return "kind, shape, n or ok";
    if (!SAME(max_abs) || !SAME(max_rel) || !SAME(max_ref) || !SAME(scaled)) return "max_abs, max_rel, max_ref or scaled";
    if (!SAME(cos) || !SAME(nmse)) return "cos or nmse";
    if (!SAME(worst) || !SAME(worst_got) || !SAME(worst_ref)) return "worst";
    if (!SAME(n_bad) || !SAME(n_nonfinite)) return "n_bad or n_nonfinite";
    if (!SAME(rows) || !SAME(rows_same) || !SAME(overlap) || !SAME(rows_excluded)) return "rows";
    if (!SAME(nothing_compared)) return "nothing_compared";
    if (!SAME(argmax_same) || !SAME(argmax_near_tie) || !SAME(top5)) return "argmax or top5";
    return NULL;
#undef SAME
}

/* Do two reports say the same, field for field? Counts the results compared. */
static bool reports_same(const ds3_cmp_report *a, const ds3_cmp_report *b, const char *what, int *fields) {
    bool same = a->n == b->n && a->n_fail == b->n_fail && a->ok == b->ok && a->n_missing == b->n_missing &&
                a->tokens_differ == b->tokens_differ && strcmp(a->tokens_note, b->tokens_note) == 0;
    CHECK(same, "%s: the reports differ in their counts (%d/%d tensors, %d/%d failed)", what, a->n, b->n,
          a->n_fail, b->n_fail);
    for (int i = 0; same && i < a->n_missing; i++) same = strcmp(a->missing[i], b->missing[i]) == 0;
    for (int i = 0; same && i < a->n; i++) {
        const char *f = result_differs(&a->r[i], &b->r[i]);
        CHECK(!f, "%s: %s: %s differs", what, a->r[i].name, f ? f : "");
        same = !f;
        *fields += 1;
    }
    return same;
}

/* A copy of a dump with its logits broken: two rows' argmax moved to their
 * least value, an element 1% off, and in each MTP depth's logits a NaN and
 * an element moved by 0.5 (in memory: ds3_st_open_mem reads the buffer). */
static void *break_logits(const char *path, size_t *len) {
    unsigned char *buf = th_read_file(path, len);
    ds3_st_file *f = NULL;
    if (!buf || ds3_st_open_mem(buf, *len, path, &f) != DS3_OK) return buf;
    for (int i = 0; i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        const bool main = strcmp(e->name, "logits") == 0, mtp = has(e->name, ".logits");
        if ((!main && !mtp) || e->dtype != DS3_DT_REAL) continue;
        ds3_real *v = (ds3_real *)(void *)(buf + ((const unsigned char *)e->data - buf));
        const long R = (long)e->shape[0], V = (long)e->shape[1];
        if (main) {
            for (long r = 1; r < R && r <= 3; r += 2) {
                long lo = 0, hi = 0;
                for (long j = 1; j < V; j++) {
                    if (v[r * V + j] < v[r * V + lo]) lo = j;
                    if (v[r * V + j] > v[r * V + hi]) hi = j;
                }
                v[r * V + lo] = v[r * V + hi] + 5;
            }
            v[7] *= (ds3_real)1.01;
        } else {
            v[11] = NAN;
            v[R * V / 2] += (ds3_real)0.5;
        }
    }
    ds3_st_close(f);
    return buf;
}

/* One replay of `buf` on s with o: cmp NULL (every tensor kept, then compared
 * by ds3_cmp_files, as before the logits were compared as they came), or
 * compared as it goes, keeping the compared tensors or not. */
typedef enum { SEPARATE, FUSED, FUSED_KEPT } how;
static ds3_status replay_as(ds3_state *s, const ds3_st_file *b, const int32_t *tok, int T, const ds3_cmp_opts *o,
                            how h, ds3_dumper **d, ds3_replay_report *gaps, ds3_cmp_report *rep) {
    *d = ds3_dumper_new(T);
    ds3_status st = ds3_replay_dump(s, b, tok, T, true, h == SEPARATE ? NULL : o, h == FUSED_KEPT, *d, gaps);
    if (st != DS3_OK) return st;
    if (h == SEPARATE) {
        ds3_st_file *v = NULL;
        if ((st = ds3_dumper_view(*d, &v)) == DS3_OK) st = ds3_cmp_files(v, b, o, rep);
        ds3_dumper_view_free(v);
        return st;
    }
    return ds3_replay_compare(*d, b, o, gaps, rep);
}

static void test_fused(const char *models) {
    th_section("the logits compared as the replay computes them: the separate pass's report, field for field");
    const char *names[] = {"tiny-f32", "tiny-mtp2"};
    int T;
    int32_t *tok = parse(TOKENS, &T);
    for (int mi = 0; mi < 2; mi++) {
        char dir[512], path[600];
        snprintf(dir, sizeof dir, "%s/%s", models, names[mi]);
        ds3_model *m = NULL;
        CHECK(ds3_model_load(dir, &m) == DS3_OK, "load %s: %s", dir, ds3_last_error());
        if (!m) continue;
        /* builds: ds3's own dump, one rounded as a bf16 build, and that one
         * with its logits broken (all in memory) */
        void *bufs[3] = {NULL, NULL, NULL};
        size_t lens[3] = {0, 0, 0};
        for (int e = 0; e < 2; e++) {
            snprintf(path, sizeof path, "%s/fused-%d-%d.safetensors", tmpdir, mi, e);
            ds3_state_free(dump_self(m, tok, T, DS3_ATTN_ABSORB, e, path));
            bufs[e] = th_read_file(path, &lens[e]);
            if (e) bufs[2] = break_logits(path, &lens[2]);
        }
        const char *build_name[] = {"ds3's own", "a bf16 build", "broken logits"};
        ds3_cmp_opts opts[4];
        for (int p = 0; p < 4; p++) {
            opts[p] = (ds3_cmp_opts){.profile = ds3_cmp_replay_profile_find(p == 1 ? "bf16" : p == 2 ? "fp8" : "fp32"),
                                     .all_rows = true, .weights_at_test_idx = true, .ignore_test_only = true};
            if (p == 3) opts[p] = (ds3_cmp_opts){.profile = opts[0].profile, .elementwise = true, .atol = 1e-5,
                                                 .rtol = 1e-3, .all_rows = true, .weights_at_test_idx = true,
                                                 .ignore_test_only = true};
        }
        int cases = 0, fields = 0, failing = 0;
        for (int bi = 0; bi < 3; bi++) {
            ds3_st_file *b = NULL;
            CHECK(bufs[bi] && ds3_st_open_mem(bufs[bi], lens[bi], build_name[bi], &b) == DS3_OK, "open %s",
                  build_name[bi]);
            if (!b) continue;
            /* chunk 0: the state's own (one chunk of logits); 4: four rows a
             * chunk, where the logits are kept and compared afterwards */
            for (int chunk = 0; chunk <= 4; chunk += 4)
                for (int p = 0; p < 4; p++) {
                    ds3_state *s = NULL;
                    ds3_state_new(m, T, DS3_ATTN_ABSORB, &s);
                    if (chunk) s->max_T = chunk;  /* the scratch stays sized for T rows */
                    ds3_dumper *d[3];
                    ds3_replay_report g[3];
                    ds3_cmp_report r[3];
                    bool ok = true;
                    for (int h = 0; h < 3; h++) {
                        ds3_status st = replay_as(s, b, tok, T, &opts[p], (how)h, &d[h], &g[h], &r[h]);
                        CHECK(st == DS3_OK, "replay: %s", ds3_last_error());
                        ok = ok && st == DS3_OK;
                    }
                    if (ok) {
                        char what[160];
                        snprintf(what, sizeof what, "%s, %s, opts %d, chunk %d", names[mi], build_name[bi], p, chunk);
                        reports_same(&r[0], &r[1], what, &fields);
                        reports_same(&r[0], &r[2], what, &fields);
                        failing += !r[1].ok;
                        /* one chunk: every logits tensor was compared as it came (else the
                         * test compared the old pass with itself) */
                        const int want = chunk ? 0 : 1 + m->n_mtp;
                        CHECK(g[1].n_done == want && g[2].n_done == want, "%s: %d and %d logits compared as they "
                              "came, want %d", what, g[1].n_done, g[2].n_done, want);
                        CHECK(g[0].n_done == 0, "%s: without cmp, %d compared", what, g[0].n_done);
                        /* not kept: no values, and nothing to write; kept: the values, bit for bit */
                        ds3_st_file *v0 = NULL, *v1 = NULL, *v2 = NULL;
                        ds3_dumper_view(d[0], &v0);
                        ds3_dumper_view(d[1], &v1);
                        ds3_dumper_view(d[2], &v2);
                        CHECK(v0->n == v1->n && v0->n == v2->n, "%s: %d, %d, %d tensors captured", what, v0->n,
                              v1->n, v2->n);
                        for (int i = 0; i < v0->n && v0->n == v1->n && v0->n == v2->n; i++) {
                            const ds3_st_entry *x = &v0->entries[i], *y = &v1->entries[i], *z = &v2->entries[i];
                            const bool gone = !chunk && (strcmp(x->name, "logits") == 0 || has(x->name, ".logits"));
                            CHECK(strcmp(x->name, y->name) == 0 && strcmp(x->name, z->name) == 0,
                                  "%s: tensor %d is %s, %s, %s", what, i, x->name, y->name, z->name);
                            CHECK(gone ? y->data == NULL : y->data && memcmp(x->data, y->data, x->nbytes) == 0,
                                  "%s: %s %s", what, x->name, gone ? "kept without -o" : "not the same bits");
                            CHECK(z->data && memcmp(x->data, z->data, x->nbytes) == 0, "%s: %s kept: not the same "
                                  "bits", what, x->name);
                        }
                        ds3_dumper_view_free(v0);
                        ds3_dumper_view_free(v1);
                        ds3_dumper_view_free(v2);
                        if (!chunk) {
                            void *out = NULL;
                            size_t len = 0;
                            CHECK(ds3_dumper_write_mem(d[1], NULL, &out, &len) == DS3_ERR_ARG &&
                                      has(ds3_last_error(), "compared and not kept"),
                                  "%s: a dumper without its logits written: %s", what, ds3_last_error());
                            free(out);
                        }
                        cases++;
                    }
                    for (int h = 0; h < 3; h++) {
                        ds3_cmp_report_free(&r[h]);
                        ds3_replay_report_free(&g[h]);
                        ds3_dumper_free(d[h]);
                    }
                    ds3_state_free(s);
                }
            ds3_st_close(b);
        }
        printf("  %s: %d cases (3 builds x 4 bounds x 2 chunkings), %d results the same field for field, %d "
               "failing reports among them\n", names[mi], cases, fields, failing);
        for (int e = 0; e < 3; e++) free(bufs[e]);
        ds3_model_free(m);
    }
    free(tok);
}

/* ========================================================================== */
/* Planted faults: caught at their own layer, nowhere else                     */
/* ========================================================================== */

/* Replay `build` on `model`; the first tensor outside must be `first`, and
 * every tensor of another layer than `own` ("layers.2.") must be within. */
static void expect_fault_profile(const char *model, const char *build, const char *profile, const char *first,
                                 const char *own, const char *what) {
    result r = RUN("replay", "-m", model, build, "--json", "--profile", profile);
    CHECK(r.rc == 1, "%s: exit %d, want 1\n%s%s", what, r.rc, r.out, r.err);
    cJSON *j = cJSON_Parse(r.out);
    CHECK(j != NULL, "%s: --json output does not parse", what);
    if (j) {
        const cJSON *fo = cJSON_GetObjectItem(j, "first_outside");
        CHECK(cJSON_IsString(fo) && strncmp(fo->valuestring, first, strlen(first)) == 0 &&
                  (fo->valuestring[strlen(first)] == '\0' || fo->valuestring[strlen(first)] == ' '),
              "%s: first outside is %s, want %s", what, cJSON_IsString(fo) ? fo->valuestring : "null", first);
        int others = 0, bad = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tensors")) {
            const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
            if (strncmp(name, own, strlen(own)) == 0) continue;
            others++;
            bool ok = cJSON_IsTrue(cJSON_GetObjectItem(t, "ok"));
            bad += !ok;
            CHECK(ok, "%s: %s (another layer) is outside: %s", what, name,
                  cJSON_GetStringValue(cJSON_GetObjectItem(t, "why")));
        }
        printf("  %s: first outside %s; %d tensors of other layers, %d outside\n", what,
               cJSON_IsString(fo) ? fo->valuestring : "none", others, bad);
        cJSON_Delete(j);
    }
    done(&r);
}

static void expect_fault(const char *model, const char *build, const char *first, const char *own,
                         const char *what) {
    expect_fault_profile(model, build, "fp32", first, own, what);
}

static void test_faults(const char *models) {
    th_section("planted faults: each caught at its own layer and nowhere else");
    char dir[512], clean[600], path[600];
    snprintf(dir, sizeof dir, "%s/tiny-f32", models);
    ds3_model *m = NULL;
    CHECK(ds3_model_load(dir, &m) == DS3_OK, "load: %s", ds3_last_error());
    if (!m) return;
    int T;
    int32_t *tok = parse(TOKENS, &T);
    const int K = m->cfg.num_experts_per_tok, E = m->cfg.n_routed_experts;

    snprintf(clean, sizeof clean, "%s/clean.safetensors", tmpdir);
    build_dump(m, tok, T, NULL, FAULT_NONE, -1, NULL, clean);
    expect(RUN("replay", "-m", dir, clean), 0, "every tensor within fp32", "the clean build");

    /* one wrong expert in every row of layer 2: its last expert replaced by
     * the next index the row does not hold */
    ds3_st_file *c = NULL;
    ds3_st_open(clean, &c);
    const ds3_st_entry *ci = ds3_st_find(c, "layers.2.moe.topk_idx");
    int32_t *wrong = malloc((size_t)T * K * sizeof(int32_t));
    memcpy(wrong, ci->data, ci->nbytes);
    for (int t = 0; t < T; t++) {
        int32_t *row = wrong + (size_t)t * K, e = row[K - 1];
        for (bool in = true; in;) {
            e = (e + 1) % E;
            in = false;
            for (int k = 0; k < K; k++) in |= row[k] == e;
        }
        row[K - 1] = e;
    }
    snprintf(path, sizeof path, "%s/wrong-expert.safetensors", tmpdir);
    build_dump(m, tok, T, NULL, FAULT_WRONG_EXPERT, 2, wrong, path);
    expect_fault(dir, path, "layers.2.moe.topk_idx", "layers.2.", "one wrong expert per row in layer 2");

    snprintf(path, sizeof path, "%s/no-mscale.safetensors", tmpdir);
    build_dump(m, tok, T, NULL, FAULT_NO_MSCALE, 1, NULL, path);
    expect_fault(dir, path, "layers.1.attn.out", "layers.1.", "layer 1's softmax scale without mscale");

    /* RoPE on the wrong half of q in layer 1; first, the written-out attention
     * without the fault is ds3's own (so the fault is the only difference) */
    {
        ds3_state *s = NULL;
        ds3_state_new(m, T, DS3_ATTN_NAIVE, &s);
        const int D = m->cfg.hidden_size;
        const ds3_st_entry *h = ds3_st_find(c, "layers.0.out"), *a = ds3_st_find(c, "layers.1.attn.out");
        ds3_real *xn = malloc(h->nbytes), *y = malloc(h->nbytes);
        for (int t = 0; t < T; t++)
            ds3_norm(s, xn + (size_t)t * D, (const ds3_real *)h->data + (size_t)t * D, m->layers[1].input_layernorm, D);
        attn_written_out(s, &m->layers[1], y, xn, T, false);
        double worst = 0, mx = 0;
        for (long i = 0; i < (long)T * D; i++) {
            double r = ((const ds3_real *)a->data)[i];
            worst = fmax(worst, fabs(y[i] - r));
            mx = fmax(mx, fabs(r));
        }
        CHECK(worst <= 1e-5 * mx, "the written-out attention is not ds3's: max|Δ|/max|r| = %.3g", worst / mx);
        printf("  the written-out attention without the fault: max|Δ|/max|ref| = %.2g against ds3's\n", worst / mx);
        free(xn);
        free(y);
        ds3_state_free(s);
    }
    snprintf(path, sizeof path, "%s/rope-half.safetensors", tmpdir);
    build_dump(m, tok, T, NULL, FAULT_ROPE_HALF, 1, NULL, path);
    expect_fault(dir, path, "layers.1.attn.out", "layers.1.", "layer 1's q RoPE on the wrong half");

    /* The same faults in a bf16 build (ds3 --emulate bf16 with the fault),
     * against the bf16 profiles: replay catches each at its layer; end-to-end
     * compare against ds3's plain dump is shown for contrast (printed, and in
     * docs/COMPARING.md). */
    {
        ds3_emulation bf16 = {DS3_EMULATE_BF16, 0, 0};
        char e2e[600];
        struct { fault f; int layer; const char *first, *own, *what; } bf[] = {
            {FAULT_WRONG_EXPERT, 2, "layers.2.moe.topk_idx", "layers.2.", "bf16 build, one wrong expert per row in layer 2"},
            {FAULT_NO_MSCALE, 1, "layers.1.attn.out", "layers.1.", "bf16 build, layer 1 without mscale"},
        };
        for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
            snprintf(path, sizeof path, "%s/bf16-fault-%zu.safetensors", tmpdir, i);
            build_dump(m, tok, T, &bf16, bf[i].f, bf[i].layer, bf[i].f == FAULT_WRONG_EXPERT ? wrong : NULL, path);
            expect_fault_profile(dir, path, "bf16", bf[i].first, bf[i].own, bf[i].what);
            result r = RUN("compare", clean, path, "--profile", "bf16");
            /* the first tensor end to end fails, if any: its line in the table */
            const char *bad = strstr(r.out, "OUTSIDE") ? strstr(r.out, "OUTSIDE") : strstr(r.out, "NOT CHECKED");
            const char *line = bad;
            while (line && line > r.out && line[-1] != '\n') line--;
            snprintf(e2e, sizeof e2e, "%.*s", line ? (int)strcspn(line, " ") : 0, line ? line : "");
            printf("  %s, end to end (compare --profile bf16 against ds3's dump): exit %d, %s%s\n", bf[i].what, r.rc,
                   r.rc == 0 ? "not caught" : "first failing: ", e2e);
            done(&r);
        }
    }
    free(wrong);

    /* 1% on the down projection of an expert layer 2's first row runs, in a
     * copy of the checkpoint */
    char copy[600], cmd[1400];
    snprintf(copy, sizeof copy, "%s/tiny-f32-fault", tmpdir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", dir, copy);
    CHECK(system(cmd) == 0, "copy the checkpoint");
    int expert = ((const int32_t *)ci->data)[0];
    char wname[128], file[700];
    snprintf(wname, sizeof wname, "model.layers.2.mlp.experts.%d.down_proj.weight", expert);
    snprintf(file, sizeof file, "%s/model.safetensors", copy);
    ds3_st_file *w = NULL;
    CHECK(ds3_st_open(file, &w) == DS3_OK, "open %s: %s", file, ds3_last_error());
    const ds3_st_entry *we = w ? ds3_st_find(w, wname) : NULL;
    CHECK(we && we->dtype == DS3_DT_F32, "%s: an F32 tensor in %s", wname, file);
    if (we) {
        size_t n = we->nbytes / 4;
        float *v = malloc(we->nbytes);
        memcpy(v, we->data, we->nbytes);
        for (size_t i = 0; i < n; i++) v[i] *= 1.01f;
        long off = (long)((const char *)we->data - (const char *)w->map);
        FILE *fp = fopen(file, "r+b");
        CHECK(fp && fseek(fp, off, SEEK_SET) == 0 && fwrite(v, 4, n, fp) == n, "patch %s", file);
        if (fp) fclose(fp);
        free(v);
    }
    ds3_st_close(w);
    snprintf(path, sizeof path, "%s/down-proj.safetensors", tmpdir);
    expect(RUN("dump", "-m", copy, "--tokens", TOKENS, "-o", path), 0, NULL, "dump of the faulty checkpoint");
    expect_fault(dir, path, "layers.2.ffn.out", "layers.2.", "1% on one expert's down_proj in layer 2");
    ds3_st_close(c);
    free(tok);
    ds3_model_free(m);
}

/* ========================================================================== */
/* The CLI                                                                     */
/* ========================================================================== */

/* A copy of dump src without tensor `drop` (NULL: none), with `tokens`
 * metadata (NULL: none), and with tensor `shrink` (NULL: none) one row short. */
static void variant(const char *src, const char *dst, const char *drop, const char *tokens, const char *shrink) {
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(src, &f) == DS3_OK, "open %s", src);
    if (!f) return;
    ds3_st_writer *w = ds3_stw_new();
    for (int i = 0; i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        if (drop && strcmp(e->name, drop) == 0) continue;
        int64_t shape[8];
        memcpy(shape, e->shape, sizeof shape);
        if (shrink && strcmp(e->name, shrink) == 0) shape[0]--;
        ds3_stw_add(w, e->name, e->dtype, e->ndim, shape, e->data);
    }
    if (tokens) ds3_stw_meta(w, "tokens", tokens);
    CHECK(ds3_stw_write(w, dst) == DS3_OK, "write %s: %s", dst, ds3_last_error());
    ds3_stw_free(w);
    ds3_st_close(f);
}

static void test_cli(const char *models) {
    th_section("ds3 replay: usage, missing inputs, errors, -o, --json");
    char dir[512], build[600], path[600], out[600];
    snprintf(dir, sizeof dir, "%s/tiny-f32", models);
    snprintf(build, sizeof build, "%s/cli.safetensors", tmpdir);
    expect(RUN("dump", "-m", dir, "--tokens", TOKENS, "-o", build), 0, NULL, "dump");
    expect(RUN("replay", "--help"), 0, "usage: ds3 replay", "--help");
    expect(RUN("help", "replay"), 0, "usage: ds3 replay", "help replay");
    expect(RUN("replay", build), 2, "missing -m DIR", "no -m");
    expect(RUN("replay", "-m", dir), 2, "missing BUILD", "no BUILD");
    expect(RUN("replay", "-m", dir, build, "--routing", "x"), 2, "--routing", "bad --routing");
    expect(RUN("replay", "-m", dir, build, "--profile", "x"), 2, "--profile", "bad --profile");
    expect(RUN("replay", "-m", dir, build, "--bogus"), 2, "unknown option", "unknown option");
    expect(RUN("replay", "-m", dir, build, "-o", "-"), 2, "replay prints its report on stdout",
           "-o - refused (stdout carries the report)");
    snprintf(path, sizeof path, "%s/notok.safetensors", tmpdir);
    variant(build, path, NULL, NULL, NULL);
    expect(RUN("replay", "-m", dir, path), 2, "no tokens", "no tokens anywhere");
    expect(RUN("replay", "-m", dir, path, "--tokens", TOKENS), 0, "PASS", "--tokens given");
    expect(RUN("replay", "-m", dir, build, "--tokens", "1,2,3"), 1, "differ", "--tokens not BUILD's");
    expect(RUN("replay", "-m", dir, path, "--tokens", "1,,2"), 2, "--tokens: empty entry", "a bad --tokens");
    snprintf(out, sizeof out, "%s/badmeta.safetensors", tmpdir);
    variant(build, out, NULL, "1,x,3", NULL);
    expect(RUN("replay", "-m", dir, out), 1, "BUILD's tokens metadata: 'x'", "bad tokens metadata");
    variant(build, out, NULL, "1,2,999999", NULL);
    expect(RUN("replay", "-m", dir, out), 1, "token 999999 at index 2 is out of range", "a token past the vocab");
    expect(RUN("replay", "-m", dir, build, "--routing", "own"), 0, "routing own", "--routing own");
    expect(RUN("replay", "-m", dir, build, "--kernels", "ref"), 0, "PASS", "--kernels ref against fast");
    expect(RUN("replay", "-m", dir, "/nonexistent.safetensors"), 1, "BUILD", "a missing BUILD");

    snprintf(path, sizeof path, "%s/noattn.safetensors", tmpdir);
    variant(build, path, "layers.1.attn.out", TOKENS, NULL);
    expect(RUN("replay", "-m", dir, path), 1, "NOT CHECKED (no layers.1.attn.out in BUILD)", "attn.out missing");
    snprintf(path, sizeof path, "%s/noout.safetensors", tmpdir);
    variant(build, path, "layers.0.out", TOKENS, NULL);
    expect(RUN("replay", "-m", dir, path), 1, "layers.1: NOT CHECKED (no layers.0.out in BUILD)",
           "layer input missing");
    snprintf(path, sizeof path, "%s/short.safetensors", tmpdir);
    variant(build, path, NULL, TOKENS, "layers.1.out");
    snprintf(out, sizeof out, "%s/replayed.safetensors", tmpdir);
    expect(RUN("replay", "-m", dir, path, "-o", out), 1, "BUILD layers.1.out: shape [9,200], expected [10,200]",
           "a shape mismatch");
    CHECK(!exists(out), "-o written on an error");
    expect(RUN("replay", "-m", dir, build, "-o", out), 0, "PASS", "-o");
    ds3_st_file *f = NULL;
    CHECK(exists(out) && ds3_st_open(out, &f) == DS3_OK, "-o: no readable file");
    if (f) {
        CHECK(ds3_st_find(f, "layers.2.ffn.out") && ds3_st_meta(f, "replay_of"), "-o: tensors and metadata");
        ds3_st_close(f);
    }
    result r = RUN("replay", "-m", dir, build, "--json");
    cJSON *j = cJSON_Parse(r.out);
    CHECK(r.rc == 0 && j && cJSON_IsTrue(cJSON_GetObjectItem(j, "pass")) &&
              cJSON_IsNull(cJSON_GetObjectItem(j, "first_outside")) &&
              cJSON_GetArraySize(cJSON_GetObjectItem(j, "tensors")) == 27,
          "--json: rc %d\n%s", r.rc, r.out);
    cJSON_Delete(j);
    done(&r);
}

/* ========================================================================== */
/* Genuine builds pass their replay profile, with every row compared           */
/* ========================================================================== */

static void test_genuine(const char *models, const char *refdir) {
    th_section("genuine builds: transformers float32 / bf16 / fp8, ds3 --emulate fp8, the float64 oracle");
    char dir[512], build[600], emu[600];
    struct { const char *model, *file, *pass, *fail; } g[] = {
        {"tiny-bf16", "emulate/tiny-bf16-hf-bf16.safetensors", "bf16", "fp32"},
        {"tiny-fp8", "emulate/tiny-fp8-hf-fp8act.safetensors", "fp8", "bf16"},
        {"tiny-f32", "replay/tiny-f32-hf-f32.safetensors", "fp32", NULL},
        {"tiny-f32", "tiny-f32.safetensors", "fp32", NULL},
        {"tiny-v2", "tiny-v2.safetensors", "fp32", NULL},
        {"tiny-mtp2", "tiny-mtp2.safetensors", "fp32", NULL},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", models, g[i].model);
        snprintf(build, sizeof build, "%s/%s", refdir, g[i].file);
        result r = RUN("replay", "-m", dir, build, "--profile", g[i].pass, "--json");
        cJSON *j = cJSON_Parse(r.out);
        int rows_out = 0, n = 0;
        const cJSON *t;
        if (j) cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tensors")) {
            rows_out += (int)cJSON_GetNumberValue(cJSON_GetObjectItem(t, "rows_excluded"));
            n++;
        }
        CHECK(r.rc == 0 && j && rows_out == 0 && n >= 18, "%s on %s: exit %d, %d tensors, %d rows left out\n%s",
              g[i].file, g[i].pass, r.rc, n, rows_out, r.out);
        cJSON_Delete(j);
        done(&r);
        if (g[i].fail)
            expect(RUN("replay", "-m", dir, build, "--profile", g[i].fail), 1, "first outside",
                   "a genuine build outside a tighter profile");
    }
    snprintf(dir, sizeof dir, "%s/tiny-fp8", models);
    snprintf(emu, sizeof emu, "%s/emu-fp8.safetensors", tmpdir);
    expect(RUN("dump", "-m", dir, "--tokens", TOKENS, "--emulate", "fp8", "-o", emu), 0, NULL, "dump --emulate fp8");
    expect(RUN("replay", "-m", dir, emu, "--profile", "fp8"), 0, "every tensor within fp8", "ds3 --emulate fp8");
}

int main(void) {
    cli = getenv("DS3_CLI");
    const char *models = getenv("DS3_MODELS");
    if (!cli || !models) {
        fprintf(stderr, "-- DS3_CLI or DS3_MODELS not set: replay tests skipped\n");
        return th_finish();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-replay-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_self(models);
    test_fused(models);
    test_faults(models);
    test_cli(models);
    const char *refdir = getenv("DS3_REF");
    if (refdir) test_genuine(models, refdir);
    remove_tmpdir();
    return th_finish();
}
