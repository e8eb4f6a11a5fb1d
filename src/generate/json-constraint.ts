/**
 * JSON mode (OpenAI's `response_format: {type: "json_object"}`): a byte-level recognizer of one
 * JSON object (RFC 8259), used to allow at each step only the tokens whose bytes keep the text a
 * prefix of a valid object. Generation ends when the object closes.
 *
 * The recognizer reads UTF-8 bytes: outside strings only JSON's ASCII syntax; inside strings any
 * byte ≥ 0x20 except an unescaped `"` or `\`, with the escapes `\" \\ \/ \b \f \n \r \t` and `\u`
 * with four hex digits (bytes ≥ 0x80 pass as they are: a token may hold part of a character). Two limits keep a weak
 * model from looping inside the grammar, as llama.cpp's json.gbnf does: nesting depth ≤ MAX_DEPTH,
 * and whitespace between tokens is one space, or a newline and up to MAX_INDENT spaces or tabs
 * (none before the object; JSON itself allows any run of space, tab, CR and LF).
 *
 * `accepts(bytes)` simulates without changing the state (the per-step mask tries every token);
 * `push(bytes)` commits one.
 */

export const MAX_DEPTH = 32;
export const MAX_INDENT = 20;

// Where the recognizer is (plain numbers: enums are not erasable TypeScript).
const M = {
  /** Before the top-level object (whitespace, then `{`). */
  Start: 0,
  /** Expecting a value (after `:`, or after `,` in an array). */
  Value: 1,
  /** In an object, after `{`: a key or `}`. */
  KeyOrEnd: 2,
  /** In an object, after `,`: a key. */
  Key: 3,
  /** After a key string: `:`. */
  Colon: 4,
  /** After a value inside a container: `,` or the closer. */
  After: 5,
  /** In an array, right after `[`: a value or `]`. */
  ValueOrEnd: 6,
  /** Inside a string (key or value); `esc` and `hex` say where in an escape. */
  Str: 7,
  /** In a number; `num` says which part. */
  Num: 8,
  /** In a literal (true/false/null); `lit` and `litAt` say which and how far. */
  Lit: 9,
  /** The top-level object closed. */
  Done: 10,
} as const;
type M = (typeof M)[keyof typeof M];

// The part of a number read so far.
const N = { Minus: 0, Zero: 1, Int: 2, Dot: 3, Frac: 4, E: 5, ESign: 6, Exp: 7 } as const;
type N = (typeof N)[keyof typeof N];

const LITERALS = ['true', 'false', 'null'];
const OBJ = 1;
const ARR = 2;

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** The recognizer's scalar state (the stack is kept apart, so a simulation copies only this). */
interface S {
  m: M;
  /** In a string: it is a key (the object then wants `:`). */
  key: boolean;
  esc: boolean;
  hex: number;
  num: N;
  lit: number;
  litAt: number;
  /** The whitespace run so far: 0 none, -1 a space (closed), n ≥ 1 a newline and n − 1 indent bytes. */
  ws: number;
}

export class JsonObjectConstraint {
  private s: S = { m: M.Start, key: false, esc: false, hex: 0, num: N.Minus, lit: 0, litAt: 0, ws: 0 };
  /** Open containers, innermost last (OBJ / ARR). */
  private readonly stack: number[] = [];

  /** The top-level object has closed. */
  get done(): boolean {
    return this.s.m === M.Done;
  }

  /** Whether these bytes, appended, keep the text a prefix of one JSON object. State unchanged. */
  accepts(bytes: Uint8Array): boolean {
    if (bytes.length === 0) return false;
    return this.run(bytes, false);
  }

  /** Appends bytes; returns false (and leaves the state as it was) when they would break the JSON. */
  push(bytes: Uint8Array): boolean {
    if (!this.run(bytes, false)) return false;
    this.run(bytes, true);
    return true;
  }

