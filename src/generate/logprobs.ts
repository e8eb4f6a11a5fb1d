/**
 * Log-probabilities of a generated token, and the most likely alternatives, for OpenAI's
 * `logprobs` / `top_logprobs`.
 *
 * They are those of the model's own distribution: log-softmax of the raw logits, before logit
 * bias, penalties, temperature, top-k and top-p (llama.cpp's server and vLLM report the same by
 * default), so they do not change with the sampling settings, and a greedy token is not always
 * the first alternative when a bias or a penalty moved it.
 *
 * Numerics (f64): m = max l, Z = Σ exp(l − m) in id order, logprob(i) = (l_i − m) − log Z.
 * Edge cases: +inf logits share the mass (log(1/k) each, −inf for the rest); all −inf is uniform
 * (−log V). Alternatives are ranked (logprob desc, id asc), as the sampler ranks tokens.
 * Cost: one Math.exp per vocabulary entry (~2-3 ms at V = 128256), paid only when asked for.
 */

/** One alternative token. */
export interface TopLogprob {
  id: number;
  logprob: number;
}

/** The sampled token's log-probability and the `top` most likely tokens (possibly including it). */
export interface TokenLogprob {
  id: number;
  logprob: number;
  top: TopLogprob[];
}

/** A prompt token's entry: the first prompt token has nothing to be predicted from (null, null). */
export interface PromptTokenLogprob {
  id: number;
  logprob: number | null;
  top: TopLogprob[] | null;
}

/** OpenAI's ceiling on `top_logprobs`. */
export const MAX_TOP_LOGPROBS = 20;

/** log-softmax's normaliser: logprob(i) = shift(l_i), with the edge cases of the header. */
function normaliser(logits: Float32Array): (l: number) => number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  if (m === Number.NEGATIVE_INFINITY) {
    const u = -Math.log(logits.length);
    return () => u;
  }
  if (m === Number.POSITIVE_INFINITY) {
    let k = 0;
    for (let i = 0; i < logits.length; i++) if (logits[i] === m) k++;
    const share = -Math.log(k);
    return (l) => (l === m ? share : Number.NEGATIVE_INFINITY);
  }
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - m);
  const logZ = Math.log(z);
  return (l) => l - m - logZ;
}

/** The `n` best ids in rank order (logit desc, id asc); n ≤ MAX_TOP_LOGPROBS. */
function topIds(logits: Float32Array, n: number): number[] {
  const ids: number[] = [];
  if (n <= 0) return ids;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (ids.length === n && !(v > logits[ids[n - 1]])) continue;
    // insertion: later ids go after earlier equal ones (ties → lowest id first)
    let j = ids.length === n ? n - 1 : ids.length;
    while (j > 0 && v > logits[ids[j - 1]]) {
      ids[j] = ids[j - 1];
      j--;
    }
    ids[j] = i;
  }
  return ids;
}

/** The log-probability of `id` and the `top` best alternatives, from the raw logits row. */
export function tokenLogprob(logits: Float32Array, id: number, top: number): TokenLogprob {
  const f = normaliser(logits);
  return {
    id,
    logprob: f(logits[id]),
    top: topIds(logits, Math.min(top, MAX_TOP_LOGPROBS, logits.length)).map((t) => ({ id: t, logprob: f(logits[t]) })),
  };
}
