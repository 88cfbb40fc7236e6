/*
 * test_mtp.c — the MTP forward pass and self-speculative decoding on the
 * synthetic models (DS3_MODELS):
 *   - greedy output with ds3_generate_spec equals greedy output of
 *     prefill + one-token decodes, token for token, for 1, 2 and 3 drafts, on
 *     tiny in f32 and fp8 (and bf16, naive attention, a one-token prompt),
 *     with 1 and 2 threads. Random weights reject almost every draft, so the
 *     same runs on `ds3 mkmodel --mtp-agree` checkpoints (all drafts right, or
 *     70% of pairs right) cover accepted drafts, bonus tokens and rollbacks
 *     after partial acceptance;
 *   - the same through the CLI: `ds3 run --mtp --draft N` prints what `ds3 run`
 *     prints, and on stderr its decode speed and an "mtp:" line whose counts
 *     add up (tokens after the first = rounds + accepted drafts) and, on an
 *     --mtp-agree=1 checkpoint, report nearly every draft accepted;
 *   - ds3 mkmodel --mtp-agree: its metadata, and the models it refuses;
 *   - what greedy equality rests on, bit for bit: a verification forward of
 *     several tokens in deterministic kernel mode gives each row the logits a
 *     one-token decode gives (FAST mode), in f32 and fp8;
 *   - MTP rows run inside ds3_forward (ds3_state_set_mtp) agree with the same
 *     rows run explicitly (ds3_forward_mtp), chunk by chunk;
 *   - rollback: after ds3_state_truncate, a forward over other tokens gives
 *     the bits of a run that never saw the discarded ones, MTP included;
 *   - sampled speculative decoding runs and keeps its counts consistent;
 *   - argument errors, and a model without MTP layers.
 * Agreement of the MTP logits with the transformers oracle is test_ref.c's
 * job (the mtp.0.* tensors of ref_data); the acceptance rule is test_spec.c's.
 */
#include "harness.h"
#include "generate/generate.h"

#include <stdlib.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    (void)n;
}

static ds3_model *load(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(path, &m);
    CHECK(st == DS3_OK, "load %s: %s", path, ds3_last_error());
    return m;
}

/* Greedy baseline, as `ds3 run` does it: one prefill call with the logits of
 * every prompt position, then one forward per generated token. */
static int32_t *greedy_plain(const ds3_model *m, ds3_attn_mode attn, const int32_t *prompt, int T, int n_gen) {
    const int V = ds3_model_vocab_size(m);
    ds3_state *s = NULL;
    ds3_sampler *smp = NULL;
    int32_t *out = calloc((size_t)n_gen, sizeof *out);
    ds3_real *lg = malloc((size_t)T * V * sizeof *lg);
    ds3_status st = ds3_state_new(m, T + n_gen, attn, &s);
    if (!st) st = ds3_sampler_new(0.0f, 1.0f, 0, &smp);
    if (!st) st = ds3_forward(s, prompt, T, 0, lg);
    const ds3_real *last = lg + (size_t)(T - 1) * V;
    for (int k = 0; k < n_gen && !st; k++) {
        out[k] = ds3_sample(smp, last, V);
        if (k + 1 < n_gen) {
            st = ds3_forward(s, &out[k], 1, T + k, lg);
            last = lg;
        }
    }
    CHECK(st == DS3_OK, "greedy baseline: %s", ds3_last_error());
    ds3_sampler_free(smp);
    ds3_state_free(s);
    free(lg);
    return out;
}

/* The same prompt through ds3_generate_spec. */
static int32_t *greedy_spec(const ds3_model *m, ds3_attn_mode attn, const int32_t *prompt, int T, int n_gen,
                            int n_draft, ds3_spec_stats *stats) {
    const int V = ds3_model_vocab_size(m);
    ds3_state *s = NULL;
    ds3_sampler *smp = NULL;
    int32_t *out = calloc((size_t)n_gen, sizeof *out);
    ds3_real *lg = malloc((size_t)T * V * sizeof *lg);
    ds3_status st = ds3_state_new(m, T + n_gen, attn, &s);
    if (!st) st = ds3_sampler_new(0.0f, 1.0f, 0, &smp);
    if (!st) st = ds3_state_set_mtp(s, 1);
    if (!st) st = ds3_forward(s, prompt, T, 0, lg);
    if (!st) st = ds3_generate_spec(s, smp, T, lg + (size_t)(T - 1) * V, n_gen, n_draft, out, NULL, NULL, stats);
    CHECK(st == DS3_OK, "speculative, %d drafts: %s", n_draft, ds3_last_error());
    ds3_sampler_free(smp);
    ds3_state_free(s);
    free(lg);
    return out;
}

