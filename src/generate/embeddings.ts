/**
 * Text embeddings from a causal model's final hidden states (after output_norm), as llama.cpp's
 * server makes them for a model without a pooling head: one vector of nEmbd per input, pooled over
 * the input's positions and, by default, scaled to unit length (OpenAI's embeddings are unit
 * vectors, so a dot product is their cosine similarity).
 *
 * Pooling: 'mean' averages every position (each dimension summed in f64 in position order, then
 * divided and rounded to f32); 'last' takes the last position, the only one that has seen the
 * whole input under causal attention. Normalization divides by the f64 L2 norm; a zero vector
 * stays zero.
 */
import { BitNetError } from '../errors.ts';

export const POOLINGS = ['mean', 'last'] as const;
export type Pooling = (typeof POOLINGS)[number];

export interface EmbedOptions {
  /** How the positions' hidden states become one vector (default 'mean'). */
  pooling?: Pooling;
  /** Scale the vector to unit L2 length (default true). */
  normalize?: boolean;
  signal?: AbortSignal;
}

/** Throws INVALID_EMBED_OPTIONS for a pooling that is not one of POOLINGS (before any work). */
export function checkPooling(pooling: unknown): asserts pooling is Pooling | undefined {
  if (pooling !== undefined && !POOLINGS.includes(pooling as Pooling)) {
    throw BitNetError.Config('INVALID_EMBED_OPTIONS', `pooling must be one of ${POOLINGS.join(', ')}`, {
      field: 'pooling',
      value: String(pooling),
    });
  }
}

/** One embedding from the hidden states of an input's positions (rows of nEmbd). */
export function poolHidden(rows: readonly Float32Array[], pooling: Pooling = 'mean', normalize = true): Float32Array {
  checkPooling(pooling);
  if (rows.length === 0) throw BitNetError.Config('EMPTY_PROMPT', 'the input has no tokens');
  const n = rows[0].length;
  let v: Float32Array;
  if (pooling === 'last') v = Float32Array.from(rows[rows.length - 1]);
  else {
    const sum = new Float64Array(n);
    for (const r of rows) for (let i = 0; i < n; i++) sum[i] += r[i];
    v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = sum[i] / rows.length;
  }
  if (normalize) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += v[i] * v[i];
    const norm = Math.sqrt(ss);
    if (norm > 0) for (let i = 0; i < n; i++) v[i] = v[i] / norm;
  }
  return v;
}
