/**
 * JSON Schema `pattern` (an ECMAScript regular expression) → a GBNF expression for the contents
 * of a JSON string whose value the pattern matches.
 *
 * JSON Schema patterns search (they are not anchored): `^` and `$` at the ends anchor them, and a
 * side left open becomes "any characters" there, so the grammar takes exactly the strings
 * `RegExp(pattern, 'u').test` takes. Supported: literals, escapes (\d \w \s and their negations,
 * \n \r \t \v \f \0, \xHH, \uHHHH, \u{…}, escaped punctuation), classes with ranges and
 * negation, `.`, groups ((…), (?:…), (?<name>…)), `|`, and the quantifiers * + ? {m} {m,} {m,n}
 * (a lazy `?` after one changes nothing here). Refused, with the reason: lookarounds,
 * backreferences, word boundaries, `^`/`$` inside the pattern, and counts over MAX_REPEAT.
 *
 * Each character class is written as JSON writes its characters: `"` and `\` escaped, control
 * characters as their escapes (`\n`, `\u0001`, …), everything else as itself.
 */
import { BitNetError } from '../../errors.ts';
import { MAX_REPEAT } from './gbnf.ts';

const MAX_CP = 0x10ffff;
type Ranges = number[]; // lo0, hi0, lo1, hi1, … sorted and disjoint

type Node =
  | { t: 'set'; r: Ranges }
  | { t: 'seq'; items: Node[] }
  | { t: 'alt'; alts: Node[] }
  | { t: 'rep'; node: Node; min: number; max: number };

const DIGIT: Ranges = [0x30, 0x39];
const WORD: Ranges = [0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a];
// ECMAScript's \s: WhiteSpace and LineTerminator
const SPACE: Ranges = [
  0x09, 0x0d, 0x20, 0x20, 0xa0, 0xa0, 0x1680, 0x1680, 0x2000, 0x200a, 0x2028, 0x2029, 0x202f, 0x202f, 0x205f, 0x205f,
  0x3000, 0x3000, 0xfeff, 0xfeff,
];
// `.` matches anything but the line terminators
const DOT: Ranges = complement([0x0a, 0x0a, 0x0d, 0x0d, 0x2028, 0x2029]);