static int first_diff(const int32_t *a, const int32_t *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return -1;
}

/* Prompt: LCG ids, so the tests do not depend on a fixed list. */
static void prompt_of(int32_t *p, int T, int V, uint64_t seed) {
    for (int i = 0; i < T; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)((seed >> 33) % (uint64_t)V);
    }
}

/* min_rate: the acceptance the model must reach (an --mtp-agree model's). */
static void greedy_equality(const char *dir, const char *name, ds3_attn_mode attn, int T, int n_gen, double min_rate) {
    ds3_model *m = load(dir, name);
    if (!m) return;
    const int V = ds3_model_vocab_size(m);
    int32_t prompt[64];
    prompt_of(prompt, T, V, 7);
    int32_t *ref = greedy_plain(m, attn, prompt, T, n_gen);
    for (int n_draft = 1; n_draft <= 3; n_draft++) {
        ds3_spec_stats st = {0};
        int32_t *got = greedy_spec(m, attn, prompt, T, n_gen, n_draft, &st);
        int d = first_diff(ref, got, n_gen);
        CHECK(d < 0, "%s %s T=%d, %d drafts: greedy output differs from plain decoding at token %d (%d vs %d)",
              name, attn == DS3_ATTN_NAIVE ? "naive" : "absorb", T, n_draft, d, d >= 0 ? got[d] : 0,
              d >= 0 ? ref[d] : 0);
        CHECK(st.generated == n_gen && st.accepted <= st.drafted && st.rounds >= 1,
              "%s: counts generated %ld (want %d), accepted %ld of %ld, %ld rounds", name, st.generated, n_gen,
              st.accepted, st.drafted, st.rounds);
        /* each round emits accepted + 1 tokens, after the first token */
        CHECK(st.generated - 1 == st.rounds + st.accepted, "%s: %ld tokens after the first from %ld rounds and %ld "
              "accepted drafts", name, st.generated - 1, st.rounds, st.accepted);
        double rate = st.drafted ? (double)st.accepted / (double)st.drafted : 0;
        CHECK(rate >= min_rate, "%s, %d drafts: acceptance %.2f, expected at least %.2f", name, n_draft, rate, min_rate);
        fprintf(stderr, "%s %-12s %-6s T=%-2d %d drafts: %d tokens identical; accepted %ld of %ld drafts\n",
                d < 0 ? "ok  " : "FAIL", name, attn == DS3_ATTN_NAIVE ? "naive" : "absorb", T, n_draft, n_gen,
                st.accepted, st.drafted);
        free(got);
    }
    free(ref);
    ds3_model_free(m);
}

/* ========================================================================== */

/* A verification (4 tokens) vs 4 one-token decodes: with the deterministic
 * kernels; and as ds3_generate_spec runs a fast state's verification (the
 * deterministic kernels, the attention of a fast decode step: decode_rows)
 * against a fast state's decodes. */
static void verify_rows_bits(const char *dir, const char *name) {
    ds3_model *m = load(dir, name);
    if (!m) return;
    const int V = ds3_model_vocab_size(m), P = 6, N = 4;
    int32_t tok[P + N];
    prompt_of(tok, P + N, V, 21);
    ds3_real *lv = malloc((size_t)N * V * sizeof *lv), *ld = malloc((size_t)N * V * sizeof *ld);
    for (int fast = 0; fast < 2; fast++) {
        ds3_state *a = NULL, *b = NULL;
        ds3_status st = ds3_state_new(m, P + N, DS3_ATTN_ABSORB, &a);
        if (!st) st = ds3_state_new(m, P + N, DS3_ATTN_ABSORB, &b);
        if (!st) st = ds3_forward(a, tok, P, 0, NULL);
        if (!st) st = ds3_forward(b, tok, P, 0, NULL);
        if (!st) st = ds3_state_set_kernels(a, DS3_KERNELS_DETERMINISTIC);
        if (!st && !fast) st = ds3_state_set_kernels(b, DS3_KERNELS_DETERMINISTIC);
        if (!st) a->decode_rows = fast;
        if (!st) st = ds3_forward(a, tok + P, N, P, lv);
        for (int i = 0; i < N && !st; i++) st = ds3_forward(b, tok + P + i, 1, P + i, ld + (size_t)i * V);
        CHECK(st == DS3_OK, "runs: %s", ds3_last_error());
        if (!st)
            CHECK(memcmp(lv, ld, (size_t)N * V * sizeof *lv) == 0,
                  "%s: a %d-token verification's logits have the bits of %d one-token decodes (%s)", name, N, N,
                  fast ? "fast: decode_rows" : "deterministic");
        ds3_state_free(a);
        ds3_state_free(b);
    }
    free(lv);
    free(ld);
    ds3_model_free(m);
}

