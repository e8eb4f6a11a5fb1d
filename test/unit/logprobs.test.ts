// Token log-probabilities (src/generate/logprobs.ts) against a plain full-sort, f64 reference.
import { describe, expect, it } from 'vitest';
import { tokenLogprob } from '../../src/generate/logprobs.ts';
import { createRng } from '../../src/generate/prng.ts';

/** log-softmax the plain way, and the full rank order (logit desc, id asc). */
function naive(logits: Float32Array): { lp: number[]; order: number[] } {
  const m = logits.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY);
  let z = 0;
  for (const l of logits) z += Math.exp(l - m);
  const lp = Array.from(logits, (l) => l - m - Math.log(z));
  const order = Array.from(logits.keys()).sort((a, b) => (logits[a] !== logits[b] ? logits[b] - logits[a] : a - b));
  return { lp, order };
}

describe('tokenLogprob', () => {
  it('is log-softmax of the logits: probabilities sum to 1, the ratios are the logit differences', () => {
    const logits = Float32Array.from([2, -1, 0.5, 3, 3]);
    const all = Array.from(logits.keys(), (i) => tokenLogprob(logits, i, 0).logprob);
    expect(all.reduce((s, l) => s + Math.exp(l), 0)).toBeCloseTo(1, 14);
    expect(all[3] - all[1]).toBeCloseTo(4, 14);
    expect(all[3]).toBe(all[4]);
  });

  it('lists the top alternatives in rank order, ties to the lowest id, clipped to the vocabulary', () => {
    const logits = Float32Array.from([1, 3, 3, -2, 3]);
    const r = tokenLogprob(logits, 3, 4);
    expect(r.id).toBe(3);
    expect(r.top.map((t) => t.id)).toEqual([1, 2, 4, 0]);
    expect(r.top[0].logprob).toBe(r.top[1].logprob);
    expect(tokenLogprob(logits, 0, 0).top).toEqual([]);
    expect(tokenLogprob(Float32Array.from([0, 1]), 0, 20).top.map((t) => t.id)).toEqual([1, 0]);
  });

  it('infinite logits: +inf tokens share the mass, all −inf is uniform', () => {
    const inf = Float32Array.from([0, Infinity, 5, Infinity]);
    expect(tokenLogprob(inf, 1, 2)).toEqual({
      id: 1,
      logprob: -Math.log(2),
      top: [
        { id: 1, logprob: -Math.log(2) },
        { id: 3, logprob: -Math.log(2) },
      ],
    });
    expect(tokenLogprob(inf, 2, 0).logprob).toBe(-Infinity);
    const none = new Float32Array(4).fill(-Infinity);
    expect(tokenLogprob(none, 2, 1)).toEqual({ id: 2, logprob: -Math.log(4), top: [{ id: 0, logprob: -Math.log(4) }] });
    expect(tokenLogprob(Float32Array.from([0, -Infinity]), 1, 0).logprob).toBe(-Infinity);
  });

  it('agrees with the naive reference on random vocabularies up to 128256 entries', () => {
    const rng = createRng(3);
    for (const n of [1, 7, 300, 128256]) {
      // coarse values, so that ties are common
      const logits = Float32Array.from({ length: n }, () => Math.round((rng.nextFloat() - 0.5) * 40) / 4);
      const ref = naive(logits);
      const id = Math.floor(rng.nextFloat() * n);
      const r = tokenLogprob(logits, id, 20);
      expect(r.logprob).toBeCloseTo(ref.lp[id], 12);
      expect(r.top.map((t) => t.id)).toEqual(ref.order.slice(0, 20));
      for (const t of r.top) expect(t.logprob).toBeCloseTo(ref.lp[t.id], 12);
    }
  });
});
