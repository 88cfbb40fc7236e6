/*
 * test_trained.c — the trained model shipped in ref_data/models/austen-tiny (tools/train_tiny.py,
 * docs/TRAINED.md), the model `make run` uses:
 *   - its tokenizer (a byte-level BPE trained with Hugging Face `tokenizers`, DeepSeek-V3's
 *     pre-tokenizer) gives exactly the ids `tokenizers` gave on the golden corpus of
 *     ref_data/tokenizer/austen-tiny.json (corpus paragraphs and odd strings), and decodes them
 *     back to the text;
 *   - `ds3 run --mtp --draft N` (N = 1, 2, 3) gives exactly the greedy ids of `ds3 run` on
 *     held-out prompts, and its MTP layer has learned something: drafts are accepted;
 *   - `make run`'s command (the Makefile's RUN_PROMPT, --repeat-penalty 1.3) continues with words.
 * Its activations against transformers in float64 are tests/test_ref.c's case austen-tiny.
 */
#include "tokenizer/tokenizer.h"
#include "harness.h"
#include "cli_run.h"

#include <cjson/cJSON.h>
#include <ctype.h>

static char model[1024];

static const char *const PROMPTS[] = {
    "Anne had been",
    "Captain Wentworth was",
    "\"My dear Miss Elliot,\" said",
};

static void test_tokenizer(const char *refdir) {
    th_section("tokenizer: ids of Hugging Face tokenizers on ref_data/tokenizer/austen-tiny.json");
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer/austen-tiny.json", refdir);
    char *js = th_read_file(path, NULL);
    CHECK(js != NULL, "read %s", path);
    if (!js) return;
    cJSON *root = cJSON_Parse(js);
    free(js);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) >= 20, "%s: at least 20 cases", path);
    ds3_tokenizer *t = NULL;
    CHECK(ds3_tokenizer_load(model, &t) == DS3_OK, "load the tokenizer of %s: %s", model, ds3_last_error());
    if (!t) { cJSON_Delete(root); return; }
    int same = 0, n_cases = 0;
    long n_ids = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"));
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        if (!text || !cJSON_IsArray(want)) { CHECK(0, "case %d: text and ids", n_cases); continue; }
        n_cases++;
        int32_t *ids = NULL;
        size_t n = 0;
        ds3_status st = ds3_tokenizer_encode(t, text, strlen(text), 0, &ids, &n);
        bool eq = st == DS3_OK && (int)n == cJSON_GetArraySize(want);
        for (size_t i = 0; eq && i < n; i++) eq = ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint;
        CHECK(eq, "case %d (%.40s...): ds3's %zu ids differ from tokenizers' %d", n_cases, text, n,
              cJSON_GetArraySize(want));
        char *back = NULL;
        size_t bl = 0;
        if (st == DS3_OK && ds3_tokenizer_decode(t, ids, n, &back, &bl) == DS3_OK)
            CHECK(bl == strlen(text) && memcmp(back, text, bl) == 0, "case %d: decode(encode(text)) != text", n_cases);
        same += eq;
        n_ids += (long)n;
        free(ids);
        free(back);
    }
    fprintf(stderr, "tokenizer: %d of %d cases identical (%ld ids)\n", same, n_cases, n_ids);
    ds3_tokenizer_free(t);
    cJSON_Delete(root);
}

/* run -p PROMPT --json: the generated ids as "a,b,c" (caller frees), and the MTP counts. */
static char *run_ids(const char *prompt, const char *draft, int *drafted, int *accepted) {
    result r = draft ? RUN("run", "-m", model, "-p", prompt, "-n", "32", "--temp", "0", "--ignore-eos", "--json",
                           "--quiet", "--mtp", "--draft", draft)
                     : RUN("run", "-m", model, "-p", prompt, "-n", "32", "--temp", "0", "--ignore-eos", "--json",
                           "--quiet");
    cJSON *j = r.rc == 0 ? cJSON_Parse(r.out) : NULL;
    CHECK(j != NULL, "run -p '%s'%s%s: exit %d: %s", prompt, draft ? " --mtp --draft " : "", draft ? draft : "",
          r.rc, r.err);
    done(&r);
    if (!j) return NULL;
    const cJSON *ids = cJSON_GetObjectItem(j, "ids");
    char *s = calloc(16, (size_t)cJSON_GetArraySize(ids) + 1);
    const cJSON *e;
    cJSON_ArrayForEach(e, ids) sprintf(s + strlen(s), "%s%d", *s ? "," : "", e->valueint);
    const cJSON *mtp = cJSON_GetObjectItem(j, "mtp");
    if (drafted) *drafted = mtp ? cJSON_GetObjectItem(mtp, "drafted")->valueint : 0;
    if (accepted) *accepted = mtp ? cJSON_GetObjectItem(mtp, "accepted")->valueint : 0;
    cJSON_Delete(j);
    return s;
}

static void test_mtp(void) {
    th_section("run --mtp --draft 1..3: exactly the greedy ids of run, on held-out prompts");
    int dr[4] = {0}, ac[4] = {0};
    for (size_t p = 0; p < sizeof PROMPTS / sizeof *PROMPTS; p++) {
        char *plain = run_ids(PROMPTS[p], NULL, NULL, NULL);
        if (!plain) continue;
        for (int d = 1; d <= 3; d++) {
            char ds[4];
            snprintf(ds, sizeof ds, "%d", d);
            int a = 0, b = 0;
            char *spec = run_ids(PROMPTS[p], ds, &a, &b);
            CHECK(spec && strcmp(spec, plain) == 0, "'%s' --mtp --draft %d: ids %s, run's %s", PROMPTS[p], d,
                  spec ? spec : "(none)", plain);
            dr[d] += a;
            ac[d] += b;
            free(spec);
        }
        free(plain);
    }
    for (int d = 1; d <= 3; d++)
        fprintf(stderr, "draft %d: %d of %d drafts accepted (%.0f%%)\n", d, ac[d], dr[d],
                dr[d] ? 100.0 * ac[d] / dr[d] : 0.0);
    /* A random model's MTP layer accepts ~1/V of its drafts; a trained one clearly more. */
    CHECK(dr[1] > 0 && ac[1] * 5 > dr[1], "draft 1: %d of %d accepted, want > 20%%", ac[1], dr[1]);
}

static void test_make_run_prompt(void) {
    th_section("make run's prompt: the greedy continuation is words");
    result r = RUN("run", "-m", model, "-p", "It is a truth universally acknowledged", "-n", "48", "--repeat-penalty", "1.3",
                   "--quiet");
    CHECK(r.rc == 0, "run: %s", r.err);
    int letters = 0, spaces = 0, other = 0;
    for (size_t i = 0; i < r.out_n; i++) {
        unsigned char ch = (unsigned char)r.out[i];
        if (isalpha(ch)) letters++;
        else if (ch == ' ' || ch == '\n') spaces++;
        else other++;
    }
    fprintf(stderr, "make run's text: %s", r.out);
    CHECK(letters > 40 && spaces > 8 && other * 4 < letters, "mostly words (%d letters, %d spaces, %d other)",
          letters, spaces, other);
    done(&r);
}

int main(void) {
    const char *refdir = getenv("DS3_REF");
    if (!refdir) refdir = "ref_data";
    cli = getenv("DS3_CLI");
    if (!cli) cli = "build/ds3";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-trained-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(model, sizeof model, "%s/models/austen-tiny", refdir);
    CHECK(exists(model), "%s: the shipped trained model", model);
    test_tokenizer(refdir);
    test_mtp();
    test_make_run_prompt();
    remove_tmpdir();
    return th_finish();
}
