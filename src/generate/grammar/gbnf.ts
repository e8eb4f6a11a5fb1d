/**
 * GBNF, llama.cpp's grammar notation (grammars/README.md in llama.cpp), parsed into a flat grammar
 * that matcher.ts runs over code points.
 *
 *   rule    ::= name "::=" alts              name: [a-zA-Z0-9_-]+; `root` is where matching starts
 *   alts    ::= seq ("|" seq)*               a seq may be empty (matches nothing)
 *   item    ::= ( "literal" | [class] | [^class] | . | name | "(" alts ")" ) repeat?
 *   repeat  ::= "*" | "+" | "?" | "{m}" | "{m,}" | "{m,n}"
 *   # to the end of the line is a comment
 *
 * Escapes in literals and classes: \n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH, and a
 * backslash before any other ASCII punctuation stands for that character. Classes and `.` match
 * code points (`.` any code point). Newlines may appear anywhere between items: a rule ends where
 * the next `name ::=` begins (llama.cpp ends a rule at a newline outside parentheses; every
 * grammar it reads is read the same here).
 *
 * The flat form (llama.cpp's idea, our layout): every alternative of every rule is a run of
 * elements in `kind`/`arg` ending in an END element; `rules[r]` lists the first element of each of
 * rule r's alternatives. Repetitions become helper rules (`x*` is `R ::= x R |`), so the matcher
 * only knows character sets and rule references. Left recursion (a rule reaching itself before
 * consuming a character) would make the matcher loop, so it is refused here.
 */
import { BitNetError } from '../../errors.ts';

export const END = 0;
export const CHARS = 1;
export const REF = 2;

/** A set of code points: a 128-entry ASCII table and sorted, disjoint [lo, hi] pairs above 127. */
export interface CharSet {
  ascii: Uint8Array;
  /** lo0, hi0, lo1, hi1, … (all ≥ 128, sorted, disjoint). */
  high: Uint32Array;
}

export interface Grammar {
  /** Per element: END, CHARS or REF. */
  kind: Uint8Array;
  /** Per element: the CharSet index (CHARS) or the rule index (REF). */
  arg: Int32Array;
  /** Per rule: the first element of each alternative. */
  rules: Int32Array[];
  ruleNames: string[];
  sets: CharSet[];
  root: number;
}

/** Largest repetition count `{m,n}` takes (each count unrolls into rules). */
export const MAX_REPEAT = 1000;
const MAX_CP = 0x10ffff;

