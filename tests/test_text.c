/*
 * test_text.c — text on the command line: `ds3 tokenize` and `ds3 detokenize`
 * against the Hugging Face goldens (ref_data/tokenizer/deepseek-v3.json),
 * byte for byte; `ds3 mkmodel` giving DeepSeek-V3's tokenizer to a model with
 * its vocabulary; `ds3 run -p` on such a model: streamed text that is the
 * decode of the generated ids, --chat as transformers renders it, --json,
 * --quiet, the stderr timing lines, EOS stopping generation, --mtp streaming
 * the same text; and the usage and runtime errors of each.
 *
 * $DS3_CLI is the binary (tests/run.sh), run with fork/exec, stdin from a
 * file, stdout and stderr captured with their lengths (text may hold NULs;
 * tests/cli_run.h).
 * The model with V3's vocabulary is made here (narrow layers, ~35 MB bf16).
 */
#include "generate/generate.h"
#include "harness.h"
#include "cli_run.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tokdir = "data/tokenizers/deepseek-v3";

/* An error: this exit status and a "ds3: " message containing `want`, nothing on stdout. */
static void expect_error(int rc, const char *want, result r, const char *what) {
    CHECK(r.rc == rc, "%s: exit %d, want %d (stderr: %s)", what, r.rc, rc, r.err);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0, "%s: no 'ds3: ' message: %s", what, r.err);
    CHECK(has(r.err, want), "%s: stderr lacks \"%s\": %s", what, want, r.err);
    CHECK(r.out_n == 0, "%s: printed to stdout: %s", what, r.out);
    done(&r);
}

/* ---- golden helpers ---------------------------------------------------------- */

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static char *unhex(const char *h, size_t *n) {
    size_t l = strlen(h);
    char *b = malloc(l / 2 + 1);
    if (!b) abort();
    for (size_t i = 0; i + 1 < l; i += 2) b[i / 2] = (char)(hexval(h[i]) * 16 + hexval(h[i + 1]));
    b[l / 2] = 0;
    *n = l / 2;
    return b;
}

/* A JSON id list as the CLI prints it: "1,2,3" (static buffer). */
static const char *ids_line(const cJSON *a) {
    static char buf[1 << 16];
    size_t k = 0;
    const cJSON *it;
    buf[0] = '\0';
    cJSON_ArrayForEach(it, a) k += (size_t)snprintf(buf + k, sizeof buf - k, k ? ",%d" : "%d", it->valueint);
    return buf;
}

static const cJSON *find_case(const cJSON *list, const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, list) if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(c, "name")), name) == 0) return c;
    return NULL;
}

static cJSON *load_goldens(void) {
    const char *ref = getenv("DS3_REF");
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer/deepseek-v3.json", ref ? ref : "ref_data");
    size_t n;
    char *s = th_read_file(path, &n);
    if (!s) return NULL;
    cJSON *j = cJSON_ParseWithLength(s, n);
    free(s);
    return j;
}

/* ---- tokenize / detokenize ---------------------------------------------------- */

