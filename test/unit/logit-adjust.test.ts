// Logit bias and the repetition / presence / frequency penalties (src/generate/logit-adjust.ts),
// alone and through the sampler.
import { describe, expect, it } from 'vitest';
import { adjustLogits, releaseAdjusted } from '../../src/generate/logit-adjust.ts';
import { createRng } from '../../src/generate/prng.ts';
import { type SamplerParams, sample } from '../../src/generate/sampler.ts';

const f = Math.fround;
/** Sampler settings with everything off but what `o` sets (temperature 1 unless given). */
const params = (o: Partial<SamplerParams> = {}): SamplerParams => ({
  temperature: 1,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  ...o,
});
const adjusted = (logits: number[], history: number[], a: Parameters<typeof adjustLogits>[2]) => {
  const r = adjustLogits(Float32Array.from(logits), history, a);
  const out = Array.from(r.vals);
  releaseAdjusted(r);
  return out;
};

describe('adjustLogits', () => {
  it('bias first, then per distinct id: repetition, then presence and frequency by count', () => {
    // bias: l0 = 1 − 100, l3 = 0.5 + 1.5. id 2 twice: 3 / 2 − (2·0.5 + 0.25); id 1 once: −2·2 − (0.5 + 0.25);
    // id 3 once, after its bias: (0.5 + 1.5) / 2 − (0.5 + 0.25)  (penalties first would give 0.75)
    const out = adjusted([1, -2, 3, 0.5], [2, 2, 1, 7, -1, 1.5, 3], {
      repetitionPenalty: 2,
      frequencyPenalty: 0.5,
      presencePenalty: 0.25,
      logitBias: { 0: -100, 3: 1.5 },
    });
    expect(out).toEqual([-99, -4.75, 0.25, 0.25]);
  });

  it("rounds as llama.cpp's f32 sampler does", () => {
    const l = 1.2345678;
    const [a] = adjusted([l, 0], [0, 0, 0], {
      repetitionPenalty: 1,
      frequencyPenalty: 0.1,
      presencePenalty: 0.3,
      logitBias: { 0: 0.7 },
    });
    const biased = f(f(l) + f(0.7));
    expect(a).toBe(f(biased - f(f(3 * f(0.1)) + f(0.3))));
    // negative penalties raise repeated tokens (OpenAI allows [-2, 2])
    const [b] = adjusted([1, 0], [0], { repetitionPenalty: 1, presencePenalty: -2 });
    expect(b).toBe(3);
  });

  it('never touches the logits, and hands them back when there is nothing to do', () => {
    const logits = Float32Array.from([1, 2, 3]);
    const none = adjustLogits(logits, [0, 1], { repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 });
    expect(none.vals).toBe(logits);
    const noHistory = adjustLogits(logits, [], { repetitionPenalty: 1.3, presencePenalty: 1 });
    expect(noHistory.vals).toBe(logits);
    const some = adjustLogits(logits, [], { repetitionPenalty: 1, logitBias: { 1: 5 } });
    expect(Array.from(some.vals)).toEqual([1, 7, 3]);
    expect(Array.from(logits)).toEqual([1, 2, 3]);
    releaseAdjusted(some);
  });

  it('refuses a bias on a token outside the vocabulary, a key that is no id, and non-finite values', () => {
    const logits = new Float32Array(4);
    const base = { repetitionPenalty: 1 };
    for (const logitBias of [{ 4: 1 }, { '-1': 1 }, { '01': 1 }, { x: 1 }, { 1: Number.NaN }, { 1: Infinity }]) {
      expect(
        () => adjustLogits(logits, [], { ...base, logitBias: logitBias as never }),
        JSON.stringify(logitBias),
      ).toThrow(
        expect.objectContaining({
          code: 'SAMPLER_BAD_LOGIT_BIAS',
          details: expect.objectContaining({ field: 'logitBias' }),
        }),
      );
    }
    for (const bad of [{ presencePenalty: Number.NaN }, { frequencyPenalty: Infinity }]) {
      expect(() => adjustLogits(logits, [1], { ...base, ...bad })).toThrow(
        expect.objectContaining({ code: 'SAMPLER_BAD_PENALTY' }),
      );
    }
  });
});

