/*
 * state.c — the inference state: what one sequence's forward passes write
 * (docs/ARCHITECTURE.md §2), and the settings that belong to it.
 *
 *   caches    one MLA cache per layer (main and MTP), sized for max_seq positions
 *   scratch   the residual stream x, its normalised copy xn, a sublayer's
 *             output y, and one arena the sublayers take their buffers from,
 *             sized once for max_T tokens by asking each sublayer's own plan
 *             (ds3_*_reserve): nothing is allocated while running
 *   windows   RMSNorm_final(h) of the last chunk and the MTP depths' outputs,
 *             which the MTP rows read (their bookkeeping is in mtp.c)
 *   settings  the kernel mode, the GPU rounding to emulate, dumping, MTP on/off
 *
 * Everything a forward pass reads besides the (read-only) model is here, so
 * two states on one model may run in two threads at once, each with its own
 * kernels and emulation, and give each its own single-threaded bits.
 */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

/* Tokens per forward chunk: bounds the scratch, big enough for efficient GEMMs. */
#define DS3_MAX_CHUNK 256

/* ========================================================================== */
/* Creation                                                                    */
/* ========================================================================== */

/* The scratch a call of T tokens needs: the most that any one sublayer takes
 * (they run one after another, each from the start of the scratch). */
static void scratch_need(const ds3_model *m, int T, int max_seq, ds3_attn_mode attn, size_t *nr, size_t *ni) {
    const ds3_config *c = &m->cfg;
    ds3_arena a[4] = {{0}};
    ds3_mla_reserve(&a[0], c, T, max_seq, attn);
    ds3_take(&a[1], ds3_mlp_need(T, c->intermediate_size));  /* a dense FFN (layer.c) */
    if (c->n_routed_experts > 0) ds3_moe_reserve(&a[2], c, T);
    if (m->n_mtp > 0) ds3_mtp_reserve(&a[3], c, T);
    *nr = *ni = 1;  /* never a zero-byte allocation */
    for (int k = 0; k < 4; k++) {
        if (a[k].nr > *nr) *nr = a[k].nr;
        if (a[k].ni > *ni) *ni = a[k].ni;
    }
}

/* The most columns (inputs) of any weight matrix the forward pass multiplies
 * by: the BLAS tile buffers are sized for it up front. */
static int64_t widest_matrix(const ds3_config *c) {
    int64_t w[] = {c->hidden_size, 2 * (int64_t)c->hidden_size, c->intermediate_size,
                   (int64_t)c->moe_intermediate_size * (c->n_shared_experts > 1 ? c->n_shared_experts : 1),
                   c->q_lora_rank, c->kv_lora_rank, (int64_t)c->num_attention_heads * c->v_head_dim};
    int64_t m = 1;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (w[i] > m) m = w[i];
    return m;
}

ds3_status ds3_state_new(const ds3_model *m, int max_seq, ds3_attn_mode attn, ds3_state **out) {
    *out = NULL;
    const ds3_config *c = &m->cfg;
    if (max_seq <= 0)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_new: max_seq must be positive, got %d", max_seq);
    if (attn != DS3_ATTN_ABSORB && attn != DS3_ATTN_NAIVE)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_new: unknown attention mode %d", (int)attn);

    ds3_state *s = ds3_calloc(1, sizeof *s);
    if (!s) return DS3_ERR_NOMEM;
    s->m = m;
    s->max_seq = max_seq;
    s->attn = attn;
    s->kernels = DS3_KERNELS_FAST;
    s->max_T = max_seq < DS3_MAX_CHUNK ? max_seq : DS3_MAX_CHUNK;

    const size_t D = c->hidden_size, H = c->num_attention_heads, C = c->kv_lora_rank,
                 Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, S = max_seq;
    const int n_cache = c->num_hidden_layers + m->n_mtp;
    s->cache = ds3_calloc((size_t)n_cache, sizeof *s->cache);
    bool ok = s->cache != NULL;
    for (int i = 0; i < n_cache && ok; i++) {
        ds3_kv_cache *kv = &s->cache[i];
        if (attn == DS3_ATTN_ABSORB) {
            kv->c = ds3_calloc(S * C, sizeof(ds3_real));
            kv->k_pe = ds3_calloc(S * Dr, sizeof(ds3_real));
            ok = kv->c && kv->k_pe;
        } else {
            kv->k = ds3_calloc(S * H * (Dn + Dr), sizeof(ds3_real));
            kv->v = ds3_calloc(S * H * Dv, sizeof(ds3_real));
            ok = kv->k && kv->v;
        }
    }
    const size_t T = s->max_T;
    scratch_need(m, (int)T, max_seq, attn, &s->work_n, &s->iwork_n);
    if (ok) {
        s->x = ds3_calloc(T * D, sizeof(ds3_real));
        s->xn = ds3_calloc(T * D, sizeof(ds3_real));
        s->y = ds3_calloc(T * D, sizeof(ds3_real));
        s->work = ds3_calloc(s->work_n, sizeof(ds3_real));
        s->iwork = ds3_calloc(s->iwork_n, sizeof(int32_t));
        s->hfinal.rows = ds3_calloc((T + 1) * D, sizeof(ds3_real));
        ok = s->x && s->xn && s->y && s->work && s->iwork && s->hfinal.rows;
    }
    if (ok && m->n_mtp > 0) {
        s->hmtp = ds3_calloc((size_t)m->n_mtp, sizeof *s->hmtp);
        ok = s->hmtp != NULL;
        for (int k = 0; ok && k < m->n_mtp; k++)
            ok = (s->hmtp[k].rows = ds3_calloc((T + 1) * D, sizeof(ds3_real))) != NULL;
    }
    if (!ok) {
        ds3_state_free(s);
        return ds3_fail(DS3_ERR_NOMEM, "out of memory for the state of %d positions", max_seq);
    }
    ds3_status st = ds3_linear_prepare(widest_matrix(c));
    if (st != DS3_OK) {
        ds3_state_free(s);
        return st;
    }
    *out = s;
    return DS3_OK;
}

