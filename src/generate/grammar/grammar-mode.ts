/**
 * Grammar-constrained generation for the engine loop (a GBNF grammar, or a JSON schema turned
 * into one): before each sample, every token whose bytes the grammar cannot take next gets logit
 * −∞, so the sampler and everything before it work as always over the tokens left. The
 * end-of-generation tokens are allowed exactly where the grammar has matched in full; other
 * special tokens never. Generation ends when nothing can follow (finished()).
 *
 * The mask walks the vocabulary in byte order (a table built once per tokenizer), so a token
 * shares the matcher states of the prefix it has in common with the one before it, and a dead
 * prefix skips every token that starts with it: the work is one cached state step per node of the
 * vocabulary's byte trie that the grammar can reach. The allowed ids of the last few matcher states
 * are kept: inside a string, or any loop, the state after each token is often one already seen.
 */
import { BitNetError } from '../../errors.ts';
import type { Tokenizer } from '../../tokenizer/types.ts';
import { type Grammar, parseGbnf } from './gbnf.ts';
import { jsonSchemaToGbnf } from './json-schema.ts';
import { DEAD, GrammarMatcher } from './matcher.ts';

/** What constrains a generation: GBNF text, or a JSON schema. */
export type GrammarSpec = { gbnf: string } | { jsonSchema: unknown };

/** The vocabulary in byte order: ids, each one's bytes, and its common prefix with the one before. */
interface Vocab {
  order: Int32Array;
  bytes: Uint8Array[];
  lcp: Int32Array;
  maxLen: number;
}
const vocabs = new WeakMap<Tokenizer, Vocab>();

function vocab(tok: Tokenizer): Vocab {
  let v = vocabs.get(tok);
  if (v) return v;
  const ids: number[] = [];
  const bytes: Uint8Array[] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    const special = tok.isSpecial(id) || tok.isEog(id);
    const b = special ? null : tok.tokenBytes(id, { skipSpecialTokens: false });
    bytes.push(b ?? new Uint8Array(0));
    if (b !== null && b.length > 0) ids.push(id);
  }
  const cmp = (x: Uint8Array, y: Uint8Array): number => {
    const n = Math.min(x.length, y.length);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  ids.sort((a, b) => cmp(bytes[a], bytes[b]) || a - b);
  const lcp = new Int32Array(ids.length);
  let maxLen = 0;
  for (let i = 0; i < ids.length; i++) {
    const cur = bytes[ids[i]];
    maxLen = Math.max(maxLen, cur.length);
    if (i === 0) continue;
    const prev = bytes[ids[i - 1]];
    let k = 0;
    while (k < prev.length && k < cur.length && prev[k] === cur[k]) k++;
    lcp[i] = k;
  }
  v = { order: Int32Array.from(ids), bytes, lcp, maxLen };
  vocabs.set(tok, v);
  return v;
}

// Compiled grammars by their text, so n choices and repeated requests parse once.
const compiled = new Map<string, Grammar>();
/** Masks kept per generation (each up to a vocabulary of ids). */
const MEMO_STATES = 8;
const COMPILED_MAX = 32;

/**
 * The grammar of a spec, checked (throws INVALID_GRAMMAR, INVALID_JSON_SCHEMA or
 * UNSUPPORTED_JSON_SCHEMA); cached by its text.
 */
export function compileGrammar(spec: GrammarSpec): Grammar {
  const text = 'gbnf' in spec ? spec.gbnf : jsonSchemaToGbnf(spec.jsonSchema);
  let g = compiled.get(text);
  if (g) {
    compiled.delete(text);
  } else {
    g = parseGbnf(text);
    // the root must match something: a matcher over it says so now, not at the first token
    new GrammarMatcher(g);
  }
  compiled.set(text, g);
  if (compiled.size > COMPILED_MAX) compiled.delete(compiled.keys().next().value!);
  return g;
}

export class GrammarMode {
  private readonly m: GrammarMatcher;
  private readonly v: Vocab;
  private readonly eog: readonly number[];
  private buf: Float32Array | null = null;
  private depth: Int32Array;
  /** The allowed ids by matcher state, for the last few states (inside a string every step has the same one). */
  private readonly memo = new Map<number, Int32Array>();

  /** `eog`: the end-of-generation ids the engine stops on (allowed where the grammar is complete). */
  constructor(grammar: Grammar, tok: Tokenizer, eog: Iterable<number>) {
    this.m = new GrammarMatcher(grammar);
    this.v = vocab(tok);
    this.eog = [...eog];
    this.depth = new Int32Array(this.v.maxLen + 1);
  }

  /** Nothing can follow: the generation is complete. */
  get done(): boolean {
    return this.m.finished();
  }

  /** A copy of `logits` with −∞ on every token the grammar cannot take next (reused buffer). */
  mask(logits: Float32Array): Float32Array {
    const n = logits.length;
    if (this.buf === null || this.buf.length !== n) this.buf = new Float32Array(n);
    const out = this.buf;
    out.fill(Number.NEGATIVE_INFINITY);
    const ids = this.allowed();
    let count = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < n) {
        out[id] = logits[id];
        count++;
      }
    }
    if (count === 0)
      throw BitNetError.Model('GRAMMAR_DEAD_END', 'no token of this vocabulary continues the grammar', {});
    return out;
  }

  /** The ids the grammar can take next from the current state (end-of-generation ids included where it may stop). */
  private allowed(): Int32Array {
    const m = this.m;
    const hit = this.memo.get(m.state);
    if (hit) {
      // most recently used last
      this.memo.delete(m.state);
      this.memo.set(m.state, hit);
      return hit;
    }
    const { order, bytes, lcp } = this.v;
    const depth = this.depth;
    depth[0] = m.state;
    const ids: number[] = [];
    // depth[0..valid] hold the states after the first `valid` bytes of the previous token
    let valid = 0;
    let i = 0;
    while (i < order.length) {
      const b = bytes[order[i]];
      if (lcp[i] < valid) valid = lcp[i];
      let d = valid;
      for (; d < b.length; d++) {
        const s = m.step(depth[d], b[d]);
        if (s === DEAD) break;
        depth[d + 1] = s;
      }
      valid = d;
      if (d === b.length) {
        ids.push(order[i]);
        i++;
        continue;
      }
      // the first d + 1 bytes are dead: so is every following token that starts with them
      i++;
      while (i < order.length && lcp[i] > d) i++;
    }
    if (m.accepting()) ids.push(...this.eog);
    const out = Int32Array.from(ids);
    this.memo.set(m.state, out);
    if (this.memo.size > MEMO_STATES) this.memo.delete(this.memo.keys().next().value!);
    return out;
  }

  /** Commits the sampled token (an end-of-generation token ends the text and changes nothing). */
  push(id: number): void {
    if (this.eog.includes(id) && this.m.accepting()) return;
    const b = this.v.bytes[id];
    if (b === undefined || b.length === 0 || !this.m.push(b))
      throw BitNetError.Model('GRAMMAR_DEAD_END', `token ${id} does not continue the grammar`, { token: id });
  }
}
