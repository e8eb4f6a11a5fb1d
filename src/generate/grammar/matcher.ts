/**
 * Runs a flat grammar (gbnf.ts) over UTF-8 bytes: the set of parse stacks that are still alive,
 * as llama.cpp's grammar sampler keeps it, with two changes of representation that make the
 * per-token mask cheap:
 *
 * - a stack is an interned linked list: node id → (element position, parent node id); node 0 is
 *   the empty stack (the grammar has matched in full). The top node always sits on a character
 *   set; the nodes below hold where each enclosing rule goes on (a continuation that is an END is
 *   skipped, so `x*` loops in constant stack depth);
 * - a state is an interned (sorted stack-id set, partial UTF-8 character) pair, and the step from a
 *   state by one byte is cached per state (a 256-entry table), so walking the vocabulary mostly
 *   reads tables.
 *
 * A byte that starts or continues a multi-byte character is taken when some stack's next
 * character set holds a code point that begins with the bytes so far; the stacks advance when the
 * character is complete. States and caches belong to one matcher (one generation).
 */
import { BitNetError } from '../../errors.ts';
import { CHARS, charSetHas, charSetMeets, END, type Grammar, REF } from './gbnf.ts';

/** A state with more live stacks than this is refused (an ambiguous grammar blowing up). */
export const MAX_STACKS = 4096;
/** States one matcher may create (each holds a 1 KiB step table): 64 MiB at most. */
export const MAX_STATES = 65536;
const UNKNOWN = -2;
export const DEAD = -1;

interface State {
  /** Sorted, distinct stack ids (0, the empty stack, first when present). */
  stacks: Int32Array;
  /** The partial character: its bits so far, and how many continuation bytes it still needs. */
  cp: number;
  rem: number;
  /** The least code point the character's length may encode (0x80, 0x800 or 0x10000: no overlong forms). */
  min: number;
}

const MIN_CP = [0, 0x80, 0x800, 0x10000];

export class GrammarMatcher {
  private readonly nodePos: number[] = [-1];
  private readonly nodeParent: number[] = [-1];
  private readonly nodeIds = new Map<number, number>();
  private readonly states: State[] = [];
  private readonly stateIds = new Map<string, number>();
  private readonly trans: Int32Array[] = [];
  /** The current state. */
  state: number;

  private readonly g: Grammar;
  private readonly maxStates: number;

  constructor(g: Grammar, o: { maxStates?: number } = {}) {
    this.g = g;
    this.maxStates = o.maxStates ?? MAX_STATES;
    const out = new Set<number>();
    for (const a of g.rules[g.root]) this.expand(a, 0, out);
    const s = this.intern(out, 0, 0, 0);
    if (s === DEAD) throw BitNetError.Config('INVALID_GRAMMAR', 'grammar: the root rule matches nothing', {});
    this.state = s;
  }

  /** The grammar has matched in full here (a stop is allowed). */
  accepting(s = this.state): boolean {
    const st = this.states[s];
    return st.rem === 0 && st.stacks[0] === 0;
  }

  /** Nothing can follow: the grammar has matched in full and has no longer match. */
  finished(s = this.state): boolean {
    const st = this.states[s];
    return st.rem === 0 && st.stacks.length === 1 && st.stacks[0] === 0;
  }

  /** The state after byte b from state s, or DEAD. */
  step(s: number, b: number): number {
    const row = this.trans[s];
    const hit = row[b];
    if (hit !== UNKNOWN) return hit;
    const next = this.compute(this.states[s], b);
    row[b] = next;
    return next;
  }

  /** The state after these bytes from state s, or DEAD. */
  walk(s: number, bytes: Uint8Array): number {
    for (let i = 0; i < bytes.length && s !== DEAD; i++) s = this.step(s, bytes[i]);
    return s;
  }

  /** Appends bytes; false (state unchanged) when the grammar cannot take them. */
  push(bytes: Uint8Array): boolean {
    const s = this.walk(this.state, bytes);
    if (s === DEAD) return false;
    this.state = s;
    return true;
  }

