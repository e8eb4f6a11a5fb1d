// Perplexity as llama-perplexity computes it (src/generate/perplexity.ts), on a scripted scorer.
import { describe, expect, it } from 'vitest';
import type { PromptTokenLogprob } from '../../src/generate/logprobs.ts';
import { perplexity } from '../../src/generate/perplexity.ts';

/** A scorer whose log-probability of token t at any position is −t/10; it records the chunks. */
function scripted() {
  const seen: number[][] = [];
  const score = async (ids: number[]): Promise<PromptTokenLogprob[]> => {
    seen.push([...ids]);
    return ids.map((id, i) => ({ id, logprob: i === 0 ? null : -id / 10, top: i === 0 ? null : [] }));
  };
  return { seen, score };
}

describe('perplexity', () => {
  it('cuts whole chunks, puts BOS first, scores each second half, and averages the NLL', async () => {
    const tokens = Array.from({ length: 26 }, (_, i) => i + 1);
    const s = scripted();
    const progress: number[] = [];
    const r = await perplexity(tokens, s.score, { chunkSize: 8, bos: 99, onChunk: (p) => progress.push(p.chunk) });
    // 26 tokens → 3 chunks of 8 (2 dropped); each starts with BOS in place of its first token
    expect(s.seen).toEqual([
      [99, 2, 3, 4, 5, 6, 7, 8],
      [99, 10, 11, 12, 13, 14, 15, 16],
      [99, 18, 19, 20, 21, 22, 23, 24],
    ]);
    // scored: positions 5..7 of each chunk (first = 4), NLL = token / 10
    const nll = [6, 7, 8, 14, 15, 16, 22, 23, 24].map((t) => t / 10);
    const mean = nll.reduce((a, b) => a + b, 0) / nll.length;
    expect(r.tokensScored).toBe(9);
    expect(r.chunks).toBe(3);
    expect(r.meanNll).toBeCloseTo(mean, 14);
    expect(r.ppl).toBeCloseTo(Math.exp(mean), 12);
    const variance = nll.reduce((a, b) => a + b * b, 0) / nll.length - mean * mean;
    expect(r.pplError).toBeCloseTo(Math.exp(mean) * Math.sqrt(variance / 8), 12);
    expect(r.chunkPpl.map((p) => Math.log(p))).toEqual([0.7, 1.5, 2.3].map((m) => expect.closeTo(m, 12)));
    expect(progress).toEqual([1, 2, 3]);
  });

  it('stops after maxChunks; without a BOS the tokens are scored as they are', async () => {
    const s = scripted();
    const r = await perplexity(
      Array.from({ length: 40 }, (_, i) => i),
      s.score,
      { chunkSize: 10, maxChunks: 2 },
    );
    expect(s.seen.map((c) => c[0])).toEqual([0, 10]);
    expect([r.chunks, r.tokensScored]).toEqual([2, 8]);
  });

  it('refuses a text shorter than one chunk and bad settings', async () => {
    const s = scripted();
    await expect(perplexity([1, 2, 3], s.score, { chunkSize: 4 })).rejects.toMatchObject({
      code: 'TEXT_TOO_SHORT',
      details: { tokens: 3, chunkSize: 4 },
    });
    for (const o of [{ chunkSize: 3 }, { chunkSize: 4.5 }, { chunkSize: 8, maxChunks: 0 }])
      await expect(perplexity(new Array(20).fill(1), s.score, o), JSON.stringify(o)).rejects.toMatchObject({
        code: 'INVALID_PERPLEXITY_CONFIG',
      });
    await expect(perplexity(new Array(8).fill(1), async () => [], { chunkSize: 8 })).rejects.toMatchObject({
      code: 'SCORE_MISSING',
    });
  });
});
