/*
 * test_ops.c — RMSNorm, SiLU and softmax against their definitions computed
 * here in long double.
 */
#include "harness.h"
#include "internal.h"

int main(void) {
    enum { N = 300 };
    ds3_real x[N], w[N], out[N];
    double got[N], ref[N];
    for (int i = 0; i < N; i++) { x[i] = (ds3_real)(sin(i * 0.37) * (i % 7 + 1)); w[i] = (ds3_real)(1 + 0.01 * (i % 13)); }

    th_section("RMSNorm");
    long double ss = 0;
    for (int i = 0; i < N; i++) ss += (long double)x[i] * x[i];
    long double inv = 1.0L / sqrtl(ss / N + 1e-6L);
    ds3_rmsnorm(out, x, w, N, 1e-6);
    for (int i = 0; i < N; i++) { got[i] = out[i]; ref[i] = (double)(w[i] * x[i] * inv); }
    th_check_close("rmsnorm", got, ref, N, 0, sizeof(ds3_real) == 4 ? 1e-6 : 1e-14);
    /* eps matters for tiny inputs: all-zero input stays finite and zero */
    ds3_real z[4] = {0, 0, 0, 0}, zw[4] = {1, 1, 1, 1}, zo[4];
    ds3_rmsnorm(zo, z, zw, 4, 1e-6);
    CHECK(zo[0] == 0 && zo[3] == 0, "zero input gives zero output");
    /* in place */
    ds3_real y[N];
    memcpy(y, x, sizeof y);
    ds3_rmsnorm(y, y, w, N, 1e-6);
    CHECK(memcmp(y, out, sizeof y) == 0, "in-place RMSNorm equals out-of-place");

    th_section("SiLU");
    double a[] = {-20, -1, 0, 0.5, 3, 30};
    for (int i = 0; i < 6; i++) { got[i] = ds3_silu((ds3_real)a[i]); ref[i] = a[i] / (1 + exp(-a[i])); }
    th_check_close("silu", got, ref, 6, 1e-12, 1e-6);

    th_section("softmax");
    ds3_real s[5] = {1000, 1001, 999, -INFINITY, 1000};
    ds3_softmax(s, 5);
    double e0 = exp(-1), z0 = 2 * e0 + 1 + exp(-2);
    double sr[5] = {e0 / z0, 1 / z0, exp(-2) / z0, 0, e0 / z0};
    for (int i = 0; i < 5; i++) got[i] = s[i];
    th_check_close("softmax large logits, -inf masked", got, sr, 5, 1e-12, 1e-6);
    return th_finish();
}