function normalize(r: Ranges): Ranges {
  const pairs: [number, number][] = [];
  for (let i = 0; i < r.length; i += 2) pairs.push([r[i], r[i + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  for (const [lo, hi] of pairs) {
    if (out.length && lo <= out[out.length - 1] + 1) out[out.length - 1] = Math.max(out[out.length - 1], hi);
    else out.push(lo, hi);
  }
  return out;
}

function complement(r: Ranges): Ranges {
  const n = normalize(r);
  const out: Ranges = [];
  let from = 0;
  for (let i = 0; i < n.length; i += 2) {
    if (n[i] > from) out.push(from, n[i] - 1);
    from = n[i + 1] + 1;
  }
  if (from <= MAX_CP) out.push(from, MAX_CP);
  return out;
}

/** `r` without the code points in `cut`. */
function minus(r: Ranges, cut: Ranges): Ranges {
  const keep = complement(cut);
  const out: Ranges = [];
  const a = normalize(r);
  for (let i = 0; i < a.length; i += 2)
    for (let j = 0; j < keep.length; j += 2) {
      const lo = Math.max(a[i], keep[j]);
      const hi = Math.min(a[i + 1], keep[j + 1]);
      if (lo <= hi) out.push(lo, hi);
    }
  return out;
}

class RegexParser {
  i = 0;
  readonly src: string;
  readonly path: string;
  constructor(src: string, path: string) {
    this.src = src;
    this.path = path;
  }

  fail(why: string): never {
    throw BitNetError.Config(
      'UNSUPPORTED_JSON_SCHEMA',
      `json schema at ${this.path}: pattern ${JSON.stringify(this.src)}: ${why} (at ${this.i})`,
      { path: this.path, keyword: 'pattern' },
    );
  }

  peek(): string | undefined {
    return this.src[this.i];
  }

  alt(): Node {
    const alts = [this.seq()];
    while (this.peek() === '|') {
      this.i++;
      alts.push(this.seq());
    }
    return alts.length === 1 ? alts[0] : { t: 'alt', alts };
  }

  seq(): Node {
    const items: Node[] = [];
    for (let c = this.peek(); c !== undefined && c !== '|' && c !== ')'; c = this.peek()) {
      if (c === '^' || c === '$') this.fail(`${c} is supported only at the start or the end`);
      items.push(this.quantified(this.atom()));
    }
    return { t: 'seq', items };
  }

  atom(): Node {
    const c = this.peek()!;
    if (c === '(') {
      this.i++;
      if (this.src.startsWith('?:', this.i)) this.i += 2;
      else if (/^\?<[A-Za-z_$][\w$]*>/.test(this.src.slice(this.i))) this.i = this.src.indexOf('>', this.i) + 1;
      else if (this.peek() === '?') this.fail('lookarounds are not supported');
      const inner = this.alt();
      if (this.peek() !== ')') this.fail('a group is not closed');
      this.i++;
      return inner;
    }
    if (c === '[') return { t: 'set', r: this.charClass() };
    if (c === '.') {
      this.i++;
      return { t: 'set', r: DOT };
    }
    if (c === '*' || c === '+' || c === '?' || c === '{') this.fail(`nothing to repeat before ${c}`);
    if (c === '\\') {
      const e = this.escape(false);
      return { t: 'set', r: e };
    }
    const cp = this.src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return { t: 'set', r: [cp, cp] };
  }

  quantified(node: Node): Node {
    const c = this.peek();
    let min: number;
    let max: number;
    if (c === '*' || c === '+' || c === '?') {
      this.i++;
      min = c === '+' ? 1 : 0;
      max = c === '?' ? 1 : Number.POSITIVE_INFINITY;
    } else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i));
      if (!m) this.fail('a { that is not a quantifier (write \\{)');
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Number.POSITIVE_INFINITY : Number(m[3]);
      if (max < min) this.fail('a quantifier {m,n} needs m ≤ n');
      if (min > MAX_REPEAT || (max !== Number.POSITIVE_INFINITY && max > MAX_REPEAT))
        this.fail(`counts over ${MAX_REPEAT} are not supported`);
      this.i += m[0].length;
    } else return node;
    if (this.peek() === '?') this.i++; // lazy: the same strings
    const next = this.peek();
    if (next !== undefined && '*+?{'.includes(next)) this.fail('a quantifier cannot follow a quantifier');
    return { t: 'rep', node, min, max };
  }

  /** An escape at `\`; in a class, \b is a backspace. Returns its code points. */
  escape(inClass: boolean): Ranges {
    const e = this.src[this.i + 1];
    if (e === undefined) this.fail('the pattern ends in \\');
    this.i += 2;
    const one = (cp: number): Ranges => [cp, cp];
    switch (e) {
      case 'd':
        return DIGIT;
      case 'D':
        return complement(DIGIT);
      case 'w':
        return WORD;
      case 'W':
        return complement(WORD);
      case 's':
        return SPACE;
      case 'S':
        return complement(SPACE);
      case 'n':
        return one(10);
      case 'r':
        return one(13);
      case 't':
        return one(9);
      case 'v':
        return one(11);
      case 'f':
        return one(12);
      case '0':
        if (/\d/.test(this.peek() ?? '')) this.fail('octal escapes are not supported');
        return one(0);
      case 'x': {
        const h = /^[0-9a-fA-F]{2}/.exec(this.src.slice(this.i));
        if (!h) this.fail('\\x needs two hex digits');
        this.i += 2;
        return one(Number.parseInt(h[0], 16));
      }
      case 'u': {
        const braced = /^\{([0-9a-fA-F]{1,6})\}/.exec(this.src.slice(this.i));
        const h = braced ?? /^[0-9a-fA-F]{4}/.exec(this.src.slice(this.i));
        if (!h) this.fail('\\u needs four hex digits or {…}');
        this.i += h[0].length;
        const cp = Number.parseInt(braced ? braced[1] : h[0], 16);
        if (cp > MAX_CP) this.fail('a code point past U+10FFFF');
        return one(cp);
      }
      case 'b':
        if (inClass) return one(8);
        return this.fail('word boundaries (\\b) are not supported');
      default:
        if (/[1-9]/.test(e) || e === 'k') this.fail('backreferences are not supported');
        if (e === 'B' || e === 'c' || e === 'p' || e === 'P') this.fail(`\\${e} is not supported`);
        if (/[A-Za-z0-9]/.test(e)) this.fail(`unknown escape \\${e}`);
        return one(e.codePointAt(0)!);
    }
  }

  /** A class at `[`. */
  charClass(): Ranges {
    this.i++;
    const neg = this.peek() === '^';
    if (neg) this.i++;
    const r: Ranges = [];
    const item = (): Ranges | number => {
      if (this.peek() === '\\') {
        const e = this.escape(true);
        return e.length === 2 && e[0] === e[1] ? e[0] : e;
      }
      const cp = this.src.codePointAt(this.i)!;
      this.i += cp > 0xffff ? 2 : 1;
      return cp;
    };
    while (this.peek() !== ']') {
      if (this.peek() === undefined) this.fail('a class is not closed');
      const lo = item();
      if (this.peek() === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        this.i++;
        const hi = item();
        if (typeof lo !== 'number' || typeof hi !== 'number') this.fail('a range between classes');
        if (hi < lo) this.fail('a range runs backwards');
        r.push(lo, hi);
      } else if (typeof lo === 'number') r.push(lo, lo);
      else r.push(...lo);
    }
    this.i++;
    return neg ? complement(r) : normalize(r);
  }
}

