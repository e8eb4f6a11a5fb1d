/**
 * Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.model = "gpt2"`), the tokenizer of
 * LLaMA-3 / BitNet b1.58 2B-4T.
 *
 * encode: split off special tokens -> pre-tokenize (pretokenize.ts) -> per piece: UTF-8 bytes mapped to
 * the GPT-2 byte-level alphabet (byte-unicode.ts) -> merges applied by rank (lowest rank first, leftmost
 * on ties, as llama.cpp and HF do) -> vocab ids. Results are cached per piece.
 * decode: token string -> bytes through the inverse byte map -> UTF-8.
 *
 * Metadata keys read: tokenizer.ggml.{model, tokens, merges, token_type, bos_token_id, eos_token_id,
 * padding_token_id, unknown_token_id, eot_token_id, add_bos_token, add_eos_token, pre}.
 */
import { BitNetError } from '../errors.ts';
import type { GGUFMetadata } from '../gguf/metadata.ts';
import { BaseTokenizer, TokenType, type VocabConfig } from './base.ts';
import { byteLevelToBytes, textToByteLevel } from './byte-unicode.ts';
import { type ChatTemplateChoice, createChatTemplateFromGGUF } from './chat-template.ts';
import { MergeTable } from './merge-table.ts';
import { getPreTokenizer, type PreTokenizer } from './pretokenize.ts';
import { createSentencePieceTokenizer } from './spm.ts';
import type { SpecialTokenIds, Tokenizer } from './types.ts';

export { TokenType };

const CACHE_LIMIT = 1 << 16; // per-piece cache entries before it is cleared
const CACHE_MAX_PIECE = 256; // longer pieces are not cached

// ---------------------------------------------------------------------------------------------------------
// Merge core
// ---------------------------------------------------------------------------------------------------------

/** Min-heap of (rank, left) pairs in two parallel arrays; order: rank, then left position. */
class PairHeap {
  ranks: number[] = [];
  lefts: number[] = [];

  get size(): number {
    return this.ranks.length;
  }

  private less(i: number, j: number): boolean {
    const a = this.ranks[i];
    const b = this.ranks[j];
    return a < b || (a === b && this.lefts[i] < this.lefts[j]);
  }

  private swap(i: number, j: number): void {
    const r = this.ranks[i];
    this.ranks[i] = this.ranks[j];
    this.ranks[j] = r;
    const l = this.lefts[i];
    this.lefts[i] = this.lefts[j];
    this.lefts[j] = l;
  }

  push(rank: number, left: number): void {
    this.ranks.push(rank);
    this.lefts.push(left);
    let i = this.ranks.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top; read ranks[0]/lefts[0] before calling. */
  pop(): void {
    const last = this.ranks.length - 1;
    this.swap(0, last);
    this.ranks.pop();
    this.lefts.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= last) break;
      const m = l + 1 < last && this.less(l + 1, l) ? l + 1 : l;
      if (!this.less(m, i)) break;
      this.swap(m, i);
      i = m;
    }
  }
}

/**
 * Applies BPE merges to one byte-level word and returns the resulting symbol strings.
 *
 * `ranks` maps the merge string "left right" to its rank (its index in `tokenizer.ggml.merges`). Symbols
 * are a doubly-linked list over the word's characters; the heap holds candidate pairs keyed by the left
 * symbol's index. Stale entries are detected on pop by re-looking-up the current pair's rank: ranks are
 * unique per pair and symbols only grow, so an equal rank means the entry is still current. O(n log n).
 */