static void test_tokenize(const cJSON *gold) {
    th_section("tokenize / detokenize against the goldens");
    /* a few of every kind (test_tokenizer.c checks all of them through the library) */
    const char *names[] = {"empty", "english", "cjk-chinese", "emoji-zwj", "crlf", "special-in-text",
                           "special-normalized", "invalid-mixed", "nul-and-controls", "unicode-15-16"};
    const cJSON *cases = cJSON_GetObjectItem(gold, "cases");
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const cJSON *c = find_case(cases, names[i]);
        CHECK(c != NULL, "golden case %s missing", names[i]);
        if (!c) continue;
        size_t n, nd;
        char *text = unhex(cJSON_GetStringValue(cJSON_GetObjectItem(c, "text")), &n);
        char *dec = unhex(cJSON_GetStringValue(cJSON_GetObjectItem(c, "decoded")), &nd);
        char want[1 << 16];
        snprintf(want, sizeof want, "%s\n", ids_line(cJSON_GetObjectItem(c, "ids")));

        result r = RUN_IN(text, n, "tokenize", "--tokenizer", tokdir);
        CHECK(r.rc == 0 && strcmp(r.out, want) == 0, "tokenize %s: exit %d, got '%s' want '%s' (%s)", names[i], r.rc,
              r.out, want, r.err);
        done(&r);
        if (strncmp(names[i], "special", 7) == 0) {
            snprintf(want, sizeof want, "%s\n", ids_line(cJSON_GetObjectItem(c, "ids_special_as_text")));
            r = RUN_IN(text, n, "tokenize", "--tokenizer", tokdir, "--special-as-text");
            CHECK(r.rc == 0 && strcmp(r.out, want) == 0, "tokenize --special-as-text %s: '%s' want '%s'", names[i],
                  r.out, want);
            done(&r);
        }

        /* detokenize HF's ids: HF's text, byte for byte, no newline */
        const char *ids = ids_line(cJSON_GetObjectItem(c, "ids"));
        char in[1 << 16];
        snprintf(in, sizeof in, "%s\n", ids);
        r = RUN_IN(in, strlen(in), "detokenize", "--tokenizer", tokdir);
        CHECK(r.rc == 0 && r.out_n == nd && memcmp(r.out, dec, nd) == 0, "detokenize %s: exit %d, %zu bytes, want %zu (%s)",
              names[i], r.rc, r.out_n, nd, r.err);
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "valid_utf8")))
            CHECK(r.out_n == n && memcmp(r.out, text, n) == 0, "detokenize %s: not the input text", names[i]);
        done(&r);
        free(text);
        free(dec);
    }

    /* --bos, and the directory form of --tokenizer vs the file */
    result r = RUN_IN("Hi", 2, "tokenize", "--tokenizer", "data/tokenizers/deepseek-v3/tokenizer.json", "--bos");
    CHECK(r.rc == 0 && strcmp(r.out, "0,23166\n") == 0, "tokenize --bos: '%s' (%s)", r.out, r.err);
    done(&r);
    /* a pipeline's worth: ids with blanks and newlines around them */
    r = RUN_IN(" 23166 ,\t0\r\n", 12, "detokenize", "--tokenizer", tokdir);
    CHECK(r.rc == 0 && r.out_n == strlen("Hi<｜begin▁of▁sentence｜>") && memcmp(r.out, "Hi<｜begin▁of▁sentence｜>", r.out_n) == 0,
          "detokenize with blanks: '%s' (%s)", r.out, r.err);
    done(&r);
    r = RUN_IN("", 0, "detokenize", "--tokenizer", tokdir);
    CHECK(r.rc == 0 && r.out_n == 0, "detokenize of nothing: exit %d, %zu bytes", r.rc, r.out_n);
    done(&r);

    th_section("tokenize / detokenize errors");
    expect_error(2, "missing --tokenizer", RUN("tokenize"), "tokenize without a tokenizer");
    expect_error(2, "not both", RUN("tokenize", "--tokenizer", tokdir, "-m", tmpdir), "--tokenizer and -m");
    expect_error(2, "unknown option '--frobnicate'", RUN("tokenize", "--tokenizer", tokdir, "--frobnicate"),
                 "unknown option");
    expect_error(2, "stdin", RUN("detokenize", "--tokenizer", tokdir, "1,2"), "ids as an argument");
    expect_error(2, "needs a value", RUN("tokenize", "--tokenizer"), "--tokenizer without a value");
    expect_error(1, "/nonexistent/tok.json", RUN("tokenize", "--tokenizer", "/nonexistent/tok.json"),
                 "missing tokenizer file");
    expect_error(1, "has no tokenizer.json", RUN("tokenize", "-m", tmpdir), "-m DIR without tokenizer.json");
    expect_error(1, "'x' at index 2", RUN_IN("1,2,x", 5, "detokenize", "--tokenizer", tokdir), "a bad id");
    expect_error(1, "ends with a comma", RUN_IN("1,2,", 4, "detokenize", "--tokenizer", tokdir), "trailing comma");
    expect_error(1, "is not a comma", RUN_IN("1 2", 3, "detokenize", "--tokenizer", tokdir), "missing comma");
    expect_error(1, "id 128815 at index 1", RUN_IN("5,128815", 8, "detokenize", "--tokenizer", tokdir),
                 "an id past the tokenizer");
    expect_error(1, "too large", RUN_IN("99999999999", 11, "detokenize", "--tokenizer", tokdir), "a huge id");
    char broken[256];
    snprintf(broken, sizeof broken, "%s/broken.json", tmpdir);
    FILE *f = fopen(broken, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {", f);
    fclose(f);
    expect_error(1, "not a JSON object", RUN_IN("x", 1, "tokenize", "--tokenizer", broken), "a malformed tokenizer.json");
}

/* ---- mkmodel ------------------------------------------------------------------ */

/* V3's vocabulary with narrow layers and one MTP layer. */
static const char V3VOCAB_JSON[] =
    "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
    " \"vocab_size\": 129280, \"hidden_size\": 32, \"intermediate_size\": 64, \"moe_intermediate_size\": 8,\n"
    " \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,\n"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"q_lora_rank\": 16, \"kv_lora_rank\": 16,\n"
    " \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8, \"n_routed_experts\": 8,\n"
    " \"num_experts_per_tok\": 2, \"n_shared_experts\": 1, \"n_group\": 2, \"topk_group\": 1,\n"
    " \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true,\n"
    " \"routed_scaling_factor\": 2.5, \"rope_theta\": 10000, \"max_position_embeddings\": 256,\n"
    " \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1, \"tie_word_embeddings\": false,\n"
    " \"hidden_act\": \"silu\", \"attention_bias\": false, \"torch_dtype\": \"bfloat16\"}\n";

static bool same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = false;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Make the V3-vocabulary model; returns its directory (static) or NULL. */
static const char *test_mkmodel(void) {
    th_section("mkmodel: DeepSeek-V3's tokenizer for V3's vocabulary");
    static char dir[256];
    char cfg[256], p[512], q[512];
    snprintf(cfg, sizeof cfg, "%s/v3vocab.json", tmpdir);
    snprintf(dir, sizeof dir, "%s/v3vocab", tmpdir);
    FILE *f = fopen(cfg, "w");
    fputs(V3VOCAB_JSON, f);
    fclose(f);
    result r = RUN("mkmodel", "--config", cfg, "--dtype", "bf16", "--mtp-agree", "-o", dir);
    CHECK(r.rc == 0 && has(r.err, "with tokenizer.json"), "mkmodel of a V3-vocabulary model: exit %d: %s", r.rc, r.err);
    done(&r);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    snprintf(q, sizeof q, "%s/tokenizer.json", tokdir);
    CHECK(same_file(p, q), "%s is not a copy of %s", p, q);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    snprintf(q, sizeof q, "%s/tokenizer_config.json", tokdir);
    CHECK(same_file(p, q), "%s is not a copy of %s", p, q);

    /* the tiny vocabulary (512) gets none, and cannot take DeepSeek's (128815 ids) */
    char tiny[256];
    snprintf(tiny, sizeof tiny, "%s/tiny", tmpdir);
    r = RUN("mkmodel", "--config", "tiny", "-o", tiny);
    snprintf(p, sizeof p, "%s/tokenizer.json", tiny);
    CHECK(r.rc == 0 && !exists(p), "mkmodel --config tiny: exit %d, tokenizer.json %s", r.rc,
          exists(p) ? "copied" : "absent");
    done(&r);
    expect_error(1, "more than the model's vocab_size 512", RUN("mkmodel", "--config", "tiny", "--tokenizer", tokdir,
                 "-o", tiny), "mkmodel --tokenizer onto a smaller vocabulary");
    /* DS3_DATA_DIR names where the tokenizer comes from */
    char moved[256];
    snprintf(moved, sizeof moved, "%s/moved", tmpdir);
    setenv("DS3_DATA_DIR", "/nonexistent/data", 1);
    r = RUN("mkmodel", "--config", cfg, "--dtype", "bf16", "-o", moved);
    unsetenv("DS3_DATA_DIR");
    CHECK(r.rc == 1 && has(r.err, "/nonexistent/data/tokenizers/deepseek-v3") && has(r.err, "DS3_DATA_DIR"),
          "mkmodel with DS3_DATA_DIR elsewhere: exit %d: %s", r.rc, r.err);
    done(&r);
    return dir;
}

/* ---- run -p -------------------------------------------------------------------- */

/* The decode of an id line through `ds3 detokenize` (malloc'd, *n bytes). */
static char *detok(const char *ids, size_t *n) {
    result r = RUN_IN(ids, strlen(ids), "detokenize", "--tokenizer", tokdir);
    CHECK(r.rc == 0, "detokenize '%s': %s", ids, r.err);
    *n = r.out_n;
    free(r.err);
    return r.out;
}

/* ds3 run --json's object (NULL if stdout is not one). */
static cJSON *run_json(result r, const char *what) {
    cJSON *j = r.rc == 0 ? cJSON_Parse(r.out) : NULL;
    CHECK(j && cJSON_IsObject(j), "%s: exit %d, stdout not a JSON object: %s (%s)", what, r.rc, r.out, r.err);
    done(&r);
    return j;
}

static void test_run(const char *model, const cJSON *gold) {
    th_section("run -p: streamed text, --json, --quiet, --chat, EOS, --mtp");
    const char *prompt = "Hello world";
    cJSON *j = run_json(RUN("run", "-m", model, "-p", prompt, "-n", "10", "--json", "--quiet", "--ignore-eos"),
                        "run -p --json");
    if (!j) return;
    char ids[4096], prompt_ids[256];
    snprintf(ids, sizeof ids, "%s", ids_line(cJSON_GetObjectItem(j, "ids")));
    snprintf(prompt_ids, sizeof prompt_ids, "%s", ids_line(cJSON_GetObjectItem(j, "prompt_ids")));
    CHECK(strcmp(prompt_ids, "0,19923,2058") == 0, "-p 'Hello world': prompt ids %s, want BOS + the tokenizer's",
          prompt_ids);
    CHECK(cJSON_GetObjectItem(j, "n_generated")->valueint == 10 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")) == 10,
          "--json: 10 ids generated");
    CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "stop")), "length") == 0, "--json: stop 'length'");
    CHECK(cJSON_GetObjectItem(j, "decode_tok_s")->valuedouble > 0 && cJSON_GetObjectItem(j, "prefill_tok_s")->valuedouble > 0 &&
              cJSON_GetObjectItem(j, "peak_rss_mb")->valuedouble > 1,
          "--json: speeds and memory");
    size_t tn;
    char *text = detok(ids, &tn);
    const char *jt = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
    /* JSON holds valid UTF-8 only; compare when the generated text is */
    if (ds3_utf8_valid_prefix(text, tn) == tn)
        CHECK(jt && strlen(jt) == tn && memcmp(jt, text, tn) == 0, "--json text is not the decode of its ids");
    cJSON_Delete(j);

    /* streamed: stdout is exactly the decode of the same ids, then "\n" */
    result r = RUN("run", "-m", model, "-p", prompt, "-n", "10", "--ignore-eos");
    CHECK(r.rc == 0 && r.out_n == tn + 1 && memcmp(r.out, text, tn) == 0 && r.out[tn] == '\n',
          "run -p: stdout (%zu bytes) is not the decode of the ids (%zu bytes) and a newline", r.out_n, tn);
    CHECK(has(r.err, "prefill: 3 tokens") && has(r.err, "decode: 9 tokens") && has(r.err, "tok/s") &&
              has(r.err, "memory: peak RSS"),
          "run -p: stderr lacks the timing lines: %s", r.err);
    done(&r);
    /* --mtp: the same greedy tokens, streamed the same */
    r = RUN("run", "-m", model, "-p", prompt, "-n", "10", "--ignore-eos", "--mtp", "--draft", "3", "--quiet");
    CHECK(r.rc == 0 && r.out_n == tn + 1 && memcmp(r.out, text, tn) == 0, "run -p --mtp: not the same text (%s)", r.err);
    CHECK(r.err[0] == '\0', "--quiet: stderr has %s", r.err);
    done(&r);

    /* EOS: a tokenizer_config.json naming the 4th generated token's text as
     * eos_token makes generation stop before it */
    int stop_at = -1, eos_id = -1;
    int32_t v[10];
    int nv = 0;
    for (const char *p = ids; nv < 10;) {
        char *end;
        v[nv++] = (int32_t)strtol(p, &end, 10);
        if (*end != ',') break;
        p = end + 1;
    }
    for (int k = 3; k < nv && stop_at < 0; k++) {
        /* a token that is plain ASCII letters, not generated earlier */
        char one[32];
        snprintf(one, sizeof one, "%d", (int)v[k]);
        size_t ol;
        char *s = detok(one, &ol);
        bool ok = ol > 0 && ol < 20;
        for (size_t i = 0; i < ol && ok; i++) ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z');
        for (int e = 0; e < k && ok; e++) ok = v[e] != v[k];
        if (ok) {
            stop_at = k;
            eos_id = v[k];
            char dir[256], src[512], dst[512], cfg[512];
            snprintf(dir, sizeof dir, "%s/eos", tmpdir);
            mkdir(dir, 0755);
            snprintf(src, sizeof src, "%s/tokenizer.json", model);   /* model is under tmpdir: absolute */
            snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
            CHECK(symlink(src, dst) == 0, "symlink %s", dst);
            snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
            FILE *f = fopen(cfg, "w");
            fprintf(f, "{\"bos_token\": \"<｜begin▁of▁sentence｜>\", \"eos_token\": \"%.*s\"}", (int)ol, s);
            fclose(f);
        }
        free(s);
    }
    if (stop_at >= 0) {
        char dir[256];
        snprintf(dir, sizeof dir, "%s/eos", tmpdir);
        for (int mtp = 0; mtp < 2; mtp++) {
            j = run_json(mtp ? RUN("run", "-m", model, "--tokenizer", dir, "-p", prompt, "-n", "10", "--json", "--mtp",
                                   "--draft", "2")
                             : RUN("run", "-m", model, "--tokenizer", dir, "-p", prompt, "-n", "10", "--json"),
                         mtp ? "EOS with --mtp" : "EOS");
            if (!j) continue;
            CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "stop")), "eos") == 0 &&
                      cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")) == stop_at,
                  "%s: stop '%s' after %d ids, want eos after %d (eos id %d)", mtp ? "--mtp" : "plain",
                  cJSON_GetStringValue(cJSON_GetObjectItem(j, "stop")), cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")),
                  stop_at, eos_id);
            CHECK(strncmp(ids_line(cJSON_GetObjectItem(j, "ids")), ids, strlen(ids_line(cJSON_GetObjectItem(j, "ids")))) == 0,
                  "EOS: the ids before it are the same");
            cJSON_Delete(j);
        }
        /* --ignore-eos goes on */
        r = RUN("run", "-m", model, "--tokenizer", dir, "-p", prompt, "-n", "10", "--ignore-eos", "--quiet");
        CHECK(r.rc == 0 && r.out_n == tn + 1, "--ignore-eos: all 10 tokens (%zu bytes, want %zu)", r.out_n, tn + 1);
        done(&r);
    } else fprintf(stderr, "   (no plain-ASCII token among the generated ones: EOS case skipped)\n");
    free(text);

    /* --chat: the ids transformers' apply_chat_template gives */
    const cJSON *chats = cJSON_GetObjectItem(gold, "chat");
    const cJSON *one = find_case(chats, "chat-one-turn"), *sys = find_case(chats, "chat-system");
    if (one && sys) {
        j = run_json(RUN("run", "-m", model, "--chat", "-p", "What is 2+2?", "-n", "2", "--json", "--quiet"), "--chat");
        if (j) {
            CHECK(strcmp(ids_line(cJSON_GetObjectItem(j, "prompt_ids")), ids_line(cJSON_GetObjectItem(one, "ids"))) == 0,
                  "--chat prompt ids differ from transformers'");
            cJSON_Delete(j);
        }
        j = run_json(RUN("run", "-m", model, "--chat", "--system", "You are a helpful assistant.", "-p",
                         "Привет! Как дела?", "-n", "2", "--json", "--quiet"),
                     "--chat --system");
        if (j) {
            CHECK(strcmp(ids_line(cJSON_GetObjectItem(j, "prompt_ids")), ids_line(cJSON_GetObjectItem(sys, "ids"))) == 0,
                  "--chat --system prompt ids differ from transformers'");
            cJSON_Delete(j);
        }
    } else CHECK(0, "chat goldens missing");

    /* --tokens --json: text from the model's tokenizer */
    j = run_json(RUN("run", "-m", model, "--tokens", "0,19923", "-n", "4", "--json", "--quiet"), "--tokens --json");
    if (j) {
        size_t n;
        char *t = detok(ids_line(cJSON_GetObjectItem(j, "ids")), &n);
        const char *jt = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
        if (ds3_utf8_valid_prefix(t, n) == n) CHECK(jt && strlen(jt) == n && memcmp(jt, t, n) == 0, "--tokens --json text");
        free(t);
        cJSON_Delete(j);
    }
    /* --tokens alone keeps the ids line */
    r = RUN("run", "-m", model, "--tokens", "0,19923", "-n", "4", "--quiet");
    CHECK(r.rc == 0 && r.out[0] >= '0' && r.out[0] <= '9' && r.out[r.out_n - 1] == '\n', "--tokens: ids line: %s", r.out);
    done(&r);

    th_section("run -p errors");
    expect_error(2, "not both", RUN("run", "-m", model, "-p", "x", "--tokens", "1"), "-p and --tokens");
    expect_error(2, "--chat needs -p", RUN("run", "-m", model, "--tokens", "1", "--chat"), "--chat without -p");
    expect_error(2, "--system needs --chat", RUN("run", "-m", model, "-p", "x", "--system", "s"), "--system alone");
    expect_error(2, "--ignore-eos needs -p", RUN("run", "-m", model, "--tokens", "1", "--ignore-eos"),
                 "--ignore-eos with --tokens");
    expect_error(2, "missing --tokens IDS, -p TEXT or -f FILE", RUN("run", "-m", model), "no prompt");
    expect_error(1, "/nonexistent/t.json", RUN("run", "-m", model, "-p", "x", "--tokenizer", "/nonexistent/t.json"),
                 "missing --tokenizer");
    const char *models = getenv("DS3_MODELS");
    if (models) {
        char tiny[512];
        snprintf(tiny, sizeof tiny, "%s/tiny-f32", models);
        if (exists(tiny)) {
            expect_error(1, "has no tokenizer.json", RUN("run", "-m", tiny, "-p", "a b"), "-p on a model without one");
            /* tiny's vocabulary is 512: DeepSeek's ids below it work, others are refused */
            r = RUN("run", "-m", tiny, "--tokenizer", tokdir, "-p", "a b", "-n", "3", "--quiet");
            CHECK(r.rc == 0 && r.out_n >= 1 && r.out[r.out_n - 1] == '\n', "tiny with --tokenizer: exit %d: %s", r.rc,
                  r.err);
            done(&r);
            expect_error(1, "out of range (vocab 512)", RUN("run", "-m", tiny, "--tokenizer", tokdir, "-p", "Hello"),
                         "-p with ids beyond tiny's vocabulary");
        }
    }
}

int main(void) {
    cli = getenv("DS3_CLI");
    if (!cli) cli = "build/ds3";
    CHECK(access(cli, X_OK) == 0, "DS3_CLI=%s is not an executable", cli);
    if (access(cli, X_OK) != 0) return th_finish();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-text.XXXXXX");
    if (!mkdtemp(tmpdir)) abort();
    cJSON *gold = load_goldens();
    CHECK(gold != NULL, "cannot read ref_data/tokenizer/deepseek-v3.json");
    if (gold) test_tokenize(gold);
    const char *model = test_mkmodel();
    if (gold && model) test_run(model, gold);
    cJSON_Delete(gold);
    remove_tmpdir();
    return th_finish();
}
