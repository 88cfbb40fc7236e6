/*
 * spec.c — self-speculative decoding with the MTP layer (docs/MODEL.md §6; DeepSeek-V3
 * paper §5.4.3; the rule of Leviathan, Kalman, Matias 2023 and Chen et al.
 * 2023).
 *
 * One round, with the main model's cache holding positions 0..P-1 and the
 * next token t_P already chosen:
 *
 *   draft    MTP depth 0 on the rows not yet run (their hidden states are the
 *            last verification's, their tokens now known), the last of which
 *            is row P-1 with t_P: it drafts d_1 (predicting t_{P+1}). Then the
 *            same layer is re-applied to its own output, as vLLM and SGLang do
 *            with V3's single MTP layer: step j runs at position P-1+j with
 *            input (its previous output after shared_head.norm, d_j) and
 *            drafts d_{j+1}. N drafts cost N passes of one layer and the head.
 *   verify   one main forward over [t_P, d_1 .. d_N] at positions P..P+N:
 *            row j gives the target distribution p_j of token P+1+j. The
 *            weights are read once for all N+1 rows.
 *   accept   the drafts in order (rule below); the first rejection, or the
 *            bonus row p_N when all pass, gives one more token. A round emits
 *            1..N+1 tokens.
 *   rollback the positions after the last accepted token are forgotten
 *            (ds3_state_truncate): the next round's forward starts there and
 *            overwrites them, in the main cache and in the MTP cache alike.
 *
 * The acceptance rule. Draft x was drawn from q (the MTP's distribution, with
 * the same temperature and top-p as the target), p is the target's:
 *   accept x with probability min(1, p(x)/q(x));
 *   on rejection draw from the residual norm(max(0, p − q)) and stop;
 *   if all N drafts pass, draw a bonus token from p_N.
 * Each emitted token is then distributed exactly as p (the residual makes up
 * what acceptance under-samples: P(x) = min(p,q)(x) + (1 − Σ min(p,q))·
 * max(0,p−q)(x)/Σ max(0,p−q) = p(x)), so the output distribution is that of
 * sampling without drafts; only the random stream is used differently, so a
 * given seed gives other (equally distributed) tokens. tests/test_spec.c checks
 * the rule against known probabilities.
 *
 * Greedy (temp 0) is the limit where p and q are one-hot: accept iff the draft
 * is the target's argmax, else emit the argmax. The output is then the greedy
 * output without drafts, token for token — provided every verified row is
 * computed with the very bits of a one-token decode. That holds because a
 * verification runs the deterministic kernels (an element's bits depend only
 * on its own input row, never on T; linear.c), the attention (a fast state's:
 * its decode step's, decode_rows) and the experts work per token, and the
 * caches at positions < P are the ones a decode would have written.
 * tests/test_mtp.c checks it for 1..3 drafts, f32 and fp8.
 */
#include "generate/generate.h"

#include <stdlib.h>
#include <string.h>

/* Drafts per round: the verification is one forward of N+1 tokens. */
#define DS3_MAX_DRAFT 16

int ds3_spec_accept(ds3_sampler *smp, const double *p, const double *q, const int32_t *draft, int n, int vocab,
                    int32_t *out, double *scratch) {
    for (int j = 0; j < n; j++) {
        const double *pj = p + (size_t)j * vocab, *qj = q + (size_t)j * vocab;
        int x = draft[j];
        double u = ds3_sampler_uniform(smp);
        /* u < p/q, without dividing; q(x) > 0 since x was drawn from q */
        if (qj[x] > 0 && u * qj[x] < pj[x]) {
            out[j] = x;
            continue;
        }
        double sum = 0.0;
        for (int i = 0; i < vocab; i++) {
            double r = pj[i] - qj[i];
            scratch[i] = r > 0 ? r : 0.0;
            sum += scratch[i];
        }
        /* sum is 0 only if p == q, where a rejection cannot happen; rounding aside */
        out[j] = ds3_sample_from(sum > 0 ? scratch : pj, vocab, ds3_sampler_uniform(smp));
        return j + 1;
    }
    out[n] = ds3_sample_from(p + (size_t)n * vocab, vocab, ds3_sampler_uniform(smp));
    return n + 1;
}

