import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { createRng } from '../../src/generate/prng.ts';
import { argmax, MAX_SAMPLER_VOCAB, type SamplerParams, sample } from '../../src/generate/sampler.ts';

/** A fake RNG returning fixed uniforms, counting the draws. */
function fixed(...us: number[]): { nextFloat(): number; calls: number } {
  const r = {
    calls: 0,
    nextFloat(): number {
      return us[Math.min(r.calls++, us.length - 1)];
    },
  };
  return r;
}

const P = (o: Partial<SamplerParams> = {}): SamplerParams => ({
  temperature: 1,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  ...o,
});

/** Straightforward reference: full sort, exactly the documented pipeline. */
function reference(logits: Float32Array, history: number[], p: SamplerParams, u: number): number {
  const n = logits.length;
  const l = Float32Array.from(logits);
  if (p.repetitionPenalty !== 1) {
    for (const t of new Set(history)) {
      if (Number.isInteger(t) && t >= 0 && t < n)
        l[t] = l[t] > 0 ? l[t] / p.repetitionPenalty : l[t] * p.repetitionPenalty;
    }
  }
  if (p.temperature <= 0) {
    let b = 0;
    for (let i = 1; i < n; i++) if (l[i] > l[b]) b = i;
    return b;
  }
  let order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (l[a] !== l[b] ? (l[a] > l[b] ? -1 : 1) : a - b));
  if (p.topK > 0 && p.topK < n) order = order.slice(0, p.topK);
  const m = l[order[0]] / p.temperature;
  const w = order.map((i) => {
    const z = l[i] / p.temperature;
    if (m === Number.POSITIVE_INFINITY) return z === m ? 1 : 0;
    if (m === Number.NEGATIVE_INFINITY) return 1;
    return Math.exp(z - m);
  });
  const Z = w.reduce((a, b) => a + b, 0);
  let keep = order.length;
  if (p.topP < 1) {
    let cum = 0;
    for (let i = 0; i < order.length; i++) {
      cum += w[i];
      if (cum >= p.topP * Z) {
        keep = i + 1;
        break;
      }
    }
  }
  const W = w.slice(0, keep).reduce((a, b) => a + b, 0);
  let cum = 0;
  for (let i = 0; i < keep; i++) {
    cum += w[i];
    if (u * W < cum) return order[i];
  }
  return order[keep - 1];
}

function gaussianLogits(n: number, seed: number, spread = 2.5, peaks = 20): Float32Array {
  const rng = createRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = 1 - rng.nextFloat();
    out[i] = Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * rng.nextFloat()) * spread;
  }
  for (let j = 0; j < peaks; j++) out[Math.floor(rng.nextFloat() * n)] = 10 + 6 * rng.nextFloat();
  return out;
}

function expectConfig(fn: () => unknown, code: string, kind = 'Config'): void {
  try {
    fn();
    expect.unreachable(`expected ${code}`);
  } catch (e) {
    expect(isBitNetError(e) ? `${e.kind}:${e.code}` : String(e)).toBe(`${kind}:${code}`);
  }
}

describe('argmax', () => {
  it('returns the highest logit, ties to the lowest id', () => {
    expect(argmax(new Float32Array([1, 3, 2, 3]))).toBe(1);
    expect(argmax(new Float32Array([-Infinity, -Infinity]))).toBe(0);
    expect(argmax([0, 5, Infinity, Infinity])).toBe(2);
  });
  it('rejects NaN and empty input', () => {
    expectConfig(() => argmax(new Float32Array([1, Number.NaN])), 'LOGITS_NAN', 'Model');
    expectConfig(() => argmax(new Float32Array([Number.NaN, 1])), 'LOGITS_NAN', 'Model');
    expectConfig(() => argmax(new Float32Array(0)), 'SAMPLER_EMPTY_LOGITS');
  });
});

