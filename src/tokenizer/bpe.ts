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
import { byteLevelToBytes, textToByteLevel } from './byte-unicode.ts';
import { getPreTokenizer, type PreTokenizer } from './pretokenize.ts';
import type { DecodeOptions, EncodeOptions, SpecialTokenIds, StreamingDecoder, Tokenizer } from './types.ts';

/** `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`). */
export const TokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Candidate EOT texts, in the order llama.cpp checks them when `eot_token_id` is absent. */
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>'];
/** Token texts that always end generation when present in the vocab. */
const EOG_TEXTS = ['<|eot_id|>', '<|end_of_text|>', '<|im_end|>', '<|endoftext|>'];

const EMPTY = new Uint8Array(0);
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
export interface ByteLevelBpeConfig {
  tokens: readonly string[];
  merges: readonly string[];
  /** Per-token type (TokenType); all NORMAL when omitted. */
  tokenTypes?: ArrayLike<number>;
  special?: SpecialTokenIds;
  /** Default: true when a BOS id exists. */
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

class ByteLevelBpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly specialTokens: Readonly<SpecialTokenIds>;
  readonly eogTokenIds: ReadonlySet<number>;
  readonly preTokenizer: string;

  private readonly tokens: readonly string[];
  private readonly types: Int32Array;
  private readonly textToId = new Map<string, number>();
  private readonly ranks: Map<string, number>;
  private readonly pre: PreTokenizer;
  private readonly addBos: boolean;
  private readonly addEos: boolean;
  /** Matched only with parseSpecial (control, unknown) / always (user-defined); longest text first. */
  private readonly parsedSpecials: readonly number[];
  private readonly alwaysSpecials: readonly number[];
  private readonly pieceCache = new Map<string, readonly number[]>();
  private readonly bytesCache: (Uint8Array | undefined)[];

  constructor(config: ByteLevelBpeConfig) {
    this.tokens = config.tokens;
    this.vocabSize = config.tokens.length;
    this.types = new Int32Array(this.vocabSize).fill(TokenType.NORMAL);
    if (config.tokenTypes) {
      for (let i = 0; i < this.vocabSize; i++) this.types[i] = config.tokenTypes[i];
    }
    // Later duplicates win, like llama.cpp's token_to_id.
    for (let i = 0; i < this.vocabSize; i++) this.textToId.set(this.tokens[i], i);
    this.ranks = buildMergeRanks(config.merges);
    this.pre = getPreTokenizer(config.preTokenizer ?? 'default');
    this.preTokenizer = this.pre.name;
    this.bytesCache = new Array(this.vocabSize);

    // Keep only the ids that are set, and check them (createTokenizerFromGGUF has checked GGUF ones).
    const special: SpecialTokenIds = {};
    for (const [k, v] of Object.entries(config.special ?? {}) as [keyof SpecialTokenIds, number | undefined][]) {
      if (v === undefined) continue;
      special[k] = this.checkId(v);
    }
    if (special.eotTokenId === undefined) {
      for (const t of EOT_TEXTS) {
        const id = this.textToId.get(t);
        if (id !== undefined) {
          special.eotTokenId = id;
          break;
        }
      }
    }
    this.specialTokens = Object.freeze(special);
    this.addBos = (config.addBos ?? true) && special.bosTokenId !== undefined;
    this.addEos = (config.addEos ?? false) && special.eosTokenId !== undefined;

    const eog = new Set<number>();
    if (special.eosTokenId !== undefined) eog.add(special.eosTokenId);
    if (special.eotTokenId !== undefined) eog.add(special.eotTokenId);
    for (const t of EOG_TEXTS) {
      const id = this.textToId.get(t);
      if (id !== undefined) eog.add(id);
    }
    this.eogTokenIds = eog;

    const parsed: number[] = [];
    const always: number[] = [];
    for (let i = 0; i < this.vocabSize; i++) {
      const t = this.types[i];
      if (this.tokens[i].length === 0) continue;
      if (t === TokenType.CONTROL || t === TokenType.UNKNOWN) parsed.push(i);
      else if (t === TokenType.USER_DEFINED) always.push(i);
    }
    const byLength = (a: number, b: number): number => this.tokens[b].length - this.tokens[a].length || a - b;
    this.alwaysSpecials = always.sort(byLength);
    this.parsedSpecials = [...always, ...parsed].sort(byLength);
  }

