/**
 * JSON mode for the engine loop: before each sample, every token that would break the JSON object
 * (json-constraint.ts) gets logit −∞, so the sampler, its bias, penalties, top-k and top-p, and
 * its one draw per token work as always over the tokens left. Special tokens (end-of-generation
 * included) are never allowed: the generation ends when the object closes.
 *
 * Cost: a recognizer simulation per token whose first byte the JSON can take (the others are
 * skipped by first byte): ~4-5 ms per step between values, ~11 ms inside a string, where nearly
 * every token fits, on the 2B-4T-shaped synthetic model's 128K vocabulary (this project's 2-core
 * machine; the table is built once, ~200 ms), next to ~100 ms of a 2B model's decode step.
 * Log-probabilities stay those of the unmasked logits (logprobs.ts).
 */
import { BitNetError } from '../errors.ts';
import type { Tokenizer } from '../tokenizer/types.ts';
import { JsonObjectConstraint } from './json-constraint.ts';

export type ResponseFormat = 'text' | 'json_object';

/**
 * Each token's bytes (null for a token JSON mode never allows), and the ids grouped by first byte,
 * so a step tries only the tokens whose first byte the JSON can take. Built once per tokenizer.
 */
interface TokenTable {
  bytes: (Uint8Array | null)[];
  byFirst: Int32Array[];
}
const tables = new WeakMap<Tokenizer, TokenTable>();

function tokenTable(tok: Tokenizer): TokenTable {
  let t = tables.get(tok);
  if (!t) {
    const bytes: (Uint8Array | null)[] = [];
    const groups: number[][] = Array.from({ length: 256 }, () => []);
    for (let id = 0; id < tok.vocabSize; id++) {
      const special = tok.isSpecial(id) || tok.isEog(id);
      const b = special ? null : tok.tokenBytes(id, { skipSpecialTokens: false });
      const ok = b !== null && b.length > 0;
      bytes.push(ok ? b : null);
      if (ok) groups[b[0]].push(id);
    }
    t = { bytes, byFirst: groups.map((g) => Int32Array.from(g)) };
    tables.set(tok, t);
  }
  return t;
}

const ONE_BYTE = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));

export class JsonMode {
  private readonly c = new JsonObjectConstraint();
  private readonly table: TokenTable;
  private buf: Float32Array | null = null;

  constructor(tok: Tokenizer) {
    this.table = tokenTable(tok);
  }

  /** The object has closed: the generation is complete. */
  get done(): boolean {
    return this.c.done;
  }

  /** A copy of `logits` with −∞ on every token the JSON cannot take next (reused buffer). */
  mask(logits: Float32Array): Float32Array {
    const n = logits.length;
    if (this.buf === null || this.buf.length !== n) this.buf = new Float32Array(n);
    const out = this.buf;
    out.fill(Number.NEGATIVE_INFINITY);
    let allowed = 0;
    for (let first = 0; first < 256; first++) {
      const ids = this.table.byFirst[first];
      if (ids.length === 0 || !this.c.accepts(ONE_BYTE[first])) continue;
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        if (id < n && this.c.accepts(this.table.bytes[id]!)) {
          out[id] = logits[id];
          allowed++;
        }
      }
    }
    if (allowed === 0)
      throw BitNetError.Model('JSON_DEAD_END', 'no token of this vocabulary continues the JSON object', {});
    return out;
  }

  /** Commits the sampled token. */
  push(id: number): void {
    const b = this.table.bytes[id];
    if (b === null || b === undefined || !this.c.push(b))
      throw BitNetError.Model('JSON_DEAD_END', `token ${id} does not continue the JSON object`, { token: id });
  }
}