export function bpeMerge(word: string, ranks: ReadonlyMap<string, number>): string[] {
  const n = word.length;
  if (n < 2) return n === 0 ? [] : [word];
  const sym = new Array<string>(n);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    sym[i] = word[i];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const heap = new PairHeap();
  for (let i = 0; i + 1 < n; i++) {
    const r = ranks.get(sym[i] + ' ' + sym[i + 1]);
    if (r !== undefined) heap.push(r, i);
  }
  while (heap.size > 0) {
    const rank = heap.ranks[0];
    const left = heap.lefts[0];
    heap.pop();
    if (sym[left] === '') continue; // absorbed into its left neighbour
    const right = next[left];
    if (right < 0 || ranks.get(sym[left] + ' ' + sym[right]) !== rank) continue; // stale
    sym[left] += sym[right];
    sym[right] = '';
    const after = next[right];
    next[left] = after;
    if (after >= 0) prev[after] = left;
    const before = prev[left];
    if (before >= 0) {
      const r = ranks.get(sym[before] + ' ' + sym[left]);
      if (r !== undefined) heap.push(r, before);
    }
    if (after >= 0) {
      const r = ranks.get(sym[left] + ' ' + sym[after]);
      if (r !== undefined) heap.push(r, left);
    }
  }
  const out: string[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
  return out;
}

/** Builds the merge-string -> rank map; a repeated merge keeps its first rank (as llama.cpp does). */
export function buildMergeRanks(merges: readonly string[]): Map<string, number> {
  const ranks = new Map<string, number>();
  for (let i = 0; i < merges.length; i++) {
    if (!ranks.has(merges[i])) ranks.set(merges[i], i);
  }
  return ranks;
}

// ---------------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------------

/** Everything the tokenizer needs, already validated. */
export interface ByteLevelBpeConfig extends VocabConfig {
  merges: readonly string[];
  /** Default: true when a BOS id exists (createTokenizerFromGGUF applies llama.cpp's defaults instead). */
  addBos?: boolean;
  /** Default: false. */
  addEos?: boolean;
  /** Pre-tokenizer name; default 'default'. */
  preTokenizer?: string;
}

/** Builds a byte-level BPE tokenizer from arrays (createTokenizerFromGGUF validates GGUF input first). */
export function createByteLevelBpeTokenizer(config: ByteLevelBpeConfig): Tokenizer {
  return new ByteLevelBpeTokenizer(config);
}

class ByteLevelBpeTokenizer extends BaseTokenizer {
  readonly model = 'gpt2';
  readonly preTokenizer: string;

  private readonly table: MergeTable;
  private readonly pre: PreTokenizer;
  private readonly pieceCache = new Map<string, readonly number[]>();
  /** Scratch symbol buffer, grown on demand. */
  private sym = new Int32Array(256);

  constructor(config: ByteLevelBpeConfig) {
    super(config, true);
    this.table = new MergeTable(this.tokens, this.textToId, config.merges);
    this.pre = getPreTokenizer(config.preTokenizer ?? 'default');
    this.preTokenizer = this.pre.name;
  }

  protected normalTokenBytes(text: string): Uint8Array {
    return byteLevelToBytes(text);
  }

  protected encodeText(text: string, out: number[]): void {
    for (const piece of this.pre.split(text)) {
      let ids = this.pieceCache.get(piece);
      if (ids === undefined) {
        ids = this.encodePiece(piece);
        if (piece.length <= CACHE_MAX_PIECE) {
          if (this.pieceCache.size >= CACHE_LIMIT) this.pieceCache.clear();
          this.pieceCache.set(piece, ids);
        }
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
  }

  /**
   * One pre-tokenizer piece -> ids, as llama.cpp's llm_tokenizer_bpe_session: with ignore_merges a piece
   * that is a vocab token is emitted whole; otherwise merges run on its bytes, and each resulting symbol is
   * its token. A symbol that is not a token (only possible with an inconsistent vocab) falls back to its
   * single ASCII characters that are tokens; other bytes are dropped, as llama.cpp does.
   */
  private encodePiece(piece: string): number[] {
    const t = this.table;
    if (this.sym.length < piece.length * 3) this.sym = new Int32Array(piece.length * 3);
    const sym = this.sym;
    let n = 0;
    for (let i = 0; i < piece.length; i++) {
      let c = piece.charCodeAt(i);
      if (c < 0x80) {
        sym[n++] = t.byteSymbol[c];
      } else if (c < 0x800) {
        sym[n++] = t.byteSymbol[0xc0 | (c >> 6)];
        sym[n++] = t.byteSymbol[0x80 | (c & 63)];
      } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < piece.length) {
        c = 0x10000 + ((c - 0xd800) << 10) + (piece.charCodeAt(++i) - 0xdc00);
        sym[n++] = t.byteSymbol[0xf0 | (c >> 18)];
        sym[n++] = t.byteSymbol[0x80 | ((c >> 12) & 63)];
        sym[n++] = t.byteSymbol[0x80 | ((c >> 6) & 63)];
        sym[n++] = t.byteSymbol[0x80 | (c & 63)];
      } else {
        sym[n++] = t.byteSymbol[0xe0 | (c >> 12)];
        sym[n++] = t.byteSymbol[0x80 | ((c >> 6) & 63)];
        sym[n++] = t.byteSymbol[0x80 | (c & 63)];
      }
    }
    n = t.merge(sym, n);
    // ignore_merges: a whole-piece token wins. (With one symbol left, that symbol already is the piece.)
    if (n > 1 && this.pre.ignoreMerges) {
      const id = this.textToId.get(textToByteLevel(piece));
      if (id !== undefined) return [id];
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = sym[i];
      if (s < t.vocabSize) {
        ids.push(s);
        continue;
      }
      const text = t.symbolText[s];
      for (let k = 0; k < text.length; k++) {
        if (text.charCodeAt(k) >= 0x80) continue;
        const bid = this.textToId.get(text[k]);
        if (bid !== undefined) ids.push(bid);
      }
    }
    return ids;
  }
}

// ---------------------------------------------------------------------------------------------------------
// GGUF entry point
// ---------------------------------------------------------------------------------------------------------

function invalid(key: string, message: string, details: Record<string, unknown> = {}): BitNetError {
  return BitNetError.Tokenization('TOKENIZER_INVALID', `${key}: ${message}`, { key, ...details });
}

function readString(meta: GGUFMetadata, key: string): string | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  if (typeof e.value !== 'string') throw invalid(key, 'expected a string', { got: typeof e.value });
  return e.value;
}

function readStringArray(meta: GGUFMetadata, key: string): string[] | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  const v = e.value;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw invalid(key, 'expected an array of strings');
  return v as string[];
}