/* ========================================================================== */

/* Depth 0 run inside the forward pass (per chunk) equals the same rows run
 * explicitly with ds3_forward_mtp after each call. */
static void inline_vs_explicit(const char *dir) {
    th_section("MTP rows inside ds3_forward vs ds3_forward_mtp");
    ds3_model *m = load(dir, "tiny-f32");
    if (!m) return;
    const int V = ds3_model_vocab_size(m), T = 10;
    int32_t tok[T + 1];
    prompt_of(tok, T + 1, V, 3);

    /* inline: prefill 6, then 4 one-token calls; then row T-1 explicitly */
    ds3_state *a = NULL, *b = NULL;
    ds3_real *la = malloc((size_t)T * V * sizeof *la), *lb = malloc((size_t)T * V * sizeof *lb);
    ds3_status st = ds3_state_new(m, T, DS3_ATTN_ABSORB, &a);
    if (!st) st = ds3_state_set_mtp(a, 1);
    if (!st) st = ds3_forward(a, tok, 6, 0, NULL);
    for (int p = 6; p < T && !st; p++) st = ds3_forward(a, tok + p, 1, p, NULL);
    CHECK(!st && a->mtp_done == T - 1, "inline MTP ran rows 0..%d (mtp_done %d): %s", T - 2, a ? a->mtp_done : -1,
          ds3_last_error());
    if (!st) st = ds3_forward_mtp(a, 0, tok + T, 1, T - 1, la);

    /* explicit: the same calls without MTP, each followed by its rows */
    if (!st) st = ds3_state_new(m, T, DS3_ATTN_ABSORB, &b);
    if (!st) st = ds3_forward(b, tok, 6, 0, NULL);
    if (!st) st = ds3_forward_mtp(b, 0, tok + 1, 5, 0, NULL);
    for (int p = 6; p < T && !st; p++) {
        st = ds3_forward(b, tok + p, 1, p, NULL);
        if (!st) st = ds3_forward_mtp(b, 0, tok + p, 1, p - 1, NULL);
    }
    if (!st) st = ds3_forward_mtp(b, 0, tok + T, 1, T - 1, lb);
    CHECK(st == DS3_OK, "runs: %s", ds3_last_error());
    if (!st) {
        CHECK(memcmp(la, lb, (size_t)V * sizeof *la) == 0, "row %d's MTP logits: inline and explicit differ", T - 1);
        /* the caches of the MTP layer agree position by position */
        const ds3_kv_cache *ka = &a->cache[m->cfg.num_hidden_layers], *kb = &b->cache[m->cfg.num_hidden_layers];
        size_t n = (size_t)T * m->cfg.kv_lora_rank;
        CHECK(memcmp(ka->c, kb->c, n * sizeof(ds3_real)) == 0, "MTP latent caches agree");
    }

    /* rows outside the held window are refused with a message */
    if (!st) {
        st = ds3_forward_mtp(b, 0, tok + 1, 1, 0, NULL);
        CHECK(st == DS3_ERR_ARG && strstr(ds3_last_error(), "holds the input hidden states"),
              "row 0 after the window moved on: %s", ds3_last_error());
    }
    ds3_state_free(a);
    ds3_state_free(b);
    free(la);
    free(lb);
    ds3_model_free(m);
}

/* ========================================================================== */

/* Rollback: run wrong tokens at positions P.., truncate to P, run the right
 * ones: the logits (main and MTP) have the bits of a clean run. */
