/*
 * test_moe.c — the router (docs/MODEL.md §5) on hand-made scores whose expected
 * choices are worked out in the comments: ties to the lowest index, bias for
 * selection only, group limiting, −inf masking when every kept score is
 * negative, normalisation and scaling, and V2's softmax variants.
 */
#include "harness.h"
#include "generate/generate.h"

/* 8 experts in 4 groups of 2, keep 2 groups, choose 2 experts. */
static ds3_config v3_like(void) {
    ds3_config c;
    memset(&c, 0, sizeof c);
    c.n_routed_experts = 8; c.num_experts_per_tok = 2; c.n_group = 4; c.topk_group = 2;
    c.scoring_func = DS3_SCORE_SIGMOID; c.topk_method = DS3_TOPK_NOAUX_TC;
    c.norm_topk_prob = true; c.routed_scaling_factor = 2.5;
    return c;
}

static double sigm(double x) { return 1 / (1 + exp(-x)); }

static void route(const ds3_config *c, const ds3_real *logits, const ds3_real *bias, int32_t *idx, ds3_real *w) {
    ds3_real s[16], scratch[32];
    ds3_moe_route(idx, w, s, logits, bias, c, scratch);
}

int main(void) {
    ds3_config c = v3_like();
    int32_t idx[8];
    ds3_real w[8];

    th_section("ties go to the lowest index");
    {
        /* All equal: groups tie (keep 0 and 1), then experts 0 and 1. */
        ds3_real lg[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        route(&c, lg, NULL, idx, w);
        CHECK(idx[0] == 0 && idx[1] == 1, "all-equal picks 0,1 (got %d,%d)", idx[0], idx[1]);
        /* equal weights, normalised then ×2.5 */
        CHECK(fabs(w[0] - 1.25) < 1e-6 && fabs(w[1] - 1.25) < 1e-6, "weights 1.25 each (got %g %g)", w[0], w[1]);
        /* Expert 5 and 6 tie as best; their groups (2, 3) tie as well. */
        ds3_real lg2[8] = {0, 0, 0, 0, 0, 1, 1, 0};
        route(&c, lg2, NULL, idx, w);
        CHECK(idx[0] == 5 && idx[1] == 6, "tied best experts in order 5,6 (got %d,%d)", idx[0], idx[1]);
    }

    th_section("the correction bias selects but does not weigh");
    {
        /* Expert 7 has the lowest score but a large bias: selected, and its
         * weight comes from its unbiased score. Group 3 = {6,7}: 0.5+bias wins. */
        ds3_real lg[8] = {2, 1.5, 0, 0, 0, 0, -1, -2};
        ds3_real b[8] = {0, 0, 0, 0, 0, 0, 0, 3};
        route(&c, lg, b, idx, w);
        CHECK(idx[0] == 7 && idx[1] == 0, "bias promotes expert 7 first, then 0 (got %d,%d)", idx[0], idx[1]);
        double s7 = sigm(-2), s0 = sigm(2);
        CHECK(fabs(w[0] - 2.5 * s7 / (s7 + s0)) < 1e-6, "w[7] from unbiased score (got %g want %g)", w[0],
              2.5 * s7 / (s7 + s0));
        CHECK(fabs(w[0] + w[1] - 2.5) < 1e-6, "weights sum to routed_scaling_factor");
    }

    th_section("group limiting: sum of the two best per group");
    {
        /* Group sums (sigmoid): g0 = s(3)+s(-3) = 1, g1 = s(1)+s(1) ≈ 1.462,
         * g2 = s(0.9)+s(0.9) ≈ 1.422, g3 = 1. Keep groups 1 and 2; expert 0 is
         * the single best but its group is dropped. */
        ds3_real lg[8] = {3, -3, 1, 1, 0.9, 0.9, 0.5, -0.5};
        route(&c, lg, NULL, idx, w);
        CHECK(idx[0] == 2 && idx[1] == 3, "best of kept groups 1,2 are 2,3 (got %d,%d)", idx[0], idx[1]);
    }

    th_section("strongly negative biases: −inf masking, not 0.0");
    {
        /* Every sel is negative. Kept groups are 0 and 1 (largest group sums);
         * with a 0.0 fill the masked experts 4..7 would score 0 > every kept sel
         * and be chosen. The reference (official code) masks with −inf, so the
         * choice stays inside groups 0 and 1. */
        ds3_real lg[8] = {1, 0.5, 0.8, 0.2, 0, 0, 0, 0};
        ds3_real b[8] = {-3, -3, -3, -3, -3.5, -3.5, -3.5, -3.5};
        route(&c, lg, b, idx, w);
        CHECK(idx[0] == 0 && idx[1] == 2, "choice stays in kept groups: 0,2 (got %d,%d)", idx[0], idx[1]);
        for (int k = 0; k < 2; k++) CHECK(idx[k] < 4, "expert %d lies in a kept group", idx[k]);
    }

    th_section("V2: softmax + greedy, no normalisation");
    {
        ds3_config v2 = c;
        v2.scoring_func = DS3_SCORE_SOFTMAX; v2.topk_method = DS3_TOPK_GREEDY;
        v2.norm_topk_prob = false; v2.routed_scaling_factor = 1.0; v2.n_group = 1; v2.topk_group = 1;
        ds3_real lg[8] = {0, 1, 2, 3, 0, 0, 0, 3};
        route(&v2, lg, NULL, idx, w);
        double z = 4 + exp(1) + exp(2) + 2 * exp(3);
        CHECK(idx[0] == 3 && idx[1] == 7, "greedy top-2 = 3,7 (got %d,%d)", idx[0], idx[1]);
        CHECK(fabs(w[0] - exp(3) / z) < 1e-6 && fabs(w[1] - exp(3) / z) < 1e-6, "softmax weights unnormalised");
    }

    th_section("V2: group_limited_greedy, group score = max");
    {
        ds3_config v2 = c;
        v2.scoring_func = DS3_SCORE_SOFTMAX; v2.topk_method = DS3_TOPK_GROUP_LIMITED_GREEDY;
        v2.norm_topk_prob = false; v2.routed_scaling_factor = 16.0;
        /* Group maxima: g0 = 5, g1 = 1, g2 = 4.9, g3 = 4.95 → keep 0 and 3.
         * Expert 4 (4.9, group 2) outranks expert 6 but is masked. With a sum
         * of two, group 2 (9.8) would have won: max is what V2 uses. */
        ds3_real lg[8] = {5, -5, 1, 1, 4.9, 4.9, 4.95, -5};
        route(&v2, lg, NULL, idx, w);
        CHECK(idx[0] == 0 && idx[1] == 6, "kept groups 0,3 → experts 0,6 (got %d,%d)", idx[0], idx[1]);
        double z = 0;
        for (int i = 0; i < 8; i++) z += exp(lg[i]);
        CHECK(fabs(w[0] - 16 * exp(5) / z) < 1e-5, "weight ×16 (got %g)", w[0]);
    }
    return th_finish();
}