  /**
   * Feeds bytes from the current state. Without `commit`, pushes go to a local overlay and pops
   * below it only move a depth pointer, so the real stack is untouched.
   */
  private run(bytes: Uint8Array, commit: boolean): boolean {
    const s: S = commit ? this.s : { ...this.s };
    // the stack as this run sees it: base[0..baseLen) then `over` (pushes of a simulation)
    const base = this.stack;
    const over: number[] = [];
    let baseLen = base.length;
    const depth = (): number => baseLen + over.length;
    const top = (): number => (over.length > 0 ? over[over.length - 1] : baseLen > 0 ? base[baseLen - 1] : 0);
    const push = (c: number): boolean => {
      if (depth() >= MAX_DEPTH) return false;
      if (commit) {
        base.push(c);
        baseLen++;
      } else over.push(c);
      return true;
    };
    const pop = (): void => {
      if (over.length > 0) over.pop();
      else {
        baseLen--;
        if (commit) base.pop();
      }
    };
    /** After a complete value: `,`/closer inside a container, or done at the top. */
    const valueEnded = (): void => {
      s.m = depth() === 0 ? M.Done : M.After;
      s.ws = 0;
    };
    /** Starts a value at byte b (s.m is Value / ValueOrEnd). */
    const startValue = (b: number): boolean => {
      s.ws = 0;
      if (b === 0x7b) {
        if (!push(OBJ)) return false;
        s.m = M.KeyOrEnd;
        return true;
      }
      if (b === 0x5b) {
        if (!push(ARR)) return false;
        s.m = M.ValueOrEnd;
        return true;
      }
      if (b === 0x22) {
        s.m = M.Str;
        s.key = false;
        s.esc = false;
        s.hex = 0;
        return true;
      }
      if (b === 0x2d || isDigit(b)) {
        s.m = M.Num;
        s.num = b === 0x2d ? N.Minus : b === 0x30 ? N.Zero : N.Int;
        return true;
      }
      const lit = b === 0x74 ? 0 : b === 0x66 ? 1 : b === 0x6e ? 2 : -1;
      if (lit < 0) return false;
      s.m = M.Lit;
      s.lit = lit;
      s.litAt = 1;
      return true;
    };
    /** One whitespace byte b (known to be JSON whitespace) in the current run. */
    const space = (b: number): boolean => {
      if (s.ws === 0) {
        if (b === 0x20) s.ws = -1;
        else if (b === 0x0a) s.ws = 1;
        else return false;
        return true;
      }
      if (s.ws > 0 && (b === 0x20 || b === 0x09) && s.ws <= MAX_INDENT) {
        s.ws++;
        return true;
      }
      return false;
    };

    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      switch (s.m) {
        case M.Done:
          return false;
        case M.Start:
          if (b === 0x7b) {
            if (!push(OBJ)) return false;
            s.m = M.KeyOrEnd;
            s.ws = 0;
          } else return false;
          break;
        case M.Value:
        case M.ValueOrEnd:
          if (isWs(b)) {
            if (!space(b)) return false;
          } else if (b === 0x5d && s.m === M.ValueOrEnd) {
            pop();
            valueEnded();
          } else if (!startValue(b)) return false;
          break;
        case M.KeyOrEnd:
        case M.Key:
          if (isWs(b)) {
            if (!space(b)) return false;
          } else if (b === 0x22) {
            s.m = M.Str;
            s.key = true;
            s.esc = false;
            s.hex = 0;
            s.ws = 0;
          } else if (b === 0x7d && s.m === M.KeyOrEnd) {
            pop();
            valueEnded();
          } else return false;
          break;
        case M.Colon:
          if (isWs(b)) {
            if (!space(b)) return false;
          } else if (b === 0x3a) {
            s.m = M.Value;
            s.ws = 0;
          } else return false;
          break;
        case M.After:
          if (isWs(b)) {
            if (!space(b)) return false;
          } else if (b === 0x2c) {
            s.m = top() === OBJ ? M.Key : M.Value;
            s.ws = 0;
          } else if ((b === 0x7d && top() === OBJ) || (b === 0x5d && top() === ARR)) {
            pop();
            valueEnded();
          } else return false;
          break;
        case M.Str:
          if (s.hex > 0) {
            if (!isHex(b)) return false;
            s.hex--;
          } else if (s.esc) {
            if (b === 0x75) s.hex = 4;
            else if (!'"\\/bfnrt'.includes(String.fromCharCode(b))) return false;
            s.esc = false;
          } else if (b === 0x5c) s.esc = true;
          else if (b === 0x22) {
            if (s.key) {
              s.m = M.Colon;
              s.ws = 0;
            } else valueEnded();
          } else if (b < 0x20) return false;
          break;
        case M.Num: {
          const n = s.num;
          if (isDigit(b)) {
            if (n === N.Minus) s.num = b === 0x30 ? N.Zero : N.Int;
            else if (n === N.Zero) return false;
            else if (n === N.Dot) s.num = N.Frac;
            else if (n === N.E || n === N.ESign) s.num = N.Exp;
            // Int, Frac, Exp: more digits
          } else if (b === 0x2e && (n === N.Zero || n === N.Int)) s.num = N.Dot;
          else if ((b === 0x65 || b === 0x45) && (n === N.Zero || n === N.Int || n === N.Frac)) s.num = N.E;
          else if ((b === 0x2b || b === 0x2d) && n === N.E) s.num = N.ESign;
          else {
            // the number ends here if it is complete; this byte then belongs to what follows
            if (!(n === N.Zero || n === N.Int || n === N.Frac || n === N.Exp)) return false;
            valueEnded();
            i--;
          }
          break;
        }
        case M.Lit: {
          const word = LITERALS[s.lit];
          if (b !== word.charCodeAt(s.litAt)) return false;
          if (++s.litAt === word.length) valueEnded();
          break;
        }
      }
    }
    return true;
  }
}