static void rollback(const char *dir) {
    th_section("rollback with ds3_state_truncate");
    ds3_model *m = load(dir, "tiny-fp8");
    if (!m) return;
    const int V = ds3_model_vocab_size(m), T = 12, P = 7;
    int32_t tok[T + 1], junk[4];
    prompt_of(tok, T + 1, V, 11);
    prompt_of(junk, 4, V, 99);
    ds3_real *lc = malloc((size_t)V * sizeof *lc), *lr = malloc((size_t)V * sizeof *lr);
    ds3_real *mc = malloc((size_t)V * sizeof *mc), *mr = malloc((size_t)V * sizeof *mr);
    ds3_state *clean = NULL, *rb = NULL;
    ds3_status st = ds3_state_new(m, T, DS3_ATTN_ABSORB, &clean);
    if (!st) st = ds3_state_new(m, T, DS3_ATTN_ABSORB, &rb);
    if (!st) st = ds3_state_set_mtp(clean, 1);
    if (!st) st = ds3_state_set_mtp(rb, 1);
    /* clean: P tokens, then one at a time */
    if (!st) st = ds3_forward(clean, tok, P, 0, NULL);
    for (int p = P; p < T && !st; p++) st = ds3_forward(clean, tok + p, 1, p, lc);
    if (!st) st = ds3_forward_mtp(clean, 0, tok + T, 1, T - 1, mc);
    /* rolled back: P tokens, 4 wrong ones in one call (as a rejected draft),
     * truncate, then the right ones */
    if (!st) st = ds3_forward(rb, tok, P, 0, NULL);
    if (!st) st = ds3_forward(rb, junk, 4, P, NULL);
    if (!st) st = ds3_state_truncate(rb, P);
    CHECK(!st && rb->mtp_done == P - 1 && rb->hfinal.pos + rb->hfinal.n <= P,
          "truncate(%d): MTP rows done %d, hidden states end at %d", P, rb->mtp_done,
          rb->hfinal.pos + rb->hfinal.n);
    for (int p = P; p < T && !st; p++) st = ds3_forward(rb, tok + p, 1, p, lr);
    if (!st) st = ds3_forward_mtp(rb, 0, tok + T, 1, T - 1, mr);
    CHECK(st == DS3_OK, "runs: %s", ds3_last_error());
    if (!st) {
        CHECK(memcmp(lc, lr, (size_t)V * sizeof *lc) == 0, "main logits after rollback equal a clean run's, bit for bit");
        CHECK(memcmp(mc, mr, (size_t)V * sizeof *mc) == 0, "MTP logits after rollback equal a clean run's, bit for bit");
    }
    CHECK(ds3_state_truncate(rb, -1) == DS3_ERR_ARG && ds3_state_truncate(rb, T + 1) == DS3_ERR_ARG,
          "truncate outside 0..max_seq is refused");
    ds3_state_free(clean);
    ds3_state_free(rb);
    free(lc);
    free(lr);
    free(mc);
    free(mr);
    ds3_model_free(m);
}

/* ========================================================================== */

static void sampled(const char *dir) {
    th_section("sampled speculative decoding");
    ds3_model *m = load(dir, "tiny-bf16");
    if (!m) return;
    const int V = ds3_model_vocab_size(m), T = 4, n = 30;
    int32_t prompt[T], out[n], out2[n];
    prompt_of(prompt, T, V, 5);
    for (int rep = 0; rep < 2; rep++) {
        ds3_state *s = NULL;
        ds3_sampler *smp = NULL;
        ds3_real *lg = malloc((size_t)T * V * sizeof *lg);
        ds3_spec_stats stt = {0};
        ds3_status st = ds3_state_new(m, T + n, DS3_ATTN_ABSORB, &s);
        if (!st) st = ds3_sampler_new(0.9f, 0.95f, 1234, &smp);
        if (!st) st = ds3_state_set_mtp(s, 1);
        if (!st) st = ds3_forward(s, prompt, T, 0, lg);
        if (!st) st = ds3_generate_spec(s, smp, T, lg + (size_t)(T - 1) * V, n, 2, rep ? out2 : out, NULL, NULL, &stt);
        CHECK(st == DS3_OK, "sampled run: %s", ds3_last_error());
        int bad = 0;
        for (int i = 0; i < n; i++) bad += (rep ? out2 : out)[i] < 0 || (rep ? out2 : out)[i] >= V;
        CHECK(bad == 0 && stt.generated == n && stt.generated - 1 == stt.rounds + stt.accepted,
              "tokens in range, counts consistent (%ld generated, %ld rounds, %ld accepted)", stt.generated,
              stt.rounds, stt.accepted);
        ds3_sampler_free(smp);
        ds3_state_free(s);
        free(lg);
    }
    CHECK(memcmp(out, out2, sizeof out) == 0, "the same seed gives the same sampled tokens");
    ds3_model_free(m);
}

