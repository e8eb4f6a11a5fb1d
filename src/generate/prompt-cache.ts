/**
 * The prompt cache: the KV of a few finished sequences, kept so that a later prompt that starts
 * with the same tokens (the next turn of a chat: the same system prompt and history, plus a new
 * message) prefills only what is new. llama.cpp's server does the same per slot (`cache_prompt`).
 *
 * Exactness: a position's K/V depend only on the tokens up to it, and every backend that takes
 * part (`Backend.rebuildsFromStore`: the reference and the wasm kernels, bit-exact with it) computes
 * them the same way in a long prefill, a short one or a decode step, so a reused prefix gives the
 * same logits, bit for bit, as prefilling it again (test/unit/prompt-cache.test.ts checks that).
 *
 * Entries are whole sequences in the engine's KV cache, least recently stored evicted first. They
 * are marked idle there, so under memory pressure the KV cache evicts them before any sequence in
 * use (whatever its policy, even with onFull 'error'); such an entry is found shorter than its
 * tokens and dropped. Taking an entry removes it, so two requests never share a sequence; the
 * reused prefix is at most the prompt minus its last token, whose logits the engine needs.
 */

/** The part of the engine's SequenceCache the prompt cache needs. */
export interface ReusableSequence {
  release(): void;
  /** Positions held in every layer (0 once the KV cache has evicted the sequence). */
  length(): number;
  /** Drops positions >= n. */
  truncate(n: number): void;
  /** Idle: kept only for reuse, so the KV cache may evict it before any sequence in use. */
  setIdle(idle: boolean): void;
}

interface Entry<S> {
  seq: S;
  /** The tokens whose K/V the sequence holds, in order. */
  tokens: readonly number[];
}

export class PromptCache<S extends ReusableSequence> {
  private readonly entries: Entry<S>[] = [];
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * The entry sharing the longest prefix with `ids`, truncated to the reused length, or undefined
   * when none shares a token (or only the last one). The entry leaves the cache.
   */
  take(ids: readonly number[]): { seq: S; reuse: number } | undefined {
    let best = -1;
    let bestLen = 0;
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i];
      if (e.seq.length() < e.tokens.length) {
        // evicted (or cut) by the KV cache meanwhile
        this.entries.splice(i--, 1)[0].seq.release();
        continue;
      }
      const max = Math.min(e.tokens.length, ids.length - 1);
      let n = 0;
      while (n < max && e.tokens[n] === ids[n]) n++;
      if (n > bestLen) {
        best = i;
        bestLen = n;
      }
    }
    if (best < 0) return undefined;
    const [e] = this.entries.splice(best, 1);
    e.seq.setIdle(false);
    e.seq.truncate(bestLen);
    return { seq: e.seq, reuse: bestLen };
  }

  /** Keeps a finished sequence holding the K/V of `tokens`; the oldest entry goes past capacity. */
  put(seq: S, tokens: readonly number[]): void {
    if (this.capacity <= 0 || tokens.length === 0) {
      seq.release();
      return;
    }
    seq.setIdle(true);
    this.entries.push({ seq, tokens });
    while (this.entries.length > this.capacity) this.entries.shift()?.seq.release();
  }

  /** Releases every entry. */
  clear(): void {
    for (const e of this.entries.splice(0)) e.seq.release();
  }
}