/* A draft token from the MTP logits: argmax, or a draw from q (filled in). */
static int draft_token(ds3_sampler *smp, const ds3_real *logits, int V, double *q) {
    if (ds3_sampler_greedy(smp)) return ds3_sample(smp, logits, V);
    if (ds3_sampler_probs(smp, logits, V, q) != 0) return -1;
    return ds3_sample_from(q, V, ds3_sampler_uniform(smp));
}

typedef struct {
    ds3_token_fn fn;
    void *user;
    int32_t *out;
    int n;
} emitter;

/* Hand a token to the caller; non-zero: the caller asked to stop. */
static int emit(emitter *e, int32_t tok) {
    if (e->out) e->out[e->n] = tok;
    e->n++;
    return e->fn ? e->fn(e->user, tok) : 0;
}

static ds3_status generate_spec_body(ds3_state *s, ds3_sampler *smp, int n_past, const ds3_real *logits, int n_gen,
                             int n_draft, int32_t *out, ds3_token_fn on_token, void *user, ds3_spec_stats *stats) {
    if (!s || !smp || !logits)
        return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: %s is NULL", !s ? "state" : !smp ? "sampler" : "logits");
    const ds3_model *m = s->m;
    const int V = m->cfg.vocab_size, D = m->cfg.hidden_size;
    if (m->n_mtp == 0) return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: the model has no MTP layers (%s)", m->dir);
    /* The target at draft j would depend on drafts 1..j-1 through the history;
     * the rule below verifies against one distribution per row, so refuse. */
    if (ds3_sampler_penalised(smp))
        return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: a repetition penalty is not supported with speculative "
                        "decoding");
    if (n_draft < 1 || n_draft > DS3_MAX_DRAFT || n_draft + 1 > s->max_T)
        return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: %d drafts per step (1..%d)", n_draft,
                        DS3_MAX_DRAFT < s->max_T - 1 ? DS3_MAX_DRAFT : s->max_T - 1);
    if (n_gen < 0) return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: %d tokens to generate", n_gen);
    if (n_past < 1 || (int64_t)n_past + n_gen - 1 > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: %d positions then %d tokens exceed the state's %d positions",
                        n_past, n_gen, s->max_seq);
    /* Row n_past-1 is drafted from h_{n_past-1}; rows before it must be in the MTP cache. */
    if (s->mtp_done < n_past - 1 || s->hfinal.n == 0 || s->hfinal.pos + s->hfinal.n != n_past)
        return ds3_fail(DS3_ERR_ARG, "ds3_generate_spec: the state must have just run positions 0..%d with MTP on "
                        "(ds3_state_set_mtp before the prompt's ds3_forward)", n_past - 1);
    ds3_spec_stats st = {0};
    if (n_gen == 0) {
        if (stats) *stats = st;
        return DS3_OK;
    }

    const int N = n_draft;
    const bool greedy = ds3_sampler_greedy(smp);
    ds3_real *vlog = ds3_malloc((size_t)(N + 1) * V * sizeof *vlog);   /* [N+1][V] verification */
    ds3_real *mlog = ds3_malloc((size_t)V * sizeof *mlog);             /* [V] one draft step */
    ds3_real *g = ds3_malloc((size_t)2 * D * sizeof *g);               /* [2][D] chained hidden */
    int32_t *toks = ds3_malloc((size_t)(N + 1) * sizeof *toks);        /* [t_P, d_1 .. d_N] */
    int32_t *pend = ds3_malloc((size_t)(N + 2) * sizeof *pend);        /* tokens of the rows to run */
    int32_t *acc = ds3_malloc((size_t)(N + 1) * sizeof *acc);          /* emitted in a round */
    double *p = greedy ? NULL : ds3_malloc((size_t)(N + 1) * V * sizeof *p);
    double *q = greedy ? NULL : ds3_malloc((size_t)N * V * sizeof *q);
    double *scratch = greedy ? NULL : ds3_malloc((size_t)V * sizeof *scratch);
    ds3_status ret = DS3_OK;
    if (!vlog || !mlog || !g || !toks || !pend || !acc || (!greedy && (!p || !q || !scratch))) {
        ret = ds3_fail(DS3_ERR_NOMEM, "ds3_generate_spec: out of memory for %d drafts over %d tokens", N, V);
        goto done;
    }

    /* The sampler sees the forward pass's own choices: we drive the MTP here. */
    const bool saved_on = s->mtp_on;
    const ds3_kernels kmode = s->kernels;
    s->mtp_on = false;
    emitter em = {on_token, user, out, 0};

    int first = ds3_sample(smp, logits, V);
    if (first < 0) { ret = DS3_ERR_ARG; goto restore; }
    st.generated++;
    int P = n_past;               /* the position of the newest token, not yet forwarded */
    int r0 = n_past - 1;          /* first MTP row still to run */
    int npend = 1;                /* its tokens: positions r0+1 .. P */
    pend[0] = first;
    if (emit(&em, first)) goto restore;

    /* Rounds run a few tokens at a time, with the deterministic kernels: every
     * verified row then has a one-token decode's bits (greedy equality), and
     * the weights are read once for all of a call's tokens (linear.c). A fast
     * state's decode step has its own attention (mla.c, attend.c): its rows
     * keep it (decode_rows). The mode is this state's: nothing else in the
     * process changes. */
    if (kmode == DS3_KERNELS_FAST) {
        s->kernels = DS3_KERNELS_DETERMINISTIC;
        s->decode_rows = true;
    }

    while (st.generated < n_gen) {
        const int left = n_gen - (int)st.generated;
        const int Ne = N < left - 1 ? N : left - 1;   /* never draft past the end */
        toks[0] = pend[npend - 1];

        /* ---- draft ---------------------------------------------------------- */
        if (Ne > 0) {
            ds3_mtp_rows(s, 0, pend, npend, r0, mlog, 1);
            const ds3_real *in = s->hmtp[0].rows + (size_t)(s->hmtp[0].n - 1) * D;
            for (int j = 0; j < Ne; j++) {
                if (j > 0) {   /* depth 0 again, on its own output */
                    ds3_real *o = g + (size_t)(j & 1) * D;
                    ds3_mtp_block(s, 0, in, &toks[j], 1, P - 1 + j, o, mlog, 1, false);
                    in = o;
                }
                int d = draft_token(smp, mlog, V, greedy ? NULL : q + (size_t)j * V);
                if (d < 0) { ret = DS3_ERR_ARG; goto restore; }
                toks[j + 1] = d;
            }
        }

        /* ---- verify: every row with a one-token decode's bits ---------------- */
        ret = ds3_forward(s, toks, Ne + 1, P, vlog);
        if (ret) goto restore;

        /* ---- accept ------------------------------------------------------------ */
        int n_out;
        if (greedy) {
            n_out = 0;
            for (;;) {
                int best = ds3_sample(smp, vlog + (size_t)n_out * V, V);
                if (best < 0) { ret = DS3_ERR_ARG; goto restore; }
                acc[n_out++] = best;
                if (n_out > Ne || best != toks[n_out]) break;
            }
        } else {
            for (int j = 0; j <= Ne; j++)
                if (ds3_sampler_probs(smp, vlog + (size_t)j * V, V, p + (size_t)j * V) != 0) {
                    ret = DS3_ERR_ARG;
                    goto restore;
                }
            n_out = ds3_spec_accept(smp, p, q, toks + 1, Ne, V, acc, scratch);
        }
        st.rounds++;
        st.drafted += Ne;
        st.accepted += n_out - 1;
        for (int i = 0; i < n_out; i++) {
            st.generated++;
            if (emit(&em, acc[i])) goto restore;
        }

        /* ---- rollback and the rows of the next draft ---------------------------- */
        int a = n_out - 1;   /* accepted drafts */
        ds3_state_truncate(s, P + a + 1);
        r0 = P;
        npend = n_out;
        memcpy(pend, acc, (size_t)n_out * sizeof *pend);
        P += a + 1;
    }

restore:
    s->mtp_on = saved_on;
    s->kernels = kmode;
    s->decode_rows = false;
done:
    if (stats) *stats = st;
    free(vlog);
    free(mlog);
    free(g);
    free(toks);
    free(pend);
    free(acc);
    free(p);
    free(q);
    free(scratch);
    return ret;
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
ds3_status ds3_generate_spec(ds3_state *s, ds3_sampler *smp, int n_past, const ds3_real *logits, int n_gen,
                             int n_draft, int32_t *out, ds3_token_fn on_token, void *user, ds3_spec_stats *stats) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = generate_spec_body(s, smp, n_past, logits, n_gen, n_draft, out, on_token, user, stats);
    ds3_fpenv_leave(&env);
    return st;
}