const QUOTE: Ranges = [0x22, 0x22];
const BACKSLASH: Ranges = [0x5c, 0x5c];
const CONTROL: Ranges = [0x00, 0x1f];

/** A code point as a GBNF class member. */
function classChar(cp: number): string {
  if (cp < 0x20 || cp === 0x7f || cp === 0x5d || cp === 0x5c || cp === 0x2d || cp === 0x5e)
    return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (cp >= 0xd800 && cp <= 0xdfff) return `\\u${cp.toString(16)}`;
  return String.fromCodePoint(cp);
}

/** The JSON-string form of a set of characters: raw where JSON allows, escaped where it must. */
function jsonChars(r: Ranges): string {
  const alts: string[] = [];
  const raw = minus(r, [...QUOTE, ...BACKSLASH, ...CONTROL]);
  if (raw.length)
    alts.push(
      `[${Array.from({ length: raw.length / 2 }, (_, k) => {
        const [lo, hi] = [raw[2 * k], raw[2 * k + 1]];
        return lo === hi ? classChar(lo) : `${classChar(lo)}-${classChar(hi)}`;
      }).join('')}]`,
    );
  const has = (cp: number) => {
    for (let k = 0; k < r.length; k += 2) if (r[k] <= cp && cp <= r[k + 1]) return true;
    return false;
  };
  // JSON.stringify's escape of a character, as a GBNF literal
  const escaped = (cp: number) => {
    const s = JSON.stringify(String.fromCharCode(cp)).slice(1, -1);
    return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  };
  for (let cp = 0; cp <= 0x1f; cp++) if (has(cp)) alts.push(escaped(cp));
  if (has(0x22)) alts.push(escaped(0x22));
  if (has(0x5c)) alts.push(escaped(0x5c));
  if (alts.length === 0) return '[^\\x00-\\U0010FFFF]'; // matches nothing
  return alts.length === 1 ? alts[0] : `(${alts.join(' | ')})`;
}

function emit(n: Node): string {
  switch (n.t) {
    case 'set':
      return jsonChars(n.r);
    case 'seq':
      return n.items.length === 0 ? '""' : n.items.map(emit).join(' ');
    case 'alt':
      return `(${n.alts.map(emit).join(' | ')})`;
    case 'rep': {
      const body = `(${emit(n.node)})`;
      if (n.max === Number.POSITIVE_INFINITY)
        return n.min === 0 ? `${body}*` : n.min === 1 ? `${body}+` : `${body}{${n.min},}`;
      return n.min === 0 && n.max === 1 ? `${body}?` : `${body}{${n.min},${n.max}}`;
    }
  }
}

/** The contents (between the quotes) of the JSON strings whose value `pattern` matches. */
export function patternToGbnf(pattern: string, path: string): string {
  let src = pattern;
  const start = src.startsWith('^');
  if (start) src = src.slice(1);
  // a $ that is not escaped ends the pattern
  const end = /(^|[^\\])(\\\\)*\$$/.test(src);
  if (end) src = src.slice(0, -1);
  const p = new RegexParser(src, path);
  const node = p.alt();
  if (p.i !== src.length) p.fail('an unmatched )');
  // in `^a|b$` the anchors belong to the alternatives, not to the whole
  if ((start || end) && node.t === 'alt') p.fail('anchors with a | at the top: write ^(a|b)$');
  const any = `${jsonChars(complement([]))}*`;
  return [start ? '' : any, `(${emit(node)})`, end ? '' : any].filter(Boolean).join(' ');
}
