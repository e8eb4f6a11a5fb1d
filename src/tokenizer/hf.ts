/**
 * Byte-level BPE from a Hugging Face `tokenizer.json` (+ optional `tokenizer_config.json`), e.g. the files of
 * microsoft/bitnet-b1.58-2B-4T or any LLaMA-3 checkpoint.
 *
 * Read: `model` (type BPE: `vocab`, `merges` as "a b" strings or [a, b] pairs), `added_tokens` (special ->
 * control, otherwise user-defined), `pre_tokenizer` (the LLaMA-3 Split regex -> 'llama-bpe'; a ByteLevel
 * pre-tokenizer with its GPT-2 regex -> 'gpt-2'), the BOS of a TemplateProcessing post-processor, and from
 * tokenizer_config.json `bos_token`, `eos_token`, `pad_token`, `unk_token`, `add_bos_token`, `add_eos_token`,
 * `chat_template`.
 *
 * Errors (BitNetError kind Tokenization): TOKENIZER_INVALID (not JSON / not a BPE tokenizer.json / bad
 * fields), TOKENIZER_UNSUPPORTED (a non-byte-level model), PRETOKENIZER_UNKNOWN (a pre-tokenizer we do not
 * implement; pass `preTokenizer` to choose one).
 */
import { BitNetError } from '../errors.ts';
import { TokenType } from './base.ts';
import { createByteLevelBpeTokenizer } from './bpe.ts';
import { type ChatTemplateChoice, resolveChatTemplate } from './chat-template.ts';
import type { SpecialTokenIds, Tokenizer } from './types.ts';

export interface CreateHFTokenizerOptions {
  /** Overrides the pre-tokenizer detected from `pre_tokenizer` ('llama-bpe', 'default', 'gpt-2'). */
  preTokenizer?: string;
  chatTemplate?: ChatTemplateChoice;
  addBos?: boolean;
}

type Json = Record<string, unknown>;

function invalid(message: string, details: Record<string, unknown> = {}): BitNetError {
  return BitNetError.Tokenization('TOKENIZER_INVALID', `tokenizer.json: ${message}`, details);
}

function parse(input: string | object | undefined, what: string): Json | undefined {
  if (input === undefined) return undefined;
  if (typeof input === 'object' && input !== null) return input as Json;
  try {
    const v = JSON.parse(input) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Json;
  } catch (e) {
    throw invalid(`${what} is not a JSON object: ${(e as Error).message}`);
  }
}

/** The LLaMA-3 split regex as it appears in tokenizer.json (whitespace-insensitive comparison). */
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/**
 * The pre-tokenizer name for a tokenizer.json `pre_tokenizer` ('llama-bpe' for the LLaMA-3 Split +
 * ByteLevel sequence, 'gpt-2' for a lone GPT-2 ByteLevel), or undefined when it is none of ours. Converters
 * writing GGUF metadata from tokenizer.json can store it as `tokenizer.ggml.pre`.
 */
export function hfPreTokenizerName(pre: unknown): string | undefined {
  try {
    return detectPreTokenizer(pre);
  } catch {
    return undefined;
  }
}

function detectPreTokenizer(pre: unknown): string {
  const list: Json[] = [];
  const walk = (p: unknown) => {
    if (typeof p !== 'object' || p === null) return;
    const o = p as Json;
    if (o.type === 'Sequence' && Array.isArray(o.pretokenizers)) o.pretokenizers.forEach(walk);
    else list.push(o);
  };
  walk(pre);
  const splits = list.filter((p) => p.type === 'Split');
  const byteLevel = list.find((p) => p.type === 'ByteLevel');
  if (splits.length === 1 && list.length === 2 && byteLevel && byteLevel.use_regex === false) {
    const pattern = (splits[0].pattern as Json | undefined)?.Regex;
    if (pattern === LLAMA3_PATTERN) return 'llama-bpe';
  }
  if (list.length === 1 && byteLevel && byteLevel.use_regex !== false && byteLevel.add_prefix_space !== true) {
    return 'gpt-2';
  }
  throw BitNetError.Tokenization(
    'PRETOKENIZER_UNKNOWN',
    'tokenizer.json pre_tokenizer is not one this runtime implements (LLaMA-3 Split + ByteLevel, or GPT-2 ByteLevel); pass preTokenizer to choose one',
    { preTokenizer: pre },
  );
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json).content === 'string')
    return (v as Json).content as string;
  return undefined;
}