function readBool(meta: GGUFMetadata, key: string): boolean | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  if (typeof e.value === 'boolean') return e.value;
  if (typeof e.value === 'number' && (e.value === 0 || e.value === 1)) return e.value === 1;
  throw invalid(key, 'expected a bool', { got: typeof e.value });
}

/** A token id: u32/i32 number or u64/i64 bigint, which must index the vocab. */
function readTokenId(meta: GGUFMetadata, key: string, vocabSize: number): number | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  const v = typeof e.value === 'bigint' ? Number(e.value) : e.value;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(key, 'expected an integer token id');
  // Out of the vocabulary (a converter's slip, e.g. a pad id equal to the vocab size): ignored, as
  // llama.cpp does ("bad special token … using default id"), instead of losing the whole tokenizer.
  if (v < 0 || v >= vocabSize) return undefined;
  return v;
}

function readTokenTypes(meta: GGUFMetadata, key: string, vocabSize: number): Int32Array | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  const v = e.value;
  if (typeof v !== 'object' || v === null || typeof (v as { length?: unknown }).length !== 'number') {
    throw invalid(key, 'expected an integer array');
  }
  const arr = v as ArrayLike<unknown>;
  if (arr.length !== vocabSize) {
    throw invalid(key, `has ${arr.length} entries, tokens has ${vocabSize}`, { length: arr.length, vocabSize });
  }
  const out = new Int32Array(vocabSize);
  for (let i = 0; i < vocabSize; i++) {
    const x = typeof arr[i] === 'bigint' ? Number(arr[i]) : arr[i];
    if (typeof x !== 'number' || !Number.isInteger(x)) throw invalid(key, `entry ${i} is not an integer`);
    out[i] = x;
  }
  return out;
}

function readScores(meta: GGUFMetadata, key: string, vocabSize: number): Float32Array | undefined {
  const e = meta.get(key);
  if (e === undefined) return undefined;
  const v = e.value;
  if (!(v instanceof Float32Array || v instanceof Int32Array)) throw invalid(key, 'expected an f32 or i32 array');
  if (v.length < vocabSize) {
    throw invalid(key, `has ${v.length} entries, tokens has ${vocabSize}`, { length: v.length, vocabSize });
  }
  return Float32Array.from(v.subarray(0, vocabSize));
}

/** Pre-tokenizer names for which llama.cpp uses the LLaMA-3 splitter (and adds BOS by default). */
const LLAMA3_PRE = new Set([
  'llama3',
  'llama-v3',
  'llama-bpe',
  'falcon3',
  'falcon-h1',
  'pixtral',
  'midm-2.0',
  'lfm2',
  'jina-v5-nano',
]);

export interface CreateTokenizerOptions {
  /**
   * Overrides `tokenizer.ggml.pre` for byte-level BPE vocabs: 'default' (llama.cpp's fallback splitter, what
   * bitnet.cpp uses for Microsoft's 2B-4T GGUF, which has no `pre` key) or 'llama-bpe' (the LLaMA-3 regex,
   * Hugging Face parity). Default: the file's `tokenizer.ggml.pre`, else 'default'.
   */
  preTokenizer?: string;
  /** Chat template selection (see chat-template.ts); default 'auto'. */
  chatTemplate?: ChatTemplateChoice;
  /** Overrides `tokenizer.ggml.add_bos_token`. */
  addBos?: boolean;
}