/* ========================================================================== */

static void errors(const char *dir) {
    th_section("errors");
    ds3_model *m = load(dir, "tiny-f32"), *v2 = load(dir, "tiny-v2");
    if (!m || !v2) {
        ds3_model_free(m);
        ds3_model_free(v2);
        return;
    }
    const int V = ds3_model_vocab_size(m);
    int32_t tok[4] = {1, 2, 3, 4}, out[8];
    ds3_real *lg = malloc((size_t)4 * V * sizeof *lg);
    ds3_sampler *smp = NULL;
    ds3_sampler_new(0.0f, 1.0f, 0, &smp);

    ds3_state *s = NULL;
    ds3_state_new(m, 16, DS3_ATTN_ABSORB, &s);
    ds3_forward(s, tok, 4, 0, lg);
    ds3_status st = ds3_generate_spec(s, smp, 4, lg + 3 * V, 8, 1, out, NULL, NULL, NULL);
    CHECK(st == DS3_ERR_ARG && strstr(ds3_last_error(), "ds3_state_set_mtp"),
          "a prompt run without MTP is refused: %s", ds3_last_error());
    ds3_state_set_mtp(s, 1);
    ds3_forward(s, tok, 4, 0, lg);
    CHECK(ds3_generate_spec(s, smp, 4, lg + 3 * V, 8, 0, out, NULL, NULL, NULL) == DS3_ERR_ARG, "0 drafts refused");
    CHECK(ds3_generate_spec(s, smp, 4, lg + 3 * V, 8, 17, out, NULL, NULL, NULL) == DS3_ERR_ARG, "17 drafts refused");
    CHECK(ds3_generate_spec(s, smp, 4, lg + 3 * V, 14, 1, out, NULL, NULL, NULL) == DS3_ERR_ARG,
          "more positions than the state holds refused: %s", ds3_last_error());
    CHECK(ds3_forward_mtp(s, 1, tok, 1, 0, NULL) == DS3_ERR_ARG, "depth 1 of a one-depth model refused");
    int32_t badtok = V;
    CHECK(ds3_forward_mtp(s, 0, &badtok, 1, 3, NULL) == DS3_ERR_ARG, "token out of range refused");
    ds3_state_free(s);

    ds3_state *s2 = NULL;
    ds3_state_new(v2, 8, DS3_ATTN_ABSORB, &s2);
    CHECK(ds3_model_num_mtp(v2) == 0 && ds3_state_set_mtp(s2, 1) == DS3_ERR_ARG &&
              strstr(ds3_last_error(), "no MTP layers"),
          "tiny-v2 has no MTP layers: %s", ds3_last_error());
    CHECK(ds3_state_set_mtp(s2, 0) == DS3_OK, "turning MTP off is always fine");
    ds3_state_free(s2);
    ds3_sampler_free(smp);
    free(lg);
    ds3_model_free(m);
    ds3_model_free(v2);
}

/* ========================================================================== */

/* Run the CLI, return its stdout's last line (malloc'd) or NULL. */
static char *cli_line(const char *cli, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", cli, args);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char buf[8192], *last = NULL;
    while (fgets(buf, sizeof buf, p)) {
        free(last);
        last = strdup(buf);
    }
    int rc = pclose(p);
    if (rc != 0) {
        free(last);
        return NULL;
    }
    return last;
}

static void cli(const char *dir) {
    const char *bin = getenv("DS3_CLI");
    if (!bin || access(bin, X_OK) != 0) return;
    th_section("ds3 run --mtp");
    char args[1024];
    snprintf(args, sizeof args, "run -m %s/tiny-fp8 --tokens 5,17,300,42 -n 24", dir);
    char *ref = cli_line(bin, args);
    CHECK(ref != NULL, "ds3 %s", args);
    for (int n = 1; n <= 3 && ref; n++) {
        char a2[1100];
        snprintf(a2, sizeof a2, "%s --mtp --draft %d", args, n);
        char *got = cli_line(bin, a2);
        CHECK(got && strcmp(got, ref) == 0, "ds3 %s printed\n  %s  not\n  %s", a2, got ? got : "(failed)", ref);
        free(got);
    }
    free(ref);
}

