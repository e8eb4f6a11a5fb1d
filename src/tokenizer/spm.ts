/**
 * SentencePiece (BPE-type) tokenizer from GGUF metadata (`tokenizer.ggml.model = "llama"`): the LLaMA-2
 * vocabulary of the 1bitLLM BitNet models. Behaviour follows llama.cpp's `llm_tokenizer_spm`:
 *
 * - Each raw-text fragment gets a leading space when it starts the input or follows a special token
 *   (`add_space_prefix`, default true), then every ' ' becomes '▁' (U+2581).
 * - The text is split into Unicode characters; adjacent symbols whose concatenation is a vocab token are
 *   merged, highest `tokenizer.ggml.scores` first, leftmost first on ties, until no pair is a token.
 * - Each final symbol is its token; a character that is not a token falls back to its UTF-8 bytes as the
 *   byte tokens `<0x00>`..`<0xFF>` (byte fallback), else to the unknown token.
 *
 * Decoding: '▁' becomes ' ', byte tokens become their byte; `decode` drops the space the prefix added (see
 * DecodeOptions.stripLeadingSpace). Text containing U+2581 itself does not round-trip (it decodes as ' '),
 * as with every SentencePiece tokenizer.
 */
import { BaseTokenizer, type VocabConfig } from './base.ts';
import type { Tokenizer } from './types.ts';

export interface SentencePieceConfig extends VocabConfig {
  /** Merge priority per token (`tokenizer.ggml.scores`); all 0 when omitted. */
  scores?: ArrayLike<number>;
  /** Prefix each text with a space (`tokenizer.ggml.add_space_prefix`). Default: true. */
  addSpacePrefix?: boolean;
  /** Default: true when a BOS id exists. */
  addBos?: boolean;
}

export function createSentencePieceTokenizer(config: SentencePieceConfig): Tokenizer {
  return new SentencePieceTokenizer(config);
}

const utf8 = new TextEncoder();
const SPACE_MARK = '\u2581';

/** Max-heap of bigrams: score descending, then left index ascending (llama.cpp's llm_bigram_spm order). */
class BigramHeap {
  private score: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private size_: number[] = [];

  get length(): number {
    return this.score.length;
  }

  private before(i: number, j: number): boolean {
    const a = this.score[i];
    const b = this.score[j];
    return a > b || (a === b && this.left[i] < this.left[j]);
  }

  private swap(i: number, j: number): void {
    const s = this.score[i];
    this.score[i] = this.score[j];
    this.score[j] = s;
    const l = this.left[i];
    this.left[i] = this.left[j];
    this.left[j] = l;
    const r = this.right[i];
    this.right[i] = this.right[j];
    this.right[j] = r;
    const z = this.size_[i];
    this.size_[i] = this.size_[j];
    this.size_[j] = z;
  }

  push(score: number, left: number, right: number, size: number): void {
    this.score.push(score);
    this.left.push(left);
    this.right.push(right);
    this.size_.push(size);
    let i = this.score.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top and returns [left, right, size]. */
  pop(): [number, number, number] {
    const top: [number, number, number] = [this.left[0], this.right[0], this.size_[0]];
    const last = this.score.length - 1;
    this.swap(0, last);
    this.score.pop();
    this.left.pop();
    this.right.pop();
    this.size_.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= last) break;
      const m = l + 1 < last && this.before(l + 1, l) ? l + 1 : l;
      if (!this.before(m, i)) break;
      this.swap(m, i);
      i = m;
    }
    return top;
  }
}

class SentencePieceTokenizer extends BaseTokenizer {
  readonly model = 'llama';
  readonly preTokenizer = 'none';
  private readonly scores: Float32Array;
  private readonly addSpacePrefix: boolean;
  /** Byte fallback ids for bytes 0..255 (-1 when the vocab lacks both `<0xXX>` and the one-char token). */
  private readonly byteIds = new Int32Array(256).fill(-1);
  private pairs: Set<number> | undefined;
  private readonly chunkCache = new Map<string, readonly number[]>();

