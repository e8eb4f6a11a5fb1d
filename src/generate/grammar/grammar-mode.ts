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
 * vocabulary's byte trie that the grammar can reach.
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
    const { order, bytes, lcp } = this.v;
    const m = this.m;
    const depth = this.depth;
    depth[0] = m.state;
    // depth[0..valid] hold the states after the first `valid` bytes of the previous token
    let valid = 0;
    let allowed = 0;
    let i = 0;
    while (i < order.length) {
      const id = order[i];
      const b = bytes[id];
      if (lcp[i] < valid) valid = lcp[i];
      let d = valid;
      for (; d < b.length; d++) {
        const s = m.step(depth[d], b[d]);
        if (s === DEAD) break;
        depth[d + 1] = s;
      }
      if (d === b.length) {
        valid = d;
        if (id < n) {
          out[id] = logits[id];
          allowed++;
        }
        i++;
        continue;
      }
      // the first d + 1 bytes are dead: so is every following token that starts with them
      valid = d;
      i++;
      while (i < order.length && lcp[i] > d) i++;
    }
    if (m.accepting())
      for (const id of this.eog)
        if (id < n) {
          out[id] = logits[id];
          allowed++;
        }
    if (allowed === 0)
      throw BitNetError.Model('GRAMMAR_DEAD_END', 'no token of this vocabulary continues the grammar', {});
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
