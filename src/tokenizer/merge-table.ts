/**
 * Integer BPE merge core for byte-level vocabularies: the same merges as llama.cpp's
 * llm_tokenizer_bpe_session (lowest merge rank first, leftmost on ties), on symbol ids instead of strings.
 *
 * Symbol ids: a vocab token's symbol id is its token id (the id its text maps to; a repeated text maps to
 * its last id, as llama.cpp's token_to_id). Strings that occur in merges or as single bytes but are not
 * tokens get "virtual" ids >= vocabSize, so merges behave exactly as they do on strings even for an
 * inconsistent vocab. Pair lookups use an open-addressing hash table over Int32Arrays.
 */
import { BYTE_TO_UNICODE } from './byte-unicode.ts';

const EMPTY_KEY = -1;
const UNRESOLVED = -1;

export class MergeTable {
  /** Text of every symbol id (token texts, then virtual strings). */
  readonly symbolText: string[];
  readonly vocabSize: number;
  /** Symbol id of each single byte's byte-level character. */
  readonly byteSymbol = new Int32Array(256);
  private readonly keyA: Int32Array;
  private readonly keyB: Int32Array;
  private readonly rankOf: Int32Array;
  private readonly resultOf: Int32Array;
  private readonly mask: number;

  private readonly textToId: ReadonlyMap<string, number>;
  private readonly virtual = new Map<string, number>();

  constructor(tokens: readonly string[], textToId: ReadonlyMap<string, number>, merges: readonly string[]) {
    this.vocabSize = tokens.length;
    this.symbolText = tokens.slice();
    this.textToId = textToId;
    const sid = (s: string) => this.sid(s);
    for (let b = 0; b < 256; b++) this.byteSymbol[b] = sid(BYTE_TO_UNICODE[b]);

    let cap = 16;
    while (cap < merges.length * 2) cap *= 2;
    this.mask = cap - 1;
    this.keyA = new Int32Array(cap).fill(EMPTY_KEY);
    this.keyB = new Int32Array(cap);
    this.rankOf = new Int32Array(cap);
    this.resultOf = new Int32Array(cap);
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank];
      // llama.cpp splits at the first space after position 0; a merge without one never applies.
      const sp = m.indexOf(' ', 1);
      if (sp < 0) continue;
      // The result symbol is resolved on first use (most merges are never used by a given text).
      this.insert(sid(m.slice(0, sp)), sid(m.slice(sp + 1)), rank, UNRESOLVED);
    }
  }

  /** Symbol id of a string: its token id, else a virtual id (created on first sight). */
  private sid(s: string): number {
    const id = this.textToId.get(s);
    if (id !== undefined) return id;
    let v = this.virtual.get(s);
    if (v === undefined) {
      v = this.symbolText.length;
      this.symbolText.push(s);
      this.virtual.set(s, v);
    }
    return v;
  }

  private slot(a: number, b: number): number {
    return (Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca6b)) & this.mask;
  }

  /** Keeps the first rank of a repeated pair (llama.cpp's bpe_ranks.emplace). */
  private insert(a: number, b: number, rank: number, result: number): void {
    let i = this.slot(a, b);
    for (;;) {
      const k = this.keyA[i];
      if (k === EMPTY_KEY) {
        this.keyA[i] = a;
        this.keyB[i] = b;
        this.rankOf[i] = rank;
        this.resultOf[i] = result;
        return;
      }
      if (k === a && this.keyB[i] === b) return;
      i = (i + 1) & this.mask;
    }
  }

  /** Table slot of pair (a, b), or -1. */
  find(a: number, b: number): number {
    let i = this.slot(a, b);
    for (;;) {
      const k = this.keyA[i];
      if (k === EMPTY_KEY) return -1;
      if (k === a && this.keyB[i] === b) return i;
      i = (i + 1) & this.mask;
    }
  }

  rank(slot: number): number {
    return this.rankOf[slot];
  }

  /** The symbol a pair merges into. */
  result(slot: number): number {
    let r = this.resultOf[slot];
    if (r === UNRESOLVED) {
      r = this.sid(this.symbolText[this.keyA[slot]] + this.symbolText[this.keyB[slot]]);
      this.resultOf[slot] = r;
    }
    return r;
  }

  /**
   * Merges `sym[0..n)` in place and returns the new length. Short words rescan for the best pair (cheaper
   * than a heap below a few dozen symbols); long ones use a heap of (rank, position) with lazy deletion.
   */
  merge(sym: Int32Array, n: number): number {
    return n <= 48 ? this.mergeScan(sym, n) : this.mergeHeap(sym, n);
  }

  private mergeScan(sym: Int32Array, n: number): number {
    while (n > 1) {
      let best = -1;
      let bestRank = 0x7fffffff;
      let bestSlot = -1;
      for (let i = 0; i + 1 < n; i++) {
        const s = this.find(sym[i], sym[i + 1]);
        if (s >= 0 && this.rankOf[s] < bestRank) {
          bestRank = this.rankOf[s];
          best = i;
          bestSlot = s;
        }
      }
      if (best < 0) break;
      sym[best] = this.result(bestSlot);
      sym.copyWithin(best + 1, best + 2, n);
      n--;
    }
    return n;
  }

  private mergeHeap(sym: Int32Array, n: number): number {
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Heap entries: rank * 2^21 + position would overflow for big ranks; keep two parallel arrays.
    const hr: number[] = [];
    const hp: number[] = [];
    const less = (i: number, j: number) => hr[i] < hr[j] || (hr[i] === hr[j] && hp[i] < hp[j]);
    const swap = (i: number, j: number) => {
      const r = hr[i];
      hr[i] = hr[j];
      hr[j] = r;
      const p = hp[i];
      hp[i] = hp[j];
      hp[j] = p;
    };
    const push = (rank: number, pos: number) => {
      hr.push(rank);
      hp.push(pos);
      let i = hr.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!less(i, p)) break;
        swap(i, p);
        i = p;
      }
    };
    const pop = () => {
      const last = hr.length - 1;
      swap(0, last);
      hr.pop();
      hp.pop();
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const m = l + 1 < last && less(l + 1, l) ? l + 1 : l;
        if (!less(m, i)) break;
        swap(m, i);
        i = m;
      }
    };
    const addPair = (l: number) => {
      const r = next[l];
      if (l < 0 || r < 0) return;
      const s = this.find(sym[l], sym[r]);
      if (s >= 0) push(this.rankOf[s], l);
    };
    for (let i = 0; i + 1 < n; i++) addPair(i);
    while (hr.length > 0) {
      const rank = hr[0];
      const l = hp[0];
      pop();
      if (!alive[l]) continue;
      const r = next[l];
      if (r < 0) continue;
      const s = this.find(sym[l], sym[r]);
      if (s < 0 || this.rankOf[s] !== rank) continue; // stale: the pair changed since it was queued
      sym[l] = this.result(s);
      alive[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      if (prev[l] >= 0) addPair(prev[l]);
      addPair(l);
    }
    let m = 0;
    for (let i = 0; i >= 0; i = next[i]) sym[m++] = sym[i];
    return m;
  }
}