  constructor(config: SentencePieceConfig) {
    super(config, true);
    this.scores = new Float32Array(this.vocabSize);
    if (config.scores) for (let i = 0; i < this.vocabSize; i++) this.scores[i] = config.scores[i];
    this.addSpacePrefix = config.addSpacePrefix ?? true;
    this.stripsLeadingSpace = this.addSpacePrefix;
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      const id = this.textToId.get(hex) ?? (b < 0x80 ? this.textToId.get(String.fromCharCode(b)) : undefined);
      if (id !== undefined) this.byteIds[b] = id;
    }
  }

  protected normalTokenBytes(text: string): Uint8Array {
    return utf8.encode(text.replaceAll(SPACE_MARK, ' '));
  }

  protected encodeText(raw: string, out: number[], afterSpecial: boolean): void {
    const text = (this.addSpacePrefix && afterSpecial ? ' ' + raw : raw).replaceAll(' ', SPACE_MARK);
    // Cut the text where two neighbouring characters occur next to each other in no token: no merge can
    // ever cross such a point (every merged symbol is a token), so the pieces merge independently with
    // exactly the result of merging the whole text, and repeated pieces come from the cache.
    const pairs = this.adjacentPairs();
    let start = 0;
    let prev = -1;
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i) as number;
      if (prev >= 0 && !pairs.has(prev * 0x110000 + cp)) {
        this.encodeChunk(text.slice(start, i), out);
        start = i;
      }
      prev = cp;
      i += cp > 0xffff ? 2 : 1;
    }
    if (start < text.length) this.encodeChunk(start === 0 ? text : text.slice(start), out);
  }

  /** Every (code point, next code point) pair that occurs inside some token, as cp1 * 0x110000 + cp2. */
  private adjacentPairs(): Set<number> {
    if (this.pairs) return this.pairs;
    const set = new Set<number>();
    for (const t of this.tokens) {
      let prev = -1;
      for (const ch of t) {
        const cp = ch.codePointAt(0) as number;
        if (prev >= 0) set.add(prev * 0x110000 + cp);
        prev = cp;
      }
    }
    this.pairs = set;
    return set;
  }

  private encodeChunk(text: string, out: number[]): void {
    let ids = this.chunkCache.get(text);
    if (ids === undefined) {
      const fresh: number[] = [];
      this.mergeChunk(text, fresh);
      ids = fresh;
      if (text.length <= 256) {
        if (this.chunkCache.size >= 1 << 16) this.chunkCache.clear();
        this.chunkCache.set(text, ids);
      }
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  /** llama.cpp's llm_tokenizer_spm_session on one piece of escaped text. */
  private mergeChunk(text: string, out: number[]): void {
    // Symbols: one per code point, as a doubly linked list over `sym` (merged-away symbols become '').
    const sym: string[] = [];
    for (const ch of text) sym.push(ch);
    const n = sym.length;
    if (n === 0) return;
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const len = new Int32Array(n); // UTF-16 length, only to detect stale bigrams as llama.cpp does (by size)
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
      len[i] = sym[i].length;
    }
    const heap = new BigramHeap();
    const tryAdd = (l: number, r: number): void => {
      if (l < 0 || r < 0) return;
      const id = this.textToId.get(sym[l] + sym[r]);
      if (id !== undefined) heap.push(this.scores[id], l, r, len[l] + len[r]);
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (heap.length > 0) {
      const [l, r, size] = heap.pop();
      if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== size) continue; // stale
      sym[l] += sym[r];
      len[l] += len[r];
      sym[r] = '';
      len[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryAdd(prev[l], l);
      tryAdd(l, next[l]);
    }
    for (let i = 0; i >= 0; i = next[i]) {
      const id = this.textToId.get(sym[i]);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // Byte fallback (only single characters can get here: merges always produce tokens).
      for (const b of utf8.encode(sym[i])) {
        const bid = this.byteIds[b];
        if (bid >= 0) out.push(bid);
        else if (this.specialTokens.unkTokenId !== undefined) out.push(this.specialTokens.unkTokenId);
      }
    }
  }
}
