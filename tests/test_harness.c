/*
 * test_harness.c — the tensor checker must be able to fail. llm.c once shipped
 * a checker that could not; this one is tested on planted differences.
 */
#include "harness.h"

int main(void) {
    th_quiet = 1;
    double ref[6] = {1, -2, 3, 0, 1e6, -1e-3};
    double got[6];
    th_cmp r;

    memcpy(got, ref, sizeof got);
    r = th_compare(got, ref, 6, 0, 0);
    CHECK(r.ok && r.n_bad == 0 && r.max_abs == 0, "identical tensors pass with zero tolerance");

    got[2] = 3 + 1e-3;
    r = th_compare(got, ref, 6, 0, 1e-4);
    CHECK(!r.ok && r.n_bad == 1 && r.worst == 2, "one element outside rtol fails and is the worst (worst=%ld)", r.worst);
    CHECK(fabs(r.max_abs - 1e-3) < 1e-12 && fabs(r.max_rel - 1e-3 / 3) < 1e-12, "max abs/rel reported");
    r = th_compare(got, ref, 6, 0, 1e-3);
    CHECK(r.ok, "the same element passes with a wider rtol");
    r = th_compare(got, ref, 6, 2e-3, 0);
    CHECK(r.ok, "and with an atol covering it");

    memcpy(got, ref, sizeof got);
    got[3] = 1e-9;  /* ref 0: only atol can admit it */
    CHECK(!th_compare(got, ref, 6, 0, 0.5).ok, "rtol alone cannot admit a difference at ref == 0");
    CHECK(th_compare(got, ref, 6, 1e-8, 0).ok, "atol admits it");

    double nref[3] = {NAN, INFINITY, 1}, ngot[3] = {NAN, INFINITY, 1};
    CHECK(th_compare(ngot, nref, 3, 0, 0).ok, "NaN at the same place and equal infinities pass");
    ngot[0] = 0;
    CHECK(!th_compare(ngot, nref, 3, 1e9, 1e9).ok, "a NaN in the reference only fails whatever the tolerance");
    ngot[0] = NAN; ngot[2] = NAN;
    r = th_compare(ngot, nref, 3, 1e9, 1e9);
    CHECK(!r.ok && r.worst == 2, "a NaN in the result only fails (worst=%ld)", r.worst);
    ngot[2] = 1; ngot[1] = -INFINITY;
    CHECK(!th_compare(ngot, nref, 3, 1e9, 1e9).ok, "+Inf vs -Inf fails");

    /* th_check_close counts: one planted failure must move th_failed by one. */
    int before = th_failed;
    double a[2] = {1, 2}, b[2] = {1, 2.5};
    th_check_close("planted failure (expected)", a, b, 2, 0, 0.1);
    int moved = th_failed - before;
    th_failed = before;  /* the planted failure is this test's success */
    CHECK(moved == 1, "th_check_close counted the planted failure");
    return th_finish();
}
