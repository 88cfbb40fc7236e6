/*
 * generate.h — choosing tokens (src/generate/): sampling (sample.c) and
 * self-speculative decoding with the MTP layer (spec.c). Not API.
 */
#ifndef DS3_GENERATE_H
#define DS3_GENERATE_H

#include "model/model.h"

/* sample.c, for speculative sampling (spec.c). */
bool ds3_sampler_greedy(const ds3_sampler *s);
/* A repetition penalty is on (its distribution depends on the history). */
bool ds3_sampler_penalised(const ds3_sampler *s);
/* p[V] = the exact distribution ds3_sample draws from (softmax(l/temp), the
 * top-p nucleus renormalised, 0 outside it). -1 on NaN logits or no memory. */
int ds3_sampler_probs(ds3_sampler *s, const ds3_real *logits, int vocab, double *p);
/* The next uniform in [0, 1) of the sampler's stream. */
double ds3_sampler_uniform(ds3_sampler *s);
/* Inverse CDF of p[V] (index order) at u·Σp; the last token with p > 0 if
 * rounding leaves none. */
int ds3_sample_from(const double *p, int vocab, double u);

/* spec.c: the speculative-sampling acceptance rule for one verification
 * (Leviathan et al. 2023; Chen et al. 2023). p [n+1][V]: the target's
 * distributions at the n drafted positions and the one after; q [n][V]: the
 * distributions the drafts were drawn from; draft [n]. Writes the accepted
 * drafts and then one more token (the residual draw on a rejection, the bonus
 * draw from p[n] when all pass) to out, and returns how many (1..n+1). The
 * uniforms come from smp. scratch [V]. */
int ds3_spec_accept(ds3_sampler *smp, const double *p, const double *q, const int32_t *draft, int n,
                    int vocab, int32_t *out, double *scratch);

#endif /* DS3_GENERATE_H */