export function charSetHas(s: CharSet, cp: number): boolean {
  if (cp < 128) return s.ascii[cp] === 1;
  const h = s.high;
  let lo = 0;
  let hi = (h.length >> 1) - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < h[2 * mid]) hi = mid - 1;
    else if (cp > h[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Whether the set holds any code point in [lo, hi]. */
export function charSetMeets(s: CharSet, lo: number, hi: number): boolean {
  for (let c = lo; c <= Math.min(hi, 127); c++) if (s.ascii[c] === 1) return true;
  const h = s.high;
  for (let i = 0; i < h.length; i += 2) if (h[i] <= hi && h[i + 1] >= lo) return true;
  return false;
}

// ---- the parsed form ----

type Item =
  | { t: 'chars'; ranges: number[]; neg: boolean; min: number; max: number }
  | { t: 'ref'; name: string; at: number; min: number; max: number }
  | { t: 'group'; alts: Item[][]; min: number; max: number };

function fail(message: string, at: number, text: string): never {
  // line and column, 1-based, for the message
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  const col = at - before.lastIndexOf('\n');
  throw BitNetError.Config('INVALID_GRAMMAR', `grammar: ${message} (line ${line}, column ${col})`, {
    line,
    column: col,
  });
}

class Parser {
  pos = 0;
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }

  /** Skips spaces, tabs, newlines and comments. */
  space(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t[this.pos];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.pos++;
      else if (c === '#') while (this.pos < t.length && t[this.pos] !== '\n') this.pos++;
      else break;
    }
  }

  name(): string {
    const m = /^[a-zA-Z0-9_-]+/.exec(this.text.slice(this.pos, this.pos + 256));
    if (!m) fail('expected a rule name', this.pos, this.text);
    this.pos += m[0].length;
    return m[0];
  }

  /** At `name ::=` (the start of the next rule)? Position unchanged. */
  atRuleStart(): boolean {
    const m = /^[a-zA-Z0-9_-]+[ \t\r\n]*::=/.exec(this.text.slice(this.pos, this.pos + 300));
    return m !== null;
  }

  /** One character of a literal or class, escapes decoded; returns its code point. */
  char(): number {
    const t = this.text;
    if (this.pos >= t.length) fail('unexpected end of grammar', this.pos, t);
    const c = t.codePointAt(this.pos)!;
    if (c !== 0x5c) {
      this.pos += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = t[this.pos + 1];
    const hex = (n: number): number => {
      const h = t.slice(this.pos + 2, this.pos + 2 + n);
      if (h.length !== n || !/^[0-9a-fA-F]+$/.test(h)) fail(`\\${e} needs ${n} hex digits`, this.pos, t);
      const v = Number.parseInt(h, 16);
      if (v > MAX_CP) fail(`\\${e}${h} is past U+10FFFF`, this.pos, t);
      this.pos += 2 + n;
      return v;
    };
    if (e === 'x') return hex(2);
    if (e === 'u') return hex(4);
    if (e === 'U') return hex(8);
    const simple: Record<string, number> = { n: 10, r: 13, t: 9 };
    if (e !== undefined && e in simple) {
      this.pos += 2;
      return simple[e];
    }
    if (e !== undefined && /[!-/:-@[-`{-~]/.test(e)) {
      this.pos += 2;
      return e.charCodeAt(0);
    }
    return fail(`unknown escape \\${e ?? ''}`, this.pos, t);
  }

  alts(nested: boolean): Item[][] {
    const out: Item[][] = [this.seq(nested)];
    while (this.text[this.pos] === '|') {
      this.pos++;
      out.push(this.seq(nested));
    }
    return out;
  }

  seq(nested: boolean): Item[] {
    const items: Item[] = [];
    const t = this.text;
    for (;;) {
      this.space();
      const c = t[this.pos];
      if (c === undefined || c === '|' || c === ')') break;
      if (!nested && this.atRuleStart()) break;
      const start = this.pos;
      let item: Item;
      if (c === '"') {
        this.pos++;
        const cps: number[] = [];
        while (t[this.pos] !== '"') {
          if (this.pos >= t.length || t[this.pos] === '\n') fail('unterminated literal', start, t);
          cps.push(this.char());
        }
        this.pos++;
        // a literal is a group of one alternative: one single-character set per code point
        item = { t: 'group', alts: [cps.map((cp) => one(cp))], min: 1, max: 1 };
      } else if (c === '[') {
        this.pos++;
        const neg = t[this.pos] === '^';
        if (neg) this.pos++;
        const ranges: number[] = [];
        while (t[this.pos] !== ']') {
          if (this.pos >= t.length) fail('unterminated character class', start, t);
          const lo = this.char();
          let hi = lo;
          if (t[this.pos] === '-' && t[this.pos + 1] !== ']') {
            this.pos++;
            hi = this.char();
            if (hi < lo) fail('a character range runs backwards', start, t);
          }
          ranges.push(lo, hi);
        }
        this.pos++;
        item = { t: 'chars', ranges, neg, min: 1, max: 1 };
      } else if (c === '.') {
        this.pos++;
        item = { t: 'chars', ranges: [0, MAX_CP], neg: false, min: 1, max: 1 };
      } else if (c === '(') {
        this.pos++;
        const alts = this.alts(true);
        this.space();
        if (t[this.pos] !== ')') fail('expected )', this.pos, t);
        this.pos++;
        item = { t: 'group', alts, min: 1, max: 1 };
      } else if (/[a-zA-Z0-9_-]/.test(c)) {
        item = { t: 'ref', name: this.name(), at: start, min: 1, max: 1 };
      } else fail(`unexpected ${JSON.stringify(c)}`, this.pos, t);
      this.repeat(item);
      items.push(item);
    }
    return items;
  }

  /** A postfix repetition after an item, if any. */
  repeat(item: Item): void {
    const t = this.text;
    const c = t[this.pos];
    if (c === '*' || c === '+' || c === '?') {
      this.pos++;
      item.min = c === '+' ? 1 : 0;
      item.max = c === '?' ? 1 : Number.POSITIVE_INFINITY;
    } else if (c === '{') {
      const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(t.slice(this.pos, this.pos + 40));
      if (!m) fail('expected {m}, {m,} or {m,n}', this.pos, t);
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? Number.POSITIVE_INFINITY : Number(m[3]);
      if (max < min) fail('a repetition {m,n} needs m ≤ n', this.pos, t);
      if (min > MAX_REPEAT || (max !== Number.POSITIVE_INFINITY && max > MAX_REPEAT))
        fail(`repetition counts are limited to ${MAX_REPEAT}`, this.pos, t);
      this.pos += m[0].length;
      item.min = min;
      item.max = max;
    } else return;
    if (/^[*+?{]/.test(t[this.pos] ?? '')) fail('a repetition of a repetition needs parentheses', this.pos, t);
  }
}

const one = (cp: number): Item => ({ t: 'chars', ranges: [cp, cp], neg: false, min: 1, max: 1 });

// ---- lowering to the flat form ----

type Elem = { set: number } | { rule: number };

class Builder {
  readonly ruleAlts: Elem[][][] = [];
  readonly names: string[] = [];
  readonly byName = new Map<string, number>();
  readonly sets: CharSet[] = [];
  private readonly setKeys = new Map<string, number>();
  /** Rule references by name, with where they were written (checked once every rule is known). */
  readonly refs: { name: string; at: number }[] = [];

  ruleId(name: string): number {
    let id = this.byName.get(name);
    if (id === undefined) {
      id = this.ruleAlts.length;
      this.ruleAlts.push([]);
      this.names.push(name);
      this.byName.set(name, id);
    }
    return id;
  }

  helper(base: string, alts: Elem[][]): number {
    const id = this.ruleAlts.length;
    this.ruleAlts.push(alts);
    this.names.push(`${base}-${id}`);
    return id;
  }

  set(ranges: number[], neg: boolean): number {
    // normalise to sorted, merged, positive ranges
    const pairs: [number, number][] = [];
    for (let i = 0; i < ranges.length; i += 2) pairs.push([ranges[i], ranges[i + 1]]);
    pairs.sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const p of pairs) {
      const last = merged[merged.length - 1];
      if (last && p[0] <= last[1] + 1) last[1] = Math.max(last[1], p[1]);
      else merged.push([p[0], p[1]]);
    }
    let pos = merged;
    if (neg) {
      pos = [];
      let from = 0;
      for (const [lo, hi] of merged) {
        if (lo > from) pos.push([from, lo - 1]);
        from = hi + 1;
      }
      if (from <= MAX_CP) pos.push([from, MAX_CP]);
    }
    const key = pos.map((p) => `${p[0]}-${p[1]}`).join(',');
    let id = this.setKeys.get(key);
    if (id === undefined) {
      const ascii = new Uint8Array(128);
      const high: number[] = [];
      for (const [lo, hi] of pos) {
        for (let c = lo; c <= Math.min(hi, 127); c++) ascii[c] = 1;
        if (hi >= 128) high.push(Math.max(lo, 128), hi);
      }
      id = this.sets.length;
      this.sets.push({ ascii, high: Uint32Array.from(high) });
      this.setKeys.set(key, id);
    }
    return id;
  }

  /** The alternatives of a rule body. */
  alts(alts: Item[][], base: string): Elem[][] {
    return alts.map((seq) => seq.flatMap((item) => this.item(item, base)));
  }

  /** One item as elements: its body `min` times, then the optional rest. */
  item(item: Item, base: string): Elem[] {
    const once = this.once(item, base);
    if (item.min === 1 && item.max === 1) return once;
    // repeat a single element (a group becomes a helper rule first)
    const unit: Elem = once.length === 1 ? once[0] : { rule: this.helper(base, [once]) };
    const out: Elem[] = Array.from({ length: item.min }, () => unit);
    if (item.max === Number.POSITIVE_INFINITY) {
      // R ::= unit R | ε
      const r = this.helper(base, []);
      this.ruleAlts[r] = [[unit, { rule: r }], []];
      out.push({ rule: r });
    } else if (item.max > item.min) {
      // (unit (unit (…)?)?)? : the innermost optional first
      let next = -1;
      for (let k = 0; k < item.max - item.min; k++) {
        const body: Elem[] = next < 0 ? [unit] : [unit, { rule: next }];
        next = this.helper(base, [body, []]);
      }
      out.push({ rule: next });
    }
    return out;
  }

  private once(item: Item, base: string): Elem[] {
    if (item.t === 'chars') return [{ set: this.set(item.ranges, item.neg) }];
    if (item.t === 'ref') {
      this.refs.push({ name: item.name, at: item.at });
      return [{ rule: this.ruleId(item.name) }];
    }
    // a group of one alternative is inlined; several become a helper rule
    if (item.alts.length === 1) return this.alts(item.alts, base)[0];
    return [{ rule: this.helper(base, this.alts(item.alts, base)) }];
  }
}

/** Parses GBNF text; throws BitNetError INVALID_GRAMMAR (with line and column) on any fault. */
export function parseGbnf(text: string): Grammar {
  if (typeof text !== 'string' || text.trim() === '')
    throw BitNetError.Config('INVALID_GRAMMAR', 'grammar: the grammar is empty', {});
  const p = new Parser(text);
  const b = new Builder();
  const defined = new Map<string, number>();
  p.space();
  while (p.pos < text.length) {
    const at = p.pos;
    const name = p.name();
    p.space();
    if (!text.startsWith('::=', p.pos)) fail(`expected ::= after ${name}`, p.pos, text);
    p.pos += 3;
    if (defined.has(name)) fail(`rule ${name} is defined twice`, at, text);
    defined.set(name, at);
    const id = b.ruleId(name);
    const alts = p.alts(false);
    b.ruleAlts[id] = b.alts(alts, name);
    p.space();
    if (p.pos < text.length && !p.atRuleStart()) fail(`unexpected ${JSON.stringify(text[p.pos])}`, p.pos, text);
  }
  for (const r of b.refs) if (!defined.has(r.name)) fail(`rule ${r.name} is not defined`, r.at, text);
  const root = b.byName.get('root');
  if (root === undefined || !defined.has('root'))
    throw BitNetError.Config('INVALID_GRAMMAR', 'grammar: there is no root rule (root ::= …)', {});
  checkLeftRecursion(b);
  return flatten(b, root);
}

/** Refuses a rule that can reach itself without consuming a character (the matcher would loop). */
function checkLeftRecursion(b: Builder): void {
  const n = b.ruleAlts.length;
  const nullable = new Uint8Array(n);
  const elemNullable = (e: Elem) => 'rule' in e && nullable[e.rule] === 1;
  for (let changed = true; changed; ) {
    changed = false;
    for (let r = 0; r < n; r++) {
      if (nullable[r] === 0 && b.ruleAlts[r].some((alt) => alt.every(elemNullable))) {
        nullable[r] = 1;
        changed = true;
      }
    }
  }
  // rule → the rules it can start with
  const firsts: number[][] = b.ruleAlts.map((alts) => {
    const out: number[] = [];
    for (const alt of alts)
      for (const e of alt) {
        if (!('rule' in e)) break;
        out.push(e.rule);
        if (!nullable[e.rule]) break;
      }
    return out;
  });
  const state = new Uint8Array(n); // 0 unvisited, 1 on the path, 2 done
  const visit = (r: number, path: number[]): void => {
    if (state[r] === 2) return;
    if (state[r] === 1) {
      const cycle = path.slice(path.indexOf(r)).map((x) => b.names[x]);
      const user = cycle.find((x) => b.byName.has(x)) ?? cycle[0];
      throw BitNetError.Config(
        'INVALID_GRAMMAR',
        `grammar: rule ${user} is left-recursive (it reaches itself before matching a character: ${[...cycle, cycle[0]].join(' → ')})`,
        { rule: user },
      );
    }
    state[r] = 1;
    path.push(r);
    for (const f of firsts[r]) visit(f, path);
    path.pop();
    state[r] = 2;
  };
  for (let r = 0; r < n; r++) visit(r, []);
}

function flatten(b: Builder, root: number): Grammar {
  const kind: number[] = [];
  const arg: number[] = [];
  const rules = b.ruleAlts.map((alts) => {
    const starts: number[] = [];
    for (const alt of alts) {
      starts.push(kind.length);
      for (const e of alt) {
        if ('set' in e) {
          kind.push(CHARS);
          arg.push(e.set);
        } else {
          kind.push(REF);
          arg.push(e.rule);
        }
      }
      kind.push(END);
      arg.push(0);
    }
    return Int32Array.from(starts);
  });
  // matcher.ts packs an element position into 22 bits of a stack node's key
  if (kind.length >= 0x400000)
    throw BitNetError.Config(
      'INVALID_GRAMMAR',
      `grammar: ${kind.length} elements is too large (at most ${0x3fffff})`,
      {},
    );
  return { kind: Uint8Array.from(kind), arg: Int32Array.from(arg), rules, ruleNames: b.names, sets: b.sets, root };
}