/** Builds a byte-level BPE tokenizer from tokenizer.json (and tokenizer_config.json). */
export function createTokenizerFromHF(
  tokenizerJson: string | object,
  tokenizerConfig?: string | object,
  opts: CreateHFTokenizerOptions = {},
): Tokenizer {
  const tj = parse(tokenizerJson, 'tokenizer.json') as Json;
  const cfg = parse(tokenizerConfig, 'tokenizer_config.json') ?? {};
  const model = tj.model as Json | undefined;
  if (typeof model !== 'object' || model === null || typeof model.vocab !== 'object' || model.vocab === null) {
    throw invalid('no model.vocab');
  }
  if (model.type !== undefined && model.type !== 'BPE') {
    throw BitNetError.Tokenization(
      'TOKENIZER_UNSUPPORTED',
      `tokenizer.json model type '${String(model.type)}' is not supported`,
      {
        type: model.type,
      },
    );
  }
  if (model.byte_fallback === true) {
    throw BitNetError.Tokenization(
      'TOKENIZER_UNSUPPORTED',
      'tokenizer.json is a SentencePiece-style BPE (byte_fallback); use the GGUF (tokenizer.ggml.model = llama)',
    );
  }

  // Tokens: model.vocab, then added_tokens (which may extend it).
  const entries: [string, number][] = Object.entries(model.vocab as Record<string, unknown>).map(([t, id]) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      throw invalid(`bad id for token ${JSON.stringify(t)}`);
    return [t, id];
  });
  const added = Array.isArray(tj.added_tokens) ? (tj.added_tokens as Json[]) : [];
  let size = 0;
  for (const [, id] of entries) size = Math.max(size, id + 1);
  for (const a of added) if (typeof a.id === 'number') size = Math.max(size, a.id + 1);
  const tokens = new Array<string>(size);
  const tokenTypes = new Int32Array(size).fill(TokenType.NORMAL);
  for (const [t, id] of entries) tokens[id] = t;
  for (const a of added) {
    if (typeof a.id !== 'number' || typeof a.content !== 'string') throw invalid('bad added_tokens entry');
    tokens[a.id] = a.content;
    tokenTypes[a.id] = a.special === true ? TokenType.CONTROL : TokenType.USER_DEFINED;
  }
  for (let i = 0; i < size; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      tokenTypes[i] = TokenType.UNUSED;
    }
  }

  const rawMerges = Array.isArray(model.merges) ? (model.merges as unknown[]) : [];
  const merges = rawMerges.map((m) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')
      return `${m[0]} ${m[1]}`;
    throw invalid('bad merges entry');
  });

  const textToId = new Map<string, number>();
  for (let i = 0; i < tokens.length; i++) textToId.set(tokens[i], i);
  const idOf = (v: unknown) => {
    const t = tokenContent(v);
    return t === undefined ? undefined : textToId.get(t);
  };
  // BOS from the post-processor template when the config does not name one.
  let templateBos: number | undefined;
  const post = tj.post_processor as Json | undefined;
  const processors =
    post?.type === 'Sequence' && Array.isArray(post.processors) ? (post.processors as Json[]) : post ? [post] : [];
  for (const p of processors) {
    if (p.type !== 'TemplateProcessing' || !Array.isArray(p.single)) continue;
    const first = (p.single as Json[])[0]?.SpecialToken as Json | undefined;
    if (first && typeof first.id === 'string') templateBos = textToId.get(first.id);
  }
  const special: SpecialTokenIds = {
    bosTokenId: idOf(cfg.bos_token) ?? templateBos,
    eosTokenId: idOf(cfg.eos_token),
    padTokenId: idOf(cfg.pad_token),
    unkTokenId: idOf(cfg.unk_token) ?? idOf(model.unk_token),
  };
  const addBos =
    opts.addBos ?? (typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : templateBos !== undefined);
  const chatTemplate = resolveChatTemplate({
    embedded: typeof cfg.chat_template === 'string' ? cfg.chat_template : undefined,
    bosToken: special.bosTokenId !== undefined ? tokens[special.bosTokenId] : undefined,
    eosToken: special.eosTokenId !== undefined ? tokens[special.eosTokenId] : undefined,
    hasToken: (t) => textToId.has(t),
    choice: opts.chatTemplate,
  });
  return createByteLevelBpeTokenizer({
    tokens,
    merges,
    tokenTypes,
    special,
    addBos,
    addEos: cfg.add_eos_token === true,
    preTokenizer: opts.preTokenizer ?? detectPreTokenizer(tj.pre_tokenizer),
    chatTemplate,
  });
}