/* `ds3 run --mtp --draft N` on stderr: "decode: K tokens in S s (R tok/s)" and
 * "mtp: N drafts per step, A of D accepted (P%), R verification steps, X
 * tokens per step", consistent with each other and with the -n given. The
 * model is tiny --mtp-agree=1: the acceptance must be at least min_rate.
 * Without --mtp there is no "mtp:" line. */
static void cli_stats(const char *dir, const char *name, double min_rate) {
    const char *bin = getenv("DS3_CLI");
    if (!bin || access(bin, X_OK) != 0) return;
    th_section("ds3 run --mtp: the speed and acceptance on stderr");
    const int n_gen = 30;
    for (int n = 0; n <= 3; n++) {
        char err[700], cmd[2400], mtp[32] = "";
        snprintf(err, sizeof err, "%s/run-%d.err", dir, n);
        if (n) snprintf(mtp, sizeof mtp, " --mtp --draft %d", n);
        snprintf(cmd, sizeof cmd, "%s run -m %s/%s --tokens 5,17,300,42 -n %d%s > /dev/null 2> %s", bin, dir, name,
                 n_gen, mtp, err);
        int rc = system(cmd);
        CHECK(rc == 0, "%s: exit %d", cmd, rc);
        FILE *f = fopen(err, "r");
        CHECK(f != NULL, "stderr of %s", cmd);
        if (!f) continue;
        char line[512];
        int got_decode = 0, got_mtp = 0;
        while (fgets(line, sizeof line, f)) {
            int k;
            double secs, rate;
            if (sscanf(line, "decode: %d tokens in %lf s (%lf tok/s)", &k, &secs, &rate) == 3) {
                got_decode = 1;
                /* seconds are printed to 0.001 and tok/s to 0.1 */
                CHECK(k == n_gen - 1 && secs >= 0.001 && rate >= k / (secs + 0.0005) - 0.05 &&
                          rate <= k / (secs - 0.0005) + 0.05,
                      "--draft %d: %s  (want %d tokens, tok/s = tokens / seconds)", n, line, n_gen - 1);
            }
            long nd, a, d, r;
            double pct, per;
            if (sscanf(line, "mtp: %ld drafts per step, %ld of %ld accepted (%lf%%), %ld verification steps, %lf "
                       "tokens per step", &nd, &a, &d, &pct, &r, &per) == 6) {
                got_mtp = 1;
                CHECK(nd == n && a >= 0 && a <= d && d <= nd * r && r >= 1, "--draft %d: counts in %s", n, line);
                CHECK(n_gen - 1 == r + a, "--draft %d: %d tokens after the first = %ld rounds + %ld accepted (%s)", n,
                      n_gen - 1, r, a, line);
                CHECK(d > 0 && fabs(pct - 100.0 * (double)a / (double)d) <= 0.051 &&
                          fabs(per - (double)(n_gen - 1) / (double)r) <= 0.0051,
                      "--draft %d: the percentage and tokens per step follow from the counts: %s", n, line);
                CHECK(d > 0 && (double)a / (double)d >= min_rate, "--draft %d: %ld of %ld drafts accepted, at least "
                      "%.2f expected on %s", n, a, d, min_rate, name);
            }
        }
        fclose(f);
        unlink(err);
        CHECK(got_decode, "--draft %d: stderr has the decode speed", n);
        CHECK(got_mtp == (n > 0), "--draft %d: an \"mtp:\" line %s", n, n ? "is printed" : "only with --mtp");
    }
}

/* An --mtp-agree checkpoint of tiny in tmp/name. */
static bool make_agree(const char *tmp, const char *name, ds3_weight_dtype dt, double agree) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    ds3_mkmodel_opts o = {"tiny", dt, 1, 0.0, agree, NULL};
    ds3_status st = ds3_mkmodel(&o, path);
    CHECK(st == DS3_OK, "mkmodel --mtp-agree=%g: %s", agree, ds3_last_error());
    if (st != DS3_OK) return false;
    /* the share is in the metadata (docs/MKMODEL.md), enough to remake the files */
    char file[600], want[40];
    snprintf(file, sizeof file, "%s/model.safetensors", path);
    snprintf(want, sizeof want, "%.17g", agree);
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(file, &f) == DS3_OK, "open %s: %s", file, ds3_last_error());
    if (f) {
        const char *v = ds3_st_meta(f, "mtp_agree");
        CHECK(v && strcmp(v, want) == 0, "%s: metadata mtp_agree is %s, want %s", name, v ? v : "(absent)", want);
        ds3_st_close(f);
    }
    return true;
}

