/*
 * test_rope.c — YaRN frequencies and the softmax scale against the numbers
 * docs/MODEL.md §3/§4 states for DeepSeek-V3, and the rotation's defining property:
 * scores depend only on the distance between positions.
 */
#include "harness.h"
#include "generate/generate.h"

static void load_builtin(const char *name, ds3_config *c) {
    const char *json = ds3_builtin_config_json(name);
    CHECK(json != NULL, "built-in config %s exists", name);
    if (json) CHECK(ds3_config_parse(json, name, c) == DS3_OK, "%s parses: %s", name, ds3_last_error());
}

int main(void) {
    ds3_config c;
    memset(&c, 0, sizeof c);
    load_builtin("v3", &c);

    th_section("V3 YaRN frequencies (docs/MODEL.md §4)");
    double f[64];
    ds3_yarn_freqs(f, &c);
    /* Below `low` (10) the ramp is 0: frequencies untouched; above `high` (23)
     * it is 1: divided by factor 40. docs/MODEL.md §4: f'_0 = 1, f'_31 = 3.3338e-6. */
    CHECK(f[0] == 1.0, "f'_0 = %.17g, expected 1", f[0]);
    CHECK(fabs(f[31] - 3.3338e-6) < 5e-10, "f'_31 = %.6e, expected 3.3338e-6", f[31]);
    CHECK(fabs(f[10] - pow(10000.0, -20.0 / 64)) < 1e-15, "j=10 is the last untouched pair (low = 10)");
    CHECK(fabs(f[9] - pow(10000.0, -18.0 / 64)) < 1e-15, "j=9 untouched");
    CHECK(fabs(f[23] - pow(10000.0, -46.0 / 64) / 40) < 1e-18, "j=23 fully interpolated (high = 23)");
    CHECK(f[11] < pow(10000.0, -22.0 / 64) && f[11] > pow(10000.0, -22.0 / 64) / 40,
          "j=11 lies inside the ramp");
    /* the ramp at j=16 is (16-10)/13 */
    double f16 = pow(10000.0, -32.0 / 64), r = 6.0 / 13;
    CHECK(fabs(f[16] - (f16 / 40 * r + f16 * (1 - r))) < 1e-18, "j=16 on the linear ramp");

    th_section("softmax scale and mscale (docs/MODEL.md §3)");
    double sc = ds3_attn_softmax_scale(&c);
    CHECK(fabs(sc - 0.13523378) < 5e-9, "V3 scale %.9f, expected 0.13523378", sc);
    CHECK(ds3_rope_attn_factor(&c) == 1.0, "V3 cos/sin factor is 1 (mscale == mscale_all_dim)");
    CHECK(ds3_yarn_mscale(1.0, 0.707) == 1.0, "no sharpening without stretching");

    ds3_config v2;
    memset(&v2, 0, sizeof v2);
    load_builtin("v2-lite", &v2);
    double m = 0.1 * 0.707 * log(40.0) + 1;
    CHECK(fabs(ds3_attn_softmax_scale(&v2) - m * m / sqrt(192.0)) < 1e-15, "V2-Lite scale uses mscale_all_dim 0.707");

    th_section("rotation");
    /* Interleaved pairs: (1, 0) at angle θ becomes (cos θ, sin θ). */
    double fr[2] = {0.5, 0.25};
    ds3_real x[4] = {1, 0, 0, 1};
    ds3_rope(x, fr, 1.0, 4, 3);
    CHECK(fabs(x[0] - cos(1.5)) < 1e-6 && fabs(x[1] - sin(1.5)) < 1e-6, "pair 0 rotated by 3·0.5");
    CHECK(fabs(x[2] + sin(0.75)) < 1e-6 && fabs(x[3] - cos(0.75)) < 1e-6, "pair 1 rotated by 3·0.25");

    /* q(p)·k(p') is a function of p - p' alone: shift both by 37. */
    ds3_real q0[64], k0[64];
    for (int i = 0; i < 64; i++) { q0[i] = (ds3_real)sin(i * 1.3 + 0.2); k0[i] = (ds3_real)cos(i * 0.7 - 0.4); }
    double worst = 0;
    for (int p = 0; p < 40; p += 7) {
        ds3_real qa[64], ka[64], qb[64], kb[64];
        memcpy(qa, q0, sizeof qa); memcpy(ka, k0, sizeof ka);
        memcpy(qb, q0, sizeof qb); memcpy(kb, k0, sizeof kb);
        ds3_rope(qa, f, 1.0, 64, p + 5);
        ds3_rope(ka, f, 1.0, 64, p);
        ds3_rope(qb, f, 1.0, 64, p + 5 + 37);
        ds3_rope(kb, f, 1.0, 64, p + 37);
        double sa = 0, sb = 0;
        for (int i = 0; i < 64; i++) { sa += (double)qa[i] * ka[i]; sb += (double)qb[i] * kb[i]; }
        if (fabs(sa - sb) > worst) worst = fabs(sa - sb);
    }
    CHECK(worst < 1e-4, "relative-position property holds (max diff %.2e)", worst);
    return th_finish();
}