/**
 * Builds the tokenizer described by GGUF metadata: byte-level BPE (`tokenizer.ggml.model = gpt2`) or
 * SentencePiece (`llama`). Defaults follow llama.cpp: gpt2 adds BOS only when `add_bos_token` says so (or
 * the pre-tokenizer is LLaMA-3's); llama (SentencePiece) adds BOS by default, with bos 1 / eos 2 / unk 0
 * when the ids are absent, and a space prefix unless `tokenizer.ggml.add_space_prefix` is false.
 *
 * A special token id outside the vocabulary is ignored (the default applies), as in llama.cpp.
 *
 * Errors (all `BitNetError` kind Tokenization): TOKENIZER_MISSING (no model / tokens / merges),
 * TOKENIZER_UNSUPPORTED (another model, e.g. 'bert'), TOKENIZER_INVALID (wrong value types or
 * lengths), PRETOKENIZER_UNKNOWN (unknown `tokenizer.ggml.pre` or option),
 * CHAT_TEMPLATE_INVALID (a forced chat template that does not parse).
 */
export function createTokenizerFromGGUF(meta: GGUFMetadata, opts?: CreateTokenizerOptions): Tokenizer {
  const model = readString(meta, 'tokenizer.ggml.model');
  if (model === undefined) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.model', {
      key: 'tokenizer.ggml.model',
    });
  }
  if (model !== 'gpt2' && model !== 'llama') {
    throw BitNetError.Tokenization(
      'TOKENIZER_UNSUPPORTED',
      `tokenizer model '${model}' is not supported (byte-level BPE 'gpt2' and SentencePiece 'llama' are)`,
      { model },
    );
  }
  const tokens = readStringArray(meta, 'tokenizer.ggml.tokens');
  if (tokens === undefined || tokens.length === 0) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.tokens', {
      key: 'tokenizer.ggml.tokens',
    });
  }
  const n = tokens.length;
  const special: SpecialTokenIds = {
    bosTokenId: readTokenId(meta, 'tokenizer.ggml.bos_token_id', n),
    eosTokenId: readTokenId(meta, 'tokenizer.ggml.eos_token_id', n),
    padTokenId: readTokenId(meta, 'tokenizer.ggml.padding_token_id', n),
    unkTokenId: readTokenId(meta, 'tokenizer.ggml.unknown_token_id', n),
    eotTokenId: readTokenId(meta, 'tokenizer.ggml.eot_token_id', n),
    // End of message (LLaMA-3.1 `<|eom_id|>` after a tool call): an end-of-generation id in llama.cpp.
    eomTokenId: readTokenId(meta, 'tokenizer.ggml.eom_token_id', n),
  };
  const tokenTypes = readTokenTypes(meta, 'tokenizer.ggml.token_type', n);
  const chatTemplate = createChatTemplateFromGGUF(meta, { template: opts?.chatTemplate });
  const addBosKey = opts?.addBos ?? readBool(meta, 'tokenizer.ggml.add_bos_token');
  const addEos = readBool(meta, 'tokenizer.ggml.add_eos_token');

  if (model === 'llama') {
    // llama.cpp's SentencePiece defaults when the ids are absent.
    special.bosTokenId ??= n > 1 ? 1 : undefined;
    special.eosTokenId ??= n > 2 ? 2 : undefined;
    special.unkTokenId ??= 0;
    return createSentencePieceTokenizer({
      tokens,
      tokenTypes,
      scores: readScores(meta, 'tokenizer.ggml.scores', n),
      special,
      addBos: addBosKey ?? true,
      addEos: addEos ?? false,
      addSpacePrefix: readBool(meta, 'tokenizer.ggml.add_space_prefix') ?? true,
      chatTemplate,
    });
  }

  const merges = readStringArray(meta, 'tokenizer.ggml.merges');
  if (merges === undefined) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.merges', {
      key: 'tokenizer.ggml.merges',
    });
  }
  // bitnet.cpp: a missing tokenizer.ggml.pre means llama.cpp's 'default' splitter.
  const pre = opts?.preTokenizer ?? readString(meta, 'tokenizer.ggml.pre') ?? 'default';
  getPreTokenizer(pre); // fail fast (PRETOKENIZER_UNKNOWN) before building anything
  return createByteLevelBpeTokenizer({
    tokens,
    merges,
    tokenTypes,
    special,
    addBos: addBosKey ?? LLAMA3_PRE.has(pre),
    addEos: addEos ?? false,
    preTokenizer: pre,
    chatTemplate,
  });
}