/* --mtp-agree's refusals: a share outside (0, 1], a config without MTP. */
static void agree_errors(const char *tmp) {
    char path[600];
    snprintf(path, sizeof path, "%s/refused", tmp);
    ds3_mkmodel_opts o = {"tiny", DS3_WEIGHTS_F32, 1, 0.0, 1.5, NULL};
    CHECK(ds3_mkmodel(&o, path) == DS3_ERR_ARG && strstr(ds3_last_error(), "outside (0, 1]"),
          "--mtp-agree 1.5 refused: %s", ds3_last_error());
    o.mtp_agree = -0.5;
    CHECK(ds3_mkmodel(&o, path) == DS3_ERR_ARG, "--mtp-agree -0.5 refused: %s", ds3_last_error());
    o.config = "tiny-v2";
    o.mtp_agree = 1.0;
    CHECK(ds3_mkmodel(&o, path) == DS3_ERR_ARG && strstr(ds3_last_error(), "needs a config with an MTP layer"),
          "--mtp-agree on tiny-v2 (no MTP layer) refused: %s", ds3_last_error());
    CHECK(access(path, F_OK) != 0, "nothing written for a refused --mtp-agree");
}

static void rm_model(const char *tmp, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s/model.safetensors", tmp, name);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s/config.json", tmp, name);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    rmdir(path);
}

int main(void) {
    const char *dir = getenv("DS3_MODELS");
    if (!dir) dir = "build/models";
    th_quiet = 1;

    th_section("greedy: speculative == plain, 1..3 drafts, random weights");
    greedy_equality(dir, "tiny-f32", DS3_ATTN_ABSORB, 5, 24, 0);
    greedy_equality(dir, "tiny-fp8", DS3_ATTN_ABSORB, 5, 24, 0);
    greedy_equality(dir, "tiny-bf16", DS3_ATTN_NAIVE, 5, 16, 0);
    greedy_equality(dir, "tiny-negbias", DS3_ATTN_ABSORB, 6, 16, 0);

    th_section("greedy: speculative == plain, 1..3 drafts, --mtp-agree weights");
    char tmp[] = "/tmp/ds3-test-mtp-XXXXXX";
    if (mkdtemp(tmp)) {
        if (make_agree(tmp, "agree-f32", DS3_WEIGHTS_F32, 0.7)) {
            greedy_equality(tmp, "agree-f32", DS3_ATTN_ABSORB, 5, 48, 0.4);
            set_threads(1);
            greedy_equality(tmp, "agree-f32", DS3_ATTN_NAIVE, 3, 32, 0.4);
            set_threads(2);
        }
        if (make_agree(tmp, "agree-fp8", DS3_WEIGHTS_FP8, 0.7)) {
            greedy_equality(tmp, "agree-fp8", DS3_ATTN_ABSORB, 5, 48, 0.4);
            greedy_equality(tmp, "agree-fp8", DS3_ATTN_ABSORB, 1, 32, 0.4);
        }
        if (make_agree(tmp, "agree1-fp8", DS3_WEIGHTS_FP8, 1.0)) {
            greedy_equality(tmp, "agree1-fp8", DS3_ATTN_ABSORB, 4, 40, 0.95);
            cli_stats(tmp, "agree1-fp8", 0.95);
        }
        agree_errors(tmp);
        rm_model(tmp, "agree-f32");
        rm_model(tmp, "agree-fp8");
        rm_model(tmp, "agree1-fp8");
        rmdir(tmp);
    }

    th_section("verification rows == one-token decodes, bit for bit");
    verify_rows_bits(dir, "tiny-f32");
    verify_rows_bits(dir, "tiny-fp8");
    inline_vs_explicit(dir);
    rollback(dir);
    sampled(dir);
    errors(dir);
    cli(dir);
    return th_finish();
}