describe('sample', () => {
  it('greedy (temperature <= 0) takes the argmax, ties lowest, and draws nothing', () => {
    const r = fixed(0.5);
    expect(sample(new Float32Array([0, 2, 2, 1]), [], P({ temperature: 0 }), r)).toBe(1);
    expect(sample(new Float32Array([0, 2, 2, 1]), [], P({ temperature: -1 }), r)).toBe(1);
    expect(r.calls).toBe(0);
  });

  it('applies the CTRL repetition penalty once per distinct id: divide positives, multiply negatives', () => {
    const g = P({ temperature: 0, repetitionPenalty: 1.1 });
    expect(sample(new Float32Array([2, 1.9]), [0], g, fixed(0))).toBe(1); // 2/1.1 < 1.9
    expect(sample(new Float32Array([-1, -1.05]), [0], g, fixed(0))).toBe(1); // -1.1 < -1.05
    // Applied once even though 0 appears three times: 2/1.2 = 1.67 > 1.5 (thrice would be 1.16).
    expect(sample(new Float32Array([2, 1.5]), [0, 0, 0], P({ temperature: 0, repetitionPenalty: 1.2 }), fixed(0))).toBe(
      0,
    );
    // Ids outside the vocabulary or not integers are ignored.
    expect(sample(new Float32Array([2, 1.9, 0]), [-1, 3, 0.5, 99], g, fixed(0))).toBe(0);
    // p == 1 leaves everything alone; p < 1 boosts.
    expect(sample(new Float32Array([1.9, 2]), [0], P({ temperature: 0, repetitionPenalty: 0.9 }), fixed(0))).toBe(0);
  });

  it('never modifies its inputs', () => {
    const logits = gaussianLogits(1000, 1);
    const copy = Float32Array.from(logits);
    const history = [1, 2, 3, 3];
    sample(logits, history, P({ repetitionPenalty: 1.3, topK: 10, topP: 0.9 }), createRng(1));
    sample(logits, history, P({ repetitionPenalty: 1.3, topP: 0.9 }), createRng(1));
    expect(logits).toEqual(copy);
    expect(history).toEqual([1, 2, 3, 3]);
  });

  it('draws exactly one uniform per non-greedy call', () => {
    const logits = gaussianLogits(500, 2);
    for (const p of [P(), P({ topK: 5 }), P({ topP: 0.5 }), P({ topK: 1 }), P({ topK: 40, topP: 0.1 })]) {
      const r = fixed(0.3);
      sample(logits, [1], p, r);
      expect(r.calls).toBe(1);
    }
  });

  it('keeps top-k ties deterministically by lowest id', () => {
    const logits = new Float32Array(50); // all equal
    const rng = createRng(3);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(sample(logits, [], P({ topK: 3 }), rng));
    expect([...seen].sort()).toEqual([0, 1, 2]);
  });

  it('top-p keeps the smallest prefix reaching topP and renormalises it', () => {
    const logits = new Float32Array([0.5, 0.3, 0.15, 0.05].map(Math.log));
    // Kept {0, 1} with mass 0.8: id 0 covers u in [0, 0.625).
    expect(sample(logits, [], P({ topP: 0.75 }), fixed(0.6))).toBe(0);
    expect(sample(logits, [], P({ topP: 0.75 }), fixed(0.63))).toBe(1);
    expect(sample(logits, [], P({ topP: 0.75 }), fixed(0.999))).toBe(1);
    expect(sample(logits, [], P({ topP: 0.75, topK: 3 }), fixed(0.999))).toBe(1);
    // topP = 0 keeps only the top token; topP >= 1 is off.
    expect(sample(logits, [], P({ topP: 0 }), fixed(0.99))).toBe(0);
    expect(sample(logits, [], P({ topP: 1 }), fixed(0.99))).toBe(3);
  });

  it('handles infinite logits', () => {
    const inf = Number.POSITIVE_INFINITY;
    expect(sample(new Float32Array([inf, 0, inf]), [], P(), fixed(0.49))).toBe(0);
    expect(sample(new Float32Array([inf, 0, inf]), [], P(), fixed(0.51))).toBe(2);
    expect(sample(new Float32Array([inf, 0, inf]), [], P({ topK: 2 }), fixed(0.51))).toBe(2);
    const ninf = new Float32Array(5).fill(Number.NEGATIVE_INFINITY);
    expect(sample(ninf, [], P(), fixed(0.61))).toBe(3); // uniform
    expect(sample(new Float32Array([-inf, 1, -inf]), [], P(), fixed(0.99))).toBe(1);
    expect(() => sample(new Float32Array([1, Number.NaN]), [], P(), fixed(0.5))).toThrow(/NaN/);
    expect(() => sample(new Float32Array([1, Number.NaN]), [], P({ topK: 1 }), fixed(0.5))).toThrow(/NaN/);
  });

  it('a temperature so small that logit / T overflows is greedy, not uniform', () => {
    const logits = new Float32Array([5, 4, 1]);
    for (const u of [0.01, 0.5, 0.99]) {
      expect(sample(logits, [], P({ temperature: 1e-308 }), fixed(u))).toBe(0);
      expect(sample(logits, [], P({ temperature: 1e-308, topK: 2 }), fixed(u))).toBe(0);
      expect(sample(new Float32Array([-5, -4, -9]), [], P({ temperature: 1e-308, topP: 0.5 }), fixed(u))).toBe(1);
    }
  });

  it('matches the full-sort reference on random small vocabularies', () => {
    const rng = createRng(77);
    for (let t = 0; t < 600; t++) {
      const n = 1 + Math.floor(rng.nextFloat() * 60);
      const logits = new Float32Array(n);
      // Coarse values so ties are common.
      for (let i = 0; i < n; i++) logits[i] = Math.round((rng.nextFloat() * 2 - 1) * 8) / 2;
      const history = Array.from({ length: Math.floor(rng.nextFloat() * 8) }, () => Math.floor(rng.nextFloat() * n));
      const p = P({
        temperature: [0, 0.3, 0.7, 1, 2][Math.floor(rng.nextFloat() * 5)],
        topK: [0, 1, 3, 10, 100][Math.floor(rng.nextFloat() * 5)],
        topP: [0.1, 0.5, 0.9, 1][Math.floor(rng.nextFloat() * 4)],
        repetitionPenalty: [1, 1.1, 1.5][Math.floor(rng.nextFloat() * 3)],
      });
      const u = rng.nextFloat();
      expect(sample(logits, history, p, fixed(u)), JSON.stringify({ t, p, u })).toBe(reference(logits, history, p, u));
    }
  });

  it('matches the full-sort reference on random medium vocabularies (partitioned prefix search)', () => {
    const rng = createRng(78);
    for (let t = 0; t < 300; t++) {
      const n = 17 + Math.floor(rng.nextFloat() * 3000);
      const logits = gaussianLogits(n, 1000 + t, 0.5 + rng.nextFloat() * 3, Math.floor(rng.nextFloat() * 5));
      const p = P({
        temperature: [0.5, 1, 3][Math.floor(rng.nextFloat() * 3)],
        topK: [0, 0, 50, 1000][Math.floor(rng.nextFloat() * 4)],
        topP: [0.3, 0.9, 1, 1][Math.floor(rng.nextFloat() * 4)],
      });
      const u = rng.nextFloat();
      expect(sample(logits, [], p, fixed(u)), JSON.stringify({ t, n, p, u })).toBe(reference(logits, [], p, u));
    }
  });

  it('matches the full-sort reference on a 128256-entry vocabulary', () => {
    const n = 128256;
    const logits = gaussianLogits(n, 5);
    const flat = gaussianLogits(n, 6, 1, 0); // no clear winner: the nucleus is most of the vocabulary
    const history = Array.from({ length: 300 }, (_, i) => (i * 7919) % n);
    const cases: [Float32Array, SamplerParams, number][] = [
      [logits, P(), 0.3],
      [logits, P(), 0.9999],
      [logits, P({ topP: 0.9, repetitionPenalty: 1.1 }), 0.7],
      [logits, P({ topK: 40, topP: 0.95, temperature: 0.7 }), 0.5],
      [flat, P({ topP: 0.95, temperature: 1.5 }), 0.42],
      [flat, P({ temperature: 0.9, repetitionPenalty: 1.3 }), 0.999],
      [flat, P({ topK: 5000 }), 0.8],
    ];
    for (const [l, p, u] of cases) {
      expect(sample(l, history, p, fixed(u)), JSON.stringify({ p, u })).toBe(reference(l, history, p, u));
    }
  });

  it('follows the softmax distribution', () => {
    const logits = new Float32Array([1, 2, 3, 0.5]);
    const probs = Array.from(logits, Math.exp);
    const s = probs.reduce((a, b) => a + b);
    const rng = createRng(11);
    const counts = [0, 0, 0, 0];
    const N = 20000;
    for (let i = 0; i < N; i++) counts[sample(logits, [], P(), rng)]++;
    for (let i = 0; i < 4; i++) {
      const pr = probs[i] / s;
      expect(Math.abs(counts[i] / N - pr)).toBeLessThan(5 * Math.sqrt((pr * (1 - pr)) / N));
    }
  });

  it('is deterministic for a seed, also across vocabulary sizes sharing the scratch buffer', () => {
    const big = gaussianLogits(5000, 8);
    const small = gaussianLogits(40, 9);
    const run = (): number[] => {
      const rng = createRng(1234n);
      const out: number[] = [];
      for (let i = 0; i < 50; i++) {
        const l = i % 2 ? big : small;
        out.push(sample(l, out, P({ temperature: 0.8, topP: 0.9, repetitionPenalty: 1.2 }), rng));
      }
      return out;
    };
    expect(run()).toEqual(run());
  });

  it('rejects bad parameters with Config errors', () => {
    const l = new Float32Array([1, 2]);
    const r = fixed(0.5);
    expectConfig(() => sample(new Float32Array(0), [], P(), r), 'SAMPLER_EMPTY_LOGITS');
    expectConfig(() => sample(l, [], P({ temperature: Number.NaN }), r), 'SAMPLER_BAD_TEMPERATURE');
    expectConfig(() => sample(l, [], P({ temperature: Number.POSITIVE_INFINITY }), r), 'SAMPLER_BAD_TEMPERATURE');
    expectConfig(() => sample(l, [], P({ topK: 1.5 }), r), 'SAMPLER_BAD_TOP_K');
    expectConfig(() => sample(l, [], P({ topP: -0.1 }), r), 'SAMPLER_BAD_TOP_P');
    expectConfig(() => sample(l, [], P({ topP: Number.NaN }), r), 'SAMPLER_BAD_TOP_P');
    expectConfig(() => sample(l, [], P({ repetitionPenalty: 0 }), r), 'SAMPLER_BAD_REPETITION_PENALTY');
    expectConfig(() => sample(l, [], P({ repetitionPenalty: Number.NaN }), r), 'SAMPLER_BAD_REPETITION_PENALTY');
    expect(MAX_SAMPLER_VOCAB).toBe(2 ** 21);
  });
});
