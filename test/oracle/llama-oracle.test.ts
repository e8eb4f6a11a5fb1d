/**
 * Outside oracle: our engine's next-token distributions vs llama.cpp's (node-llama-cpp 3.21.1, CPU)
 * on synthetic SiLU BitNet models (arch `bitnet`, TQ2_0, F16 embeddings) written by our CLI, and
 * on the smallest shape with Q8_0, Q4_0 and Q6_K embeddings/heads (the integer heads).
 *
 * Metrics per model, over every prompt position: mean total-variation distance
 * TVD = ½·Σ|p − q| and top-1 agreement. llama.cpp quantizes activations per 256-block (Q8_K) while
 * we use per-token int8, so small differences are expected (platform-notes: TVD ≈ 0.06).
 * Mutations prove the test can fail: ours on a relu² file or on another seed vs llama on the SiLU
 * file (llama.cpp ignores bitnet.hidden_activation, so it always runs SiLU) must score TVD > 0.3.
 *
 * Seeds are FNV-1a hashes of the model labels, fixed before any result was seen.
 * Embedding std is 4.2/√hidden: logits are (normed h)·embedding over `hidden` terms, so this keeps
 * their spread, and the top-1 probabilities, in the 0.2–0.9 range at every width (measured; the
 * CLI default 0.15 is right for hidden 768 only: hidden 256 gives a median top-1 of 0.17).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../../src/generate/prng.ts';
import { ensureOracleInstalled, llamaProbs, REPO_ROOT, runNode } from './oracle-setup.ts';

interface Shape {
  label: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  vocab: number;
}
const SHAPES: Shape[] = [
  { label: 'h256 L2 4q/2kv', hidden: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 768, vocab: 512 },
  { label: 'h512 L3 8q/8kv', hidden: 512, layers: 3, heads: 8, kvHeads: 8, ffn: 1536, vocab: 1000 },
  { label: 'h768 L3 6q/2kv', hidden: 768, layers: 3, heads: 6, kvHeads: 2, ffn: 2048, vocab: 768 },
];
// 96 rather than 64: at 64 positions one model sat at 55/64 top-1 with 8 of its 9 misses near-ties (top-2 gap
// < 0.04); at 200 positions the three models agree on 96/90/92%. More positions, less sampling noise.
const POSITIONS = 96;
const MAX_TVD = 0.1;
const MIN_TOP1 = 0.85;
const MIN_MUTANT_TVD = 0.3;
// |ln(PPL ours / PPL llama.cpp)| over the same positions: 5 %, set before the first measurement.
const MAX_PPL_LOG_RATIO = 0.05;

const fnv1a = (s: string) => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
};
const embdStd = (hidden: number) => Math.round((4.2 / Math.sqrt(hidden)) * 1000) / 1000;
const BIN = join(REPO_ROOT, 'bin', 'bitnet.js');

async function synth(
  s: Shape,
  seed: number,
  activation: 'silu' | 'relu2',
  out: string,
  embdType: 'f16' | 'q8_0' | 'q4_0' | 'q6_k' = 'f16',
): Promise<string> {
  const flags = {
    hidden: s.hidden,
    layers: s.layers,
    heads: s.heads,
    'kv-heads': s.kvHeads,
    ffn: s.ffn,
    vocab: s.vocab,
  };
  const args = Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]);
  await runNode(BIN, [
    'synth',
    ...args,
    '--ctx',
    '256',
    '--qtype',
    'tq2_0',
    '--arch',
    'bitnet',
    '--embd-type',
    embdType,
    '--activation',
    activation,
    '--embd-std',
    String(embdStd(s.hidden)),
    '--seed',
    String(seed),
    '--out',
    out,
  ]);
  return out;
}

/** Our softmax(logits), in f64, at every position. */
async function ourProbs(model: string, ids: number[], extra: string[] = []): Promise<number[][]> {
  const { logits } = JSON.parse(
    await runNode(BIN, ['logits', '--model', model, '--prompt-ids', ids.join(','), '--json', ...extra]),
  ) as { logits: number[][] };
  return logits.map((row) => {
    const max = Math.max(...row);
    const e = row.map((x) => Math.exp(x - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / sum);
  });
}

const argmax = (p: number[]) => p.reduce((best, x, i) => (x > p[best] ? i : best), 0);
/** Perplexity of the prompt under one model's distributions: exp(mean −ln p(ids[i+1] | ids[..i])). */
function ppl(probs: number[][], ids: number[]): number {
  let nll = 0;
  for (let i = 0; i + 1 < ids.length; i++) nll -= Math.log(probs[i][ids[i + 1]]);
  return Math.exp(nll / (ids.length - 1));
}
/** Mean TVD, top-1 agreement, and top-1 agreement where llama.cpp's top-2 gap is ≥ 0.05 (no near-tie). */
function compare(ours: number[][], ref: number[][]) {
  expect(ours.length).toBe(ref.length);
  let tvd = 0;
  let agree = 0;
  let decisive = 0;
  let decisiveAgree = 0;
  for (let i = 0; i < ref.length; i++) {
    expect(ours[i].length).toBe(ref[i].length);
    let d = 0;
    for (let t = 0; t < ref[i].length; t++) d += Math.abs(ours[i][t] - ref[i][t]);
    tvd += d / 2;
    const same = argmax(ours[i]) === argmax(ref[i]);
    if (same) agree++;
    const [p1, p2] = [...ref[i]].sort((a, b) => b - a);
    if (p1 - p2 >= 0.05) {
      decisive++;
      if (same) decisiveAgree++;
    }
  }
  return { tvd: tvd / ref.length, top1: agree / ref.length, decisive: `${decisiveAgree}/${decisive}` };
}

interface Row {
  model: string;
  seed: number;
  embdStd: number;
  tvd: number;
  top1: number;
  decisive: string;
  ppl: number;
  llamaPpl: number;
  relu2Tvd: number;
  relu2Top1: number;
  otherSeedTvd: number;
  otherSeedTop1: number;
  q8kTvd: number;
  q8kTop1: number;
  top1Spread: string;
  inRange: number;
}
const rows: Row[] = [];
let dir = '';
const t0 = performance.now();

describe('llama.cpp oracle (node-llama-cpp 3.21.1, CPU)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitnet-llama-oracle-'));
    await ensureOracleInstalled(); // throws (test fails) if the install or the binary is broken
  }, 600_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    if (rows.length === 0) return;
    console.log(
      `\nllama.cpp oracle, ${POSITIONS} positions per model (TVD = mean total variation; top-1 = argmax agreement)`,
    );
    console.table(
      rows.map((r) => ({
        model: r.model,
        seed: r.seed,
        'embd-std': r.embdStd,
        TVD: r.tvd.toFixed(4),
        'top-1': `${(r.top1 * 100).toFixed(1)}%`,
        'top-1 w/o ties': r.decisive,
        'PPL ours/llama': `${r.ppl.toFixed(2)}/${r.llamaPpl.toFixed(2)}`,
        'relu2 TVD': r.relu2Tvd.toFixed(3),
        'relu2 top-1': `${(r.relu2Top1 * 100).toFixed(0)}%`,
        'seed+1 TVD': r.otherSeedTvd.toFixed(3),
        'seed+1 top-1': `${(r.otherSeedTop1 * 100).toFixed(0)}%`,
        'Q8_K-mode TVD': r.q8kTvd.toFixed(4),
        'Q8_K-mode top-1': `${(r.q8kTop1 * 100).toFixed(1)}%`,
        'our top-1 p (min/q25/med/q75/max)': r.top1Spread,
        'p in [0.2,0.9]': `${(r.inRange * 100).toFixed(0)}%`,
      })),
    );
    console.log(`oracle test wall time: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });

  for (const shape of SHAPES) {
    it(`${shape.label}: matches llama.cpp; relu² and another seed do not`, async () => {
      const seed = fnv1a(`llama-oracle ${shape.label}`);
      const rng = createRng(seed);
      // Ordinary tokens only (the last 3 ids are BOS/EOS/EOT in the synthetic vocab).
      const ids = Array.from({ length: POSITIONS }, () => rng.nextU32() % (shape.vocab - 3));
      const base = join(dir, `m${seed}`);
      const [silu, relu2, other] = await Promise.all([
        synth(shape, seed, 'silu', `${base}-silu.gguf`),
        synth(shape, seed, 'relu2', `${base}-relu2.gguf`),
        synth(shape, (seed + 1) >>> 0, 'silu', `${base}-other.gguf`),
      ]);
      const [ref, ours, oursRelu2, oursOther, oursQ8k] = await Promise.all([
        llamaProbs(silu, [ids]).then((r) => r.runs[0].probs),
        ourProbs(silu, ids),
        ourProbs(relu2, ids),
        ourProbs(other, ids),
        // Diagnostic: the reference with llama.cpp's Q8_K activations instead of per-token int8.
        ourProbs(silu, ids, ['--activations', 'q8k']),
      ]);
      const main = compare(ours, ref);
      const q8k = compare(oursQ8k, ref);
      const mRelu2 = compare(oursRelu2, ref);
      const mOther = compare(oursOther, ref);

      // Discrimination: saturated (≈1) or flat top-1 probabilities would hide structural bugs.
      const tops = ours.map((p) => Math.max(...p)).sort((a, b) => a - b);
      const q = (f: number) => tops[Math.round(f * (tops.length - 1))].toFixed(2);
      const inRange = tops.filter((p) => p >= 0.2 && p <= 0.9).length / tops.length;
      rows.push({
        model: shape.label,
        seed,
        embdStd: embdStd(shape.hidden),
        tvd: main.tvd,
        top1: main.top1,
        decisive: main.decisive,
        ppl: ppl(ours, ids),
        llamaPpl: ppl(ref, ids),
        relu2Tvd: mRelu2.tvd,
        relu2Top1: mRelu2.top1,
        otherSeedTvd: mOther.tvd,
        otherSeedTop1: mOther.top1,
        q8kTvd: q8k.tvd,
        q8kTop1: q8k.top1,
        top1Spread: [0, 0.25, 0.5, 0.75, 1].map(q).join('/'),
        inRange,
      });

      expect(main.tvd).toBeLessThanOrEqual(MAX_TVD);
      expect(main.top1).toBeGreaterThanOrEqual(MIN_TOP1);
      // the prompt's perplexity (what `bitnet perplexity` and llama-perplexity report) within MAX_PPL_LOG_RATIO
      expect(Math.abs(Math.log(ppl(ours, ids) / ppl(ref, ids)))).toBeLessThanOrEqual(MAX_PPL_LOG_RATIO);
      expect(inRange).toBeGreaterThanOrEqual(0.5);
      expect(mRelu2.tvd).toBeGreaterThan(MIN_MUTANT_TVD);
      expect(mOther.tvd).toBeGreaterThan(MIN_MUTANT_TVD);
      // With llama.cpp's activation scheme the remaining gap must shrink: it is activation rounding.
      expect(q8k.tvd).toBeLessThan(main.tvd);
    }, 600_000);
  }

  // The integer heads (src/model/integer-head.ts) follow ggml's block structure. With llama.cpp's
  // Q8_K activations in the projections (--activations q8k), the gap left on the same weights with
  // an F16 head is the rest of the graph's rounding; a quantized head may add little to it, and
  // reading that file with an F16 head instead (what a misread head looks like) must be farther.
  const HEAD_EXTRA_TVD = 0.015;
  for (const embdType of ['q8_0', 'q4_0', 'q6_k'] as const) {
    it(`h256 with a ${embdType.toUpperCase()} embedding/head: matches llama.cpp`, async () => {
      const shape = SHAPES[0];
      const seed = fnv1a(`llama-oracle head ${embdType}`);
      const rng = createRng(seed);
      const ids = Array.from({ length: POSITIONS }, () => rng.nextU32() % (shape.vocab - 3));
      const file = await synth(shape, seed, 'silu', join(dir, `head-${embdType}.gguf`), embdType);
      const f16 = await synth(shape, seed, 'silu', join(dir, `head-${embdType}-f16.gguf`), 'f16');
      const [ref, refF16, ours, oursQ8k, oursF16Q8k] = await Promise.all([
        llamaProbs(file, [ids]).then((r) => r.runs[0].probs),
        llamaProbs(f16, [ids]).then((r) => r.runs[0].probs),
        ourProbs(file, ids),
        ourProbs(file, ids, ['--activations', 'q8k']),
        ourProbs(f16, ids, ['--activations', 'q8k']),
      ]);
      const main = compare(ours, ref);
      const q8k = compare(oursQ8k, ref);
      const base = compare(oursF16Q8k, refF16);
      const mutant = compare(oursF16Q8k, ref);
      console.log(
        `${embdType} head: TVD ${main.tvd.toFixed(4)} (top-1 ${(main.top1 * 100).toFixed(1)}%); Q8_K mode ` +
          `${q8k.tvd.toFixed(4)} (top-1 ${(q8k.top1 * 100).toFixed(1)}%), F16-head baseline ${base.tvd.toFixed(4)}, ` +
          `F16 head read against this file ${mutant.tvd.toFixed(4)}`,
      );
      expect(main.tvd).toBeLessThanOrEqual(MAX_TVD);
      expect(q8k.tvd).toBeLessThanOrEqual(base.tvd + HEAD_EXTRA_TVD);
      expect(mutant.tvd).toBeGreaterThan(q8k.tvd);
    }, 600_000);
  }
});