  encode(text: string, opts?: EncodeOptions): number[] {
    if (typeof text !== 'string') {
      throw BitNetError.Tokenization('TOKENIZER_BAD_INPUT', 'encode expects a string', { got: typeof text });
    }
    const out: number[] = [];
    const addSpecial = opts?.addSpecialTokens ?? false;
    if (addSpecial && this.addBos) out.push(this.specialTokens.bosTokenId as number);
    for (const frag of this.partition(text, opts?.parseSpecial ?? false)) {
      if (typeof frag === 'number') out.push(frag);
      else this.encodeText(frag, out);
    }
    if (addSpecial && this.addEos) out.push(this.specialTokens.eosTokenId as number);
    return out;
  }

  encodeBatch(texts: readonly string[], opts?: EncodeOptions): number[][] {
    return texts.map((t) => this.encode(t, opts));
  }

  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytesOf(ids[i], opts?.skipSpecialTokens ?? false);
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    // ignoreBOM: keep a leading U+FEFF (TextDecoder strips it by default).
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(all);
  }

  decodeBatch(batch: readonly ArrayLike<number>[], opts?: DecodeOptions): string[] {
    return batch.map((ids) => this.decode(ids, opts));
  }

  isSpecial(id: number): boolean {
    const t = this.types[this.checkId(id)];
    return t === TokenType.CONTROL || t === TokenType.UNKNOWN || t === TokenType.USER_DEFINED;
  }

  tokenText(id: number): string {
    return this.tokens[this.checkId(id)];
  }

  tokenBytes(id: number, opts?: DecodeOptions): Uint8Array {
    return this.bytesOf(id, opts?.skipSpecialTokens ?? false).slice();
  }

  createStreamingDecoder(opts?: DecodeOptions): StreamingDecoder {
    const skip = opts?.skipSpecialTokens ?? false;
    // A streaming TextDecoder holds the bytes of an unfinished character until the next push; only
    // bytes that can never become valid are replaced with U+FFFD.
    let dec = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    return {
      push: (id: number): string => dec.decode(this.bytesOf(id, skip), { stream: true }),
      flush: (): string => {
        const rest = dec.decode();
        dec = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
        return rest;
      },
    };
  }

  // -- internals ------------------------------------------------------------------------------------------

  private checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw BitNetError.Tokenization('TOKEN_ID_OUT_OF_RANGE', `token id ${id} is not in [0, ${this.vocabSize})`, {
        id,
        vocabSize: this.vocabSize,
      });
    }
    return id;
  }

  /** Cached decoded bytes of a token (shared; never hand out without copying). */
  private bytesOf(id: number, skipSpecial: boolean): Uint8Array {
    const t = this.types[this.checkId(id)];
    if (skipSpecial && (t === TokenType.CONTROL || t === TokenType.UNKNOWN)) return EMPTY;
    let b = this.bytesCache[id];
    if (b === undefined) {
      b = this.computeBytes(id, t);
      this.bytesCache[id] = b;
    }
    return b;
  }

  private computeBytes(id: number, type: number): Uint8Array {
    const text = this.tokens[id];
    switch (type) {
      case TokenType.CONTROL:
      case TokenType.UNKNOWN:
      case TokenType.USER_DEFINED:
        return new TextEncoder().encode(text); // stored raw, not byte-level
      case TokenType.UNUSED:
        return EMPTY; // llama.cpp emits nothing for unused tokens
      case TokenType.BYTE: {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
        return m ? Uint8Array.of(Number.parseInt(m[1], 16)) : byteLevelToBytes(text);
      }
      default:
        return byteLevelToBytes(text);
    }
  }

  /**
   * Splits text into raw-text fragments and special-token ids. Like llama.cpp's tokenizer_st_partition,
   * specials are taken one at a time, longest text first, and each splits every remaining text fragment
   * at all of its (non-overlapping, left-to-right) occurrences.
   */
  private partition(text: string, parseSpecial: boolean): (string | number)[] {
    let frags: (string | number)[] = text.length > 0 ? [text] : [];
    const specials = parseSpecial ? this.parsedSpecials : this.alwaysSpecials;
    for (const id of specials) {
      const st = this.tokens[id];
      if (!text.includes(st)) continue;
      const next: (string | number)[] = [];
      for (const f of frags) {
        if (typeof f === 'number' || !f.includes(st)) {
          next.push(f);
          continue;
        }
        const parts = f.split(st);
        for (let i = 0; i < parts.length; i++) {
          if (i > 0) next.push(id);
          if (parts[i].length > 0) next.push(parts[i]);
        }
      }
      frags = next;
    }
    return frags;
  }

  private encodeText(text: string, out: number[]): void {
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

  /** Vocab id for a merge result; control/unknown tokens are never produced by merges. */
  private lookupNormal(s: string): number | undefined {
    const id = this.textToId.get(s);
    if (id === undefined) return undefined;
    const t = this.types[id];
    return t === TokenType.CONTROL || t === TokenType.UNKNOWN ? undefined : id;
  }

  private encodePiece(piece: string): number[] {
    const word = textToByteLevel(piece);
    if (this.pre.ignoreMerges) {
      const id = this.lookupNormal(word);
      if (id !== undefined) return [id];
    }
    const ids: number[] = [];
    for (const s of bpeMerge(word, this.ranks)) {
      const id = this.lookupNormal(s);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // A merge produced a string that is not in the vocab (broken vocab): fall back to single bytes.
      // Bytes missing from the vocab become unk if there is one, else are dropped (llama.cpp drops them).
      for (const ch of s) {
        const bid = this.lookupNormal(ch) ?? this.specialTokens.unkTokenId;
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
  if (v < 0 || v >= vocabSize) throw invalid(key, `token id ${v} is not in [0, ${vocabSize})`, { id: v, vocabSize });
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

export interface CreateTokenizerOptions {
  /** Overrides `tokenizer.ggml.pre` (e.g. 'llama-bpe' for HF parity, 'default' for bitnet.cpp parity). */
  preTokenizer?: string;
}

/**
 * Builds the tokenizer described by GGUF metadata. Errors (all `BitNetError` kind Tokenization):
 * TOKENIZER_MISSING (no model / tokens / merges), TOKENIZER_UNSUPPORTED (model other than gpt2, e.g.
 * SentencePiece 'llama'), TOKENIZER_INVALID (wrong value types, lengths or out-of-range special ids),
 * PRETOKENIZER_UNKNOWN (unknown `tokenizer.ggml.pre` or option).
 */
export function createTokenizerFromGGUF(meta: GGUFMetadata, opts?: CreateTokenizerOptions): Tokenizer {
  const model = readString(meta, 'tokenizer.ggml.model');
  if (model === undefined) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.model', {
      key: 'tokenizer.ggml.model',
    });
  }
  if (model !== 'gpt2') {
    throw BitNetError.Tokenization(
      'TOKENIZER_UNSUPPORTED',
      `tokenizer model '${model}' is not supported (only byte-level BPE 'gpt2' for now)`,
      { model },
    );
  }
  const tokens = readStringArray(meta, 'tokenizer.ggml.tokens');
  if (tokens === undefined || tokens.length === 0) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.tokens', {
      key: 'tokenizer.ggml.tokens',
    });
  }
  const merges = readStringArray(meta, 'tokenizer.ggml.merges');
  if (merges === undefined) {
    throw BitNetError.Tokenization('TOKENIZER_MISSING', 'GGUF has no tokenizer.ggml.merges', {
      key: 'tokenizer.ggml.merges',
    });
  }
  const n = tokens.length;
  return createByteLevelBpeTokenizer({
    tokens,
    merges,
    tokenTypes: readTokenTypes(meta, 'tokenizer.ggml.token_type', n),
    special: {
      bosTokenId: readTokenId(meta, 'tokenizer.ggml.bos_token_id', n),
      eosTokenId: readTokenId(meta, 'tokenizer.ggml.eos_token_id', n),
      padTokenId: readTokenId(meta, 'tokenizer.ggml.padding_token_id', n),
      unkTokenId: readTokenId(meta, 'tokenizer.ggml.unknown_token_id', n),
      eotTokenId: readTokenId(meta, 'tokenizer.ggml.eot_token_id', n),
    },
    addBos: readBool(meta, 'tokenizer.ggml.add_bos_token'),
    addEos: readBool(meta, 'tokenizer.ggml.add_eos_token'),
    // bitnet.cpp: a missing tokenizer.ggml.pre means llama.cpp's 'default' splitter.
    preTokenizer: opts?.preTokenizer ?? readString(meta, 'tokenizer.ggml.pre') ?? 'default',
  });
}