describe('sampling with bias and penalties', () => {
  const P = (o: Partial<SamplerParams> = {}) => params({ temperature: 0, ...o });

  it('a −100 bias bans the greedy token, a +100 bias forces another', () => {
    const logits = Float32Array.from([0.1, 5, 2, -1]);
    const rng = createRng(1);
    expect(sample(logits, [], P(), rng)).toBe(1);
    expect(sample(logits, [], P({ logitBias: { 1: -100 } }), rng)).toBe(2);
    expect(sample(logits, [], P({ logitBias: { 3: 100 } }), rng)).toBe(3);
    // sampled at temperature 1, a banned token never comes up
    for (let i = 0; i < 200; i++)
      expect(sample(logits, [], P({ temperature: 1, logitBias: { 1: -100 } }), rng)).not.toBe(1);
  });

  it('presence and frequency penalties steer greedy decoding away from repeats', () => {
    const logits = Float32Array.from([3, 2.9, 2.5]);
    expect(sample(logits, [0], P(), createRng(1))).toBe(0);
    expect(sample(logits, [0], P({ presencePenalty: 0.2 }), createRng(1))).toBe(1);
    // id 0 once and id 1 twice: frequency 0.3 → 2.7, 2.3, 2.5
    expect(sample(logits, [0, 1, 1], P({ frequencyPenalty: 0.3 }), createRng(1))).toBe(0);
    expect(sample(logits, [0, 0, 1], P({ frequencyPenalty: 0.3 }), createRng(1))).toBe(1);
  });

  it('equals sampling the adjusted logits with no adjustments, for random settings', () => {
    const rng = createRng(99);
    for (let trial = 0; trial < 200; trial++) {
      const n = 2 + Math.floor(rng.nextFloat() * 60);
      const logits = Float32Array.from({ length: n }, () => (rng.nextFloat() - 0.5) * 8);
      const history = Array.from({ length: Math.floor(rng.nextFloat() * 20) }, () => Math.floor(rng.nextFloat() * n));
      const bias: Record<number, number> = {};
      for (let i = 0; i < 3; i++) bias[Math.floor(rng.nextFloat() * n)] = (rng.nextFloat() - 0.5) * 10;
      const p = P({
        temperature: rng.nextFloat() < 0.3 ? 0 : 0.2 + rng.nextFloat(),
        topK: Math.floor(rng.nextFloat() * 5),
        topP: rng.nextFloat() < 0.5 ? 1 : 0.3 + rng.nextFloat() * 0.7,
        repetitionPenalty: 1 + rng.nextFloat(),
        presencePenalty: (rng.nextFloat() - 0.5) * 4,
        frequencyPenalty: (rng.nextFloat() - 0.5) * 4,
        logitBias: bias,
      });
      const pre = adjustLogits(logits, history, p);
      const plain = Float32Array.from(pre.vals);
      releaseAdjusted(pre);
      const u = rng.nextFloat();
      const noAdj = { ...p, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: {} };
      expect(sample(logits, history, p, { nextFloat: () => u })).toBe(
        sample(plain, history, noAdj, { nextFloat: () => u }),
      );
    }
  });
});

describe('min-p', () => {
  it('keeps only the tokens at least minP as likely as the top one (before temperature)', () => {
    // p ∝ e^l: id 1 is e^-0.5 ≈ 0.61 of id 0; id 2 is e^-2 ≈ 0.14; id 3 far below
    const logits = Float32Array.from([2, 1.5, 0, -5]);
    const seen = new Set<number>();
    const rng = createRng(4);
    for (let i = 0; i < 400; i++) seen.add(sample(logits, [], params({ minP: 0.5, temperature: 3 }), rng));
    expect([...seen].sort()).toEqual([0, 1]);
    seen.clear();
    for (let i = 0; i < 400; i++) seen.add(sample(logits, [], params({ minP: 0.1, temperature: 3 }), rng));
    expect([...seen].sort()).toEqual([0, 1, 2]);
    // off, and greedy, are unaffected
    const u = { nextFloat: () => 0.999 };
    expect(sample(logits, [], params({ minP: 0 }), u)).toBe(sample(logits, [], params(), u));
    expect(sample(logits, [], params({ minP: 1, temperature: 0 }), u)).toBe(0);
  });

  it('equals sampling the logits with the dropped tokens at −∞, for random settings', () => {
    const rng = createRng(17);
    for (let trial = 0; trial < 200; trial++) {
      const n = 2 + Math.floor(rng.nextFloat() * 80);
      const logits = Float32Array.from({ length: n }, () => (rng.nextFloat() - 0.5) * 10);
      const minP = rng.nextFloat() * 0.5;
      const p = params({
        temperature: 0.2 + rng.nextFloat(),
        topK: Math.floor(rng.nextFloat() * 6),
        topP: rng.nextFloat() < 0.5 ? 1 : 0.3 + rng.nextFloat() * 0.7,
        minP,
      });
      let max = Number.NEGATIVE_INFINITY;
      for (const l of logits) max = Math.max(max, l);
      const masked = logits.map((l) => (l >= max + Math.log(minP) ? l : Number.NEGATIVE_INFINITY));
      const u = rng.nextFloat();
      expect(sample(logits, [], p, { nextFloat: () => u })).toBe(
        sample(masked, [], { ...p, minP: 0 }, { nextFloat: () => u }),
      );
    }
  });

  it('refuses a min-p outside [0, 1]', () => {
    for (const minP of [-0.1, 1.5, Number.NaN])
      expect(() => sample(new Float32Array(3), [], params({ minP }), createRng(1))).toThrow(
        expect.objectContaining({ code: 'SAMPLER_BAD_MIN_P' }),
      );
  });
});