  private compute(st: State, b: number): number {
    if (st.rem === 0) {
      if (b < 0x80) return this.intern(this.advance(st.stacks, b), 0, 0, 0);
      // a lead byte: 110xxxxx, 1110xxxx, 11110xxx (C0, C1 and F5+ never start a character)
      const n = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0;
      if (n === 0) return DEAD;
      const cp = b & (0x3f >> n);
      const min = MIN_CP[n];
      return this.feasible(st.stacks, cp, n, min) ? this.intern(st.stacks, cp, n, min) : DEAD;
    }
    if ((b & 0xc0) !== 0x80) return DEAD;
    const cp = (st.cp << 6) | (b & 0x3f);
    const rem = st.rem - 1;
    if (rem === 0) return cp < st.min || cp > 0x10ffff ? DEAD : this.intern(this.advance(st.stacks, cp), 0, 0, 0);
    return this.feasible(st.stacks, cp, rem, st.min) ? this.intern(st.stacks, cp, rem, st.min) : DEAD;
  }

  /**
   * Whether some stack's next set holds a code point that begins with `cp` and `rem` more 6-bit
   * groups, at least `min` and at most U+10FFFF.
   */
  private feasible(stacks: Int32Array, cp: number, rem: number, min: number): boolean {
    const lo = Math.max(cp * 2 ** (6 * rem), min);
    const hi = Math.min(cp * 2 ** (6 * rem) + 2 ** (6 * rem) - 1, 0x10ffff);
    if (lo > hi) return false;
    for (const s of stacks) if (s !== 0 && charSetMeets(this.g.sets[this.g.arg[this.nodePos[s]]], lo, hi)) return true;
    return false;
  }

  /** The stacks after one code point. */
  private advance(stacks: Int32Array, cp: number): Set<number> {
    const out = new Set<number>();
    const { g } = this;
    for (const s of stacks) {
      if (s === 0) continue;
      const pos = this.nodePos[s];
      if (charSetHas(g.sets[g.arg[pos]], cp)) this.expand(pos + 1, this.nodeParent[s], out);
    }
    return out;
  }

  /** Adds to `out` every stack that continues from element `pos` with `parent` below it. */
  private expand(pos: number, parent: number, out: Set<number>): void {
    const { g } = this;
    const k = g.kind[pos];
    if (k === CHARS) out.add(this.node(pos, parent));
    else if (k === END) {
      if (parent === 0) out.add(0);
      else this.expand(this.nodePos[parent], this.nodeParent[parent], out);
    } else if (k === REF) {
      // where this rule goes on after the referenced one; a tail reference needs no node
      const cont = g.kind[pos + 1] === END ? parent : this.node(pos + 1, parent);
      for (const a of g.rules[g.arg[pos]]) this.expand(a, cont, out);
    }
    if (out.size > MAX_STACKS)
      throw BitNetError.Config(
        'GRAMMAR_TOO_AMBIGUOUS',
        `grammar: more than ${MAX_STACKS} parses are alive at once; make the grammar less ambiguous`,
        { stacks: out.size },
      );
  }

  private node(pos: number, parent: number): number {
    const key = parent * 0x400000 + pos;
    let id = this.nodeIds.get(key);
    if (id === undefined) {
      id = this.nodePos.length;
      this.nodePos.push(pos);
      this.nodeParent.push(parent);
      this.nodeIds.set(key, id);
    }
    return id;
  }

  private intern(set: Set<number> | Int32Array, cp: number, rem: number, min: number): number {
    if (set instanceof Set) {
      if (set.size === 0) return DEAD;
      set = Int32Array.from(set).sort();
    }
    const key = `${set.join(',')}|${cp}|${rem}|${min}`;
    let id = this.stateIds.get(key);
    if (id === undefined) {
      id = this.states.length;
      if (id >= this.maxStates)
        throw BitNetError.Config(
          'GRAMMAR_TOO_COMPLEX',
          `grammar: matching needed more than ${this.maxStates} parser states; make the grammar less ambiguous`,
          { states: id },
        );
      this.states.push({ stacks: set, cp, rem, min });
      this.trans.push(new Int32Array(256).fill(UNKNOWN));
      this.stateIds.set(key, id);
    }
    return id;
  }
}