void ds3_state_free(ds3_state *s) {
    if (!s) return;
    int n_cache = s->m->cfg.num_hidden_layers + s->m->n_mtp;
    for (int i = 0; s->cache && i < n_cache; i++) {
        free(s->cache[i].c);
        free(s->cache[i].k_pe);
        free(s->cache[i].k);
        free(s->cache[i].v);
    }
    free(s->cache);
    free(s->x);
    free(s->xn);
    free(s->y);
    free(s->work);
    free(s->iwork);
    free(s->hfinal.rows);
    for (int k = 0; s->hmtp && k < s->m->n_mtp; k++) free(s->hmtp[k].rows);
    free(s->hmtp);
    free(s->dump_logits);
    ds3_dumper_free(s->dump);
    ds3_emul_free(s->emul);
    ds3_emul_release();
    ds3_linear_release();
    free(s);
}

/* ========================================================================== */
/* Settings                                                                    */
/* ========================================================================== */

ds3_status ds3_state_set_kernels(ds3_state *s, ds3_kernels k) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_state_set_kernels: state is NULL");
    if (k != DS3_KERNELS_FAST && k != DS3_KERNELS_DETERMINISTIC && k != DS3_KERNELS_REF)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_set_kernels: unknown kernels %d", (int)k);
    if (k == DS3_KERNELS_FAST) {
        ds3_status st = ds3_linear_prepare(widest_matrix(&s->m->cfg));
        if (st != DS3_OK) return st;
    }
    s->kernels = k;
    return DS3_OK;
}

ds3_kernels ds3_state_kernels(const ds3_state *s) { return s->kernels; }

ds3_status ds3_set_emulation(ds3_state *s, const ds3_emulation *e) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_set_emulation: state is NULL");
    ds3_emul *em;
    ds3_status st = ds3_emul_new(e, &em);
    if (st) return st;
    ds3_emul_free(s->emul);
    s->emul = em;
    return DS3_OK;
}

ds3_status ds3_state_set_mtp(ds3_state *s, int on) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_state_set_mtp: state is NULL");
    if (on && s->m->n_mtp == 0)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_set_mtp: the model has no MTP layers (%s)", s->m->dir);
    s->mtp_on = on != 0;
    return DS3_OK;
}

/* ========================================================================== */
/* Dumps                                                                       */
/* ========================================================================== */

ds3_status ds3_dump_begin(ds3_state *s, int total) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_dump_begin: state is NULL");
    if (total < 1 || total > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_dump_begin: %d positions, the state holds 1..%d", total, s->max_seq);
    ds3_dumper *d = ds3_dumper_new(total);
    if (!d) return ds3_fail(DS3_ERR_NOMEM, "ds3_dump_begin: out of memory");
    ds3_dumper_free(s->dump);   /* a dump begun twice starts over */
    s->dump = d;
    return DS3_OK;
}

/* The weights must still be the files that were loaded: a shard truncated or
 * rewritten during the pass refuses the dump (nothing is written); their
 * identities go into the dump (ds3_shards). (A state without a model is a
 * test's: nothing to check or record.) */
static ds3_status dump_check_weights(ds3_state *s) {
    ds3_status st = s->m ? ds3_model_check(s->m) : DS3_OK;
    char *shards = st == DS3_OK && s->m ? ds3_model_shards_json(s->m) : NULL;
    if (st == DS3_OK && s->m && !shards) st = ds3_fail(DS3_ERR_NOMEM, "dump: out of memory listing the shards");
    if (st == DS3_OK && shards) st = ds3_dumper_set_shards(s->dump, shards);
    free(shards);
    return st;
}

/* Capturing stops whether or not the write succeeds: a failed write leaves
 * the state as it was before ds3_dump_begin, not half-dumping. */
ds3_status ds3_dump_write(ds3_state *s, const char *path, const char *const *metadata_kv) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_dump_write: state is NULL");
    if (!s->dump) return ds3_fail(DS3_ERR_ARG, "ds3_dump_write: no dump in progress (call ds3_dump_begin)");
    ds3_status st = dump_check_weights(s);
    if (st == DS3_OK) st = ds3_dumper_write(s->dump, path, metadata_kv);
    ds3_dumper_free(s->dump);
    s->dump = NULL;
    return st;
}

ds3_status ds3_dump_write_mem(ds3_state *s, const char *const *metadata_kv, void **buf, size_t *len) {
    if (!buf || !len) return ds3_fail(DS3_ERR_ARG, "ds3_dump_write_mem: buf or len is NULL");
    *buf = NULL;
    *len = 0;
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_dump_write_mem: state is NULL");
    if (!s->dump) return ds3_fail(DS3_ERR_ARG, "ds3_dump_write_mem: no dump in progress (call ds3_dump_begin)");
    ds3_status st = dump_check_weights(s);
    if (st == DS3_OK) st = ds3_dumper_write_mem(s->dump, metadata_kv, buf, len);
    ds3_dumper_free(s->dump);
    s->dump = NULL;
    return st;
}
