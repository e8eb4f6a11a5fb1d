/**
 * OpenAI's `POST /v1/embeddings` on the served model: the request schema and the response body.
 * An embedding is the input's final hidden states pooled and scaled to unit length
 * (src/generate/embeddings.ts): a causal language model's, not a trained embedding model's, as
 * llama.cpp's server gives for such a model.
 *
 * Request: `input` is a string, a list of strings, a list of token ids, or a list of those (OpenAI's
 * four forms); `encoding_format` float (default) or base64 (little-endian f32, as OpenAI's);
 * `dimensions` must be the model's hidden size when given (a truncated vector of a model not trained
 * for it would mean nothing, so other sizes are refused); `user` is accepted and ignored.
 * Extensions: `pooling` ('mean' default, 'last') and `normalize` (default true).
 */
import { z } from 'zod';
import { POOLINGS } from '../generate/embeddings.ts';
import type { PromptInput } from './local.ts';

/** Inputs per request (OpenAI allows 2048; on the edge each is a forward pass over its tokens). */
export const MAX_EMBED_INPUTS = 256;

const ids = z.array(z.number().int().min(0)).min(1, { error: 'a token-id input must not be empty' });
const text = z.string().min(1, { error: 'an input string must not be empty' });

export const embeddingsSchema = z.object({
  model: z.string().optional(),
  input: z.union([text, z.array(text).min(1).max(MAX_EMBED_INPUTS), ids, z.array(ids).min(1).max(MAX_EMBED_INPUTS)], {
    error: `input must be a non-empty string, a list of up to ${MAX_EMBED_INPUTS} of them, a list of token ids, or a list of up to ${MAX_EMBED_INPUTS} such lists`,
  }),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().min(1).optional(),
  user: z.string().nullish(),
  pooling: z.enum(POOLINGS).optional(),
  normalize: z.boolean().optional(),
});

export type EmbeddingsRequest = z.output<typeof embeddingsSchema>;

/** The request's inputs as prompts, in order. */
export function embeddingInputs(input: EmbeddingsRequest['input']): PromptInput[] {
  if (typeof input === 'string') return [{ kind: 'text', text: input }];
  if (input.every((x) => typeof x === 'number')) return [{ kind: 'ids', ids: input as number[] }];
  return (input as (string | number[])[]).map((x) =>
    typeof x === 'string' ? { kind: 'text', text: x } : { kind: 'ids', ids: x },
  );
}

/** Little-endian f32 bytes, base64 (OpenAI's `encoding_format: "base64"`). */
function base64F32(v: Float32Array): string {
  const bytes = new Uint8Array(v.length * 4);
  const dv = new DataView(bytes.buffer); // the byte order written explicitly, whatever the host's
  for (let i = 0; i < v.length; i++) dv.setFloat32(4 * i, v[i], true);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** OpenAI's response: a list of embedding objects in input order, the model, the prompt tokens. */
export function embeddingsBody(
  model: string,
  vectors: readonly Float32Array[],
  promptTokens: number,
  format: 'float' | 'base64' = 'float',
): Record<string, unknown> {
  return {
    object: 'list',
    data: vectors.map((v, index) => ({
      object: 'embedding',
      index,
      embedding: format === 'base64' ? base64F32(v) : Array.from(v),
    })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}
