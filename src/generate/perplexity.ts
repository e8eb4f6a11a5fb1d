/**
 * Perplexity of a token sequence, computed the way llama.cpp's `llama-perplexity` does, so the two
 * can be compared on the same file and text:
 *
 * - the tokens (the text's, BOS first where the vocabulary adds one) are cut into
 *   `floor(n / chunkSize)` chunks of `chunkSize` (its n_ctx), the rest dropped; with a BOS id, each
 *   chunk's first token is replaced by BOS (llama.cpp with add_bos). llama-perplexity refuses texts
 *   under 2 chunks; one is enough here;
 * - each chunk is evaluated from an empty cache, and only its second half is scored: the tokens at
 *   positions chunkSize/2 + 1 … chunkSize − 1, each given everything before it in the chunk, so
 *   every scored token has at least half a chunk of context;
 * - PPL = exp(mean NLL) over every scored token; the error is PPL × the standard error of the mean
 *   NLL (sqrt((E[nll²] − E[nll]²) / (N − 1))), llama.cpp's estimate.
 *
 * The scorer gives each token's log-probability given the tokens before it (the engine's
 * promptLogprobs); entry 0 is never read.
 */
import { BitNetError } from '../errors.ts';
import type { PromptTokenLogprob } from './logprobs.ts';

export interface PerplexityOptions {
  /** Tokens per chunk (llama-perplexity's --ctx-size); at least 4. */
  chunkSize: number;
  /** Score at most this many chunks (llama-perplexity's --chunks); default all. */
  maxChunks?: number;
  /** Replace each chunk's first token with this id (the model's BOS, when its vocabulary adds one). */
  bos?: number;
  /** After each chunk: the perplexity so far (llama-perplexity prints it as `[i]ppl`). */
  onChunk?(p: { chunk: number; chunks: number; ppl: number }): void;
}

export interface PerplexityResult {
  ppl: number;
  /** PPL × the standard error of the mean NLL (0 with a single scored token). */
  pplError: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  meanNll: number;
  tokensScored: number;
  chunks: number;
  chunkSize: number;
  /** Each chunk's own perplexity. */
  chunkPpl: number[];
}

export type ChunkScorer = (ids: number[]) => Promise<readonly PromptTokenLogprob[]>;

export async function perplexity(
  tokens: readonly number[],
  score: ChunkScorer,
  o: PerplexityOptions,
): Promise<PerplexityResult> {
  const n = o.chunkSize;
  if (!Number.isInteger(n) || n < 4)
    throw BitNetError.Config('INVALID_PERPLEXITY_CONFIG', `chunkSize must be an integer >= 4 (got ${n})`, {
      field: 'chunkSize',
      value: String(n),
    });
  if (o.maxChunks !== undefined && !(Number.isInteger(o.maxChunks) && o.maxChunks >= 1))
    throw BitNetError.Config('INVALID_PERPLEXITY_CONFIG', `maxChunks must be an integer >= 1 (got ${o.maxChunks})`, {
      field: 'maxChunks',
      value: String(o.maxChunks),
    });
  const available = Math.floor(tokens.length / n);
  if (available === 0)
    throw BitNetError.Config(
      'TEXT_TOO_SHORT',
      `the text has ${tokens.length} tokens; perplexity needs at least one chunk of ${n}`,
      { tokens: tokens.length, chunkSize: n },
    );
  const chunks = Math.min(available, o.maxChunks ?? available);
  const first = n >> 1;
  let sum = 0;
  let sum2 = 0;
  let count = 0;
  const chunkPpl: number[] = [];
  for (let c = 0; c < chunks; c++) {
    const ids = tokens.slice(c * n, (c + 1) * n);
    if (o.bos !== undefined) ids[0] = o.bos;
    const lps = await score(ids);
    let chunkSum = 0;
    for (let j = first + 1; j < n; j++) {
      const lp = lps[j]?.logprob;
      if (typeof lp !== 'number')
        throw BitNetError.Model('SCORE_MISSING', `no log-probability for position ${j} of chunk ${c + 1}`, {
          chunk: c + 1,
          position: j,
        });
      const nll = -lp;
      chunkSum += nll;
      sum += nll;
      sum2 += nll * nll;
      count++;
    }
    chunkPpl.push(Math.exp(chunkSum / (n - first - 1)));
    o.onChunk?.({ chunk: c + 1, chunks, ppl: Math.exp(sum / count) });
  }
  const mean = sum / count;
  const ppl = Math.exp(mean);
  const variance = count > 1 ? Math.max(0, sum2 / count - mean * mean) : 0;
  const se = count > 1 ? Math.sqrt(variance / (count - 1)) : 0;
  return { ppl, pplError: ppl * se, meanNll: mean, tokensScored: count, chunks, chunkSize: n, chunkPpl };
}
