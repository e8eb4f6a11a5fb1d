/**
 * Real vocabularies for tokenizer tests, built from the data the npm packages expose (no downloads):
 *
 * - LLaMA-3 (byte-level BPE, 128256 tokens, 280147 merges) from llama3-tokenizer-js: `vocabById` and the
 *   `merges` map (merge string -> priority; sorting by priority gives the tokenizer.json order).
 * - BitNet b1.58 2B-4T: the same vocab with the LLaMA-3.0 special-token names of docs/bitnet-formats.md §4.5
 *   and the published GGUF's tokenizer keys (no `pre`, add_bos true, eos = pad = 128001, the broken
 *   placeholder chat template).
 * - LLaMA-2 SentencePiece (32000 tokens) from llama-tokenizer-js: tokens, types (unk, control, 256 byte
 *   tokens), and scores that reproduce its merge order: a token's score is minus the rank of the first merge
 *   that produces it (SentencePiece merges the highest-scoring adjacent pair first, and HF's BPE merges
 *   were generated from those scores in that order).
 */
import { writeFile } from 'node:fs/promises';
import llama2 from 'llama-tokenizer-js';
import llama3 from 'llama3-tokenizer-js';
import type { GGUFEntry, GGUFMetadata } from '../../src/gguf/metadata.ts';
import { encodeGGUF, meta } from '../../src/gguf/writer.ts';

export const TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 } as const;

export interface BpeVocab {
  tokens: string[];
  merges: string[];
  tokenTypes: Int32Array;
}

let l3: BpeVocab | undefined;

/** The LLaMA-3.1 vocab as llama3-tokenizer-js has it (specials 128000..128255 typed control). */
export function llama3Vocab(): BpeVocab {
  if (l3) return l3;
  const tokens = llama3.vocabById.slice();
  const merges = [...llama3.merges.entries()].sort((a, b) => a[1] - b[1]).map((e) => e[0]);
  const tokenTypes = new Int32Array(tokens.length).fill(TYPE.NORMAL);
  tokenTypes.fill(TYPE.CONTROL, 128000);
  l3 = { tokens, merges, tokenTypes };
  return l3;
}

/** LLaMA-3.0 special-token names (docs/bitnet-formats.md §4.5). */
export function llama30SpecialName(id: number): string {
  const fixed: Record<number, string> = {
    128000: '<|begin_of_text|>',
    128001: '<|end_of_text|>',
    128006: '<|start_header_id|>',
    128007: '<|end_header_id|>',
    128009: '<|eot_id|>',
  };
  if (fixed[id]) return fixed[id];
  const n = id <= 128005 ? id - 128002 : id === 128008 ? 4 : id - 128005;
  return `<|reserved_special_token_${n}|>`;
}

/** The template embedded in Microsoft's 2B-4T GGUF (convert-ms-to-gguf-bitnet.py placeholder). */
export const BROKEN_2B4T_TEMPLATE =
  "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['role'] == 'user' %}" +
  "{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}" +
  "{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

const str = (value: string): GGUFEntry => meta.str(value);
const strs = (value: string[]): GGUFEntry => meta.strs(value);

export interface BpeMetaOptions {
  /** `tokenizer.ggml.pre`; absent when undefined (like the published 2B-4T file). */
  pre?: string;
  /** Use the LLaMA-3.0 special names of the 2B-4T (default true). */
  bitnetNames?: boolean;
  chatTemplate?: string;
}

/** Tokenizer metadata shaped like the published 2B-4T GGUF (§3.2), over the LLaMA-3 vocab. */
export function bitnet2b4tMetadata(opts: BpeMetaOptions = {}): GGUFMetadata {
  const v = llama3Vocab();
  const tokens =
    opts.bitnetNames === false ? v.tokens : v.tokens.map((t, i) => (i < 128000 ? t : llama30SpecialName(i)));
  const m: GGUFMetadata = new Map();
  m.set('tokenizer.ggml.add_bos_token', meta.bool(true));
  m.set('tokenizer.ggml.model', str('gpt2'));
  if (opts.pre !== undefined) m.set('tokenizer.ggml.pre', str(opts.pre));
  m.set('tokenizer.ggml.tokens', strs(tokens));
  m.set('tokenizer.ggml.scores', meta.f32s(new Float32Array(tokens.length)));
  m.set('tokenizer.ggml.token_type', meta.i32s(v.tokenTypes));
  m.set('tokenizer.ggml.merges', strs(v.merges));
  m.set('tokenizer.ggml.bos_token_id', meta.u32(128000));
  m.set('tokenizer.ggml.eos_token_id', meta.u32(128001));
  m.set('tokenizer.ggml.padding_token_id', meta.u32(128001));
  m.set('tokenizer.chat_template', str(opts.chatTemplate ?? BROKEN_2B4T_TEMPLATE));
  return m;
}

let l2: { tokens: string[]; scores: Float32Array; tokenTypes: Int32Array } | undefined;

/** The LLaMA-2 SentencePiece vocab from llama-tokenizer-js (see the file comment for the scores). */
export function llama2Vocab(): { tokens: string[]; scores: Float32Array; tokenTypes: Int32Array } {
  if (l2) return l2;
  const tokens = llama2.vocabById.slice();
  const index = new Map(tokens.map((t, i) => [t, i]));
  const scores = new Float32Array(tokens.length);
  const merges = [...llama2.merges.entries()].sort((a, b) => a[1] - b[1]);
  const seen = new Set<number>();
  merges.forEach(([m], rank) => {
    const sp = m.indexOf(' ');
    const id = index.get(m.slice(0, sp) + m.slice(sp + 1));
    if (id === undefined || seen.has(id)) return;
    seen.add(id);
    scores[id] = -(rank + 1);
  });
  const tokenTypes = new Int32Array(tokens.length).fill(TYPE.NORMAL);
  tokenTypes[0] = TYPE.UNKNOWN;
  tokenTypes[1] = TYPE.CONTROL;
  tokenTypes[2] = TYPE.CONTROL;
  tokenTypes.fill(TYPE.BYTE, 3, 259);
  l2 = { tokens, scores, tokenTypes };
  return l2;
}

/** Tokenizer metadata of a LLaMA-2 / 1bitLLM GGUF (`tokenizer.ggml.model = llama`). */
export function llama2Metadata(): GGUFMetadata {
  const v = llama2Vocab();
  const m: GGUFMetadata = new Map();
  m.set('tokenizer.ggml.model', str('llama'));
  m.set('tokenizer.ggml.pre', str('default'));
  m.set('tokenizer.ggml.tokens', strs(v.tokens));
  m.set('tokenizer.ggml.scores', meta.f32s(v.scores));
  m.set('tokenizer.ggml.token_type', meta.i32s(v.tokenTypes));
  m.set('tokenizer.ggml.bos_token_id', meta.u32(1));
  m.set('tokenizer.ggml.eos_token_id', meta.u32(2));
  m.set('tokenizer.ggml.unknown_token_id', meta.u32(0));
  m.set('tokenizer.ggml.add_bos_token', meta.bool(true));
  m.set('tokenizer.ggml.add_eos_token', meta.bool(false));
  return m;
}

/**
 * A vocab-only GGUF (no tensors) that llama.cpp can load with vocabOnly: the tokenizer keys plus the
 * hyper-parameters its loader reads for arch `llama`.
 */
export async function vocabOnlyGGUF(tok: GGUFMetadata): Promise<Uint8Array> {
  const entries: [string, GGUFEntry][] = [
    ['general.architecture', str('llama')],
    ['general.name', str('vocab-only')],
    ['llama.context_length', meta.u32(4096)],
    ['llama.embedding_length', meta.u32(64)],
    ['llama.block_count', meta.u32(1)],
    ['llama.feed_forward_length', meta.u32(128)],
    ['llama.attention.head_count', meta.u32(4)],
    ['llama.attention.head_count_kv', meta.u32(4)],
    ['llama.rope.dimension_count', meta.u32(16)],
    ['llama.attention.layer_norm_rms_epsilon', meta.f32(1e-5)],
    ...tok,
  ];
  return encodeGGUF(entries, []);
}

export async function writeVocabOnlyGGUF(tok: GGUFMetadata, path: string): Promise<string> {
  await writeFile(path, await vocabOnlyGGUF(tok));
  return path;
}
