// GBNF grammars: the parser's notation and faults, and the matcher over UTF-8 bytes (JSON mode's
// grammar is checked against JSON.parse in json-mode.test.ts).
import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { parseGbnf } from '../../src/generate/grammar/gbnf.ts';
import { DEAD, GrammarMatcher, MAX_STACKS } from '../../src/generate/grammar/matcher.ts';

const enc = new TextEncoder();

/** Whether the grammar takes the whole text (bytes cut at `cuts`), and whether it may stop there. */
function run(grammar: string, text: string | Uint8Array, cuts: number[] = []) {
  const m = new GrammarMatcher(parseGbnf(grammar));
  const bytes = typeof text === 'string' ? enc.encode(text) : text;
  let at = 0;
  for (const end of [...cuts.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length]) {
    if (end > at && !m.push(bytes.subarray(at, end))) return { taken: false, accepting: false, finished: false };
    at = end;
  }
  return { taken: true, accepting: m.accepting(), finished: m.finished() };
}
const matches = (grammar: string, text: string | Uint8Array) => run(grammar, text).accepting;

describe('GBNF notation', () => {
  it('literals, classes, any, groups, alternatives and every repetition', () => {
    const cases: [string, string[], string[]][] = [
      ['root ::= "ab" | "c"', ['ab', 'c'], ['', 'a', 'abc', 'b']],
      ['root ::= [a-c0-1_]+', ['a', 'cab01_', '1'], ['', 'd', 'a-']],
      ['root ::= [^a-z\\n]', ['A', '-', 'é', '😀'], ['q', '\n', 'AB']],
      ['root ::= . .', ['ab', 'é😀', '\n\t'], ['a', 'abc']],
      ['root ::= "x"? "y"* "z"+', ['z', 'xzz', 'yyyz', 'xyz'], ['', 'x', 'xxz', 'zy']],
      ['root ::= "a"{3}', ['aaa'], ['aa', 'aaaa']],
      ['root ::= "a"{2,}', ['aa', 'aaaaaaa'], ['a']],
      ['root ::= "a"{0,2} "b"', ['b', 'ab', 'aab'], ['aaab']],
      ['root ::= ("ab" | "c"){1,2} "."', ['ab.', 'cab.', 'cc.'], ['.', 'ababab.', 'a.']],
      ['root ::= "\\x41\\u00e9\\U0001F600\\t\\"\\\\\\[\\]"', ['Aé😀\t"\\[]'], ['A']],
      ['root ::= [\\]\\-\\\\]+', [']-\\', '-'], ['a']],
      ['root ::= [a-]', ['a', '-'], ['b']],
    ];
    for (const [g, yes, no] of cases) {
      for (const t of yes) expect(matches(g, t), `${g} ⟵ ${JSON.stringify(t)}`).toBe(true);
      for (const t of no) expect(matches(g, t), `${g} ⟵ ${JSON.stringify(t)}`).toBe(false);
    }
  });

  it('rules on several lines, comments, names with - and _, forward references', () => {
    const g = `# a greeting
root ::= greet ws
  ( "world"   # the usual one
  | name )
greet ::= "hello" | "hi"
ws ::= " "
name ::= [A-Z] [a-z_-]*
`;
    expect(matches(g, 'hello world')).toBe(true);
    expect(matches(g, 'hi Ann-marie_x')).toBe(true);
    expect(matches(g, 'hi ann')).toBe(false);
  });

  it('says where a grammar is wrong, with a typed error', () => {
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['root ::= a', /rule a is not defined \(line 1, column 10\)/],
      ['x ::= "a"', /no root rule/],
      ['root ::= "a"\nroot ::= "b"', /defined twice \(line 2/],
      ['root ::= "a', /unterminated literal/],
      ['root ::= "a\n"', /unterminated literal/],
      ['root ::= [ab', /unterminated character class/],
      ['root ::= [b-a]', /runs backwards/],
      ['root ::= "\\q"', /unknown escape \\q/],
      ['root ::= "\\x4"', /needs 2 hex digits/],
      ['root ::= "\\U00110000"', /past U\+10FFFF/],
      ['root ::= ("a"', /expected \)/],
      ['root ::= "a"**', /repetition of a repetition/],
      ['root ::= "a"{3,2}', /m ≤ n/],
      ['root ::= "a"{1001}', /limited to 1000/],
      ['root ::= "a" @', /unexpected "@"/],
      ['root = "a"', /expected ::=/],
      ['root ::= root "a"', /rule root is left-recursive/],
      ['root ::= x\nx ::= "b"? y\ny ::= x "c"', /left-recursive/],
      ['root ::= ("a"?)* "b"', /left-recursive/],
    ];
    for (const [g, why] of bad) {
      let err: unknown;
      try {
        parseGbnf(g);
      } catch (e) {
        err = e;
      }
      expect(err, g).toBeInstanceOf(BitNetError);
      expect((err as BitNetError).code, g).toBe('INVALID_GRAMMAR');
      expect((err as BitNetError).message, g).toMatch(why);
    }
  });
});

describe('GrammarMatcher', () => {
  it('accepting: the grammar may stop here; finished: nothing can follow', () => {
    const g = 'root ::= "a" "b"?';
    expect(run(g, 'a')).toEqual({ taken: true, accepting: true, finished: false });
    expect(run(g, 'ab')).toEqual({ taken: true, accepting: true, finished: true });
    expect(run(g, 'abb').taken).toBe(false);
    expect(run('root ::= "x"*', '')).toEqual({ taken: true, accepting: true, finished: false });
  });

  it('reads UTF-8: characters split across pieces, and no invalid or overlong bytes', () => {
    const g = 'root ::= [é-ë] [😀-😂]';
    const text = enc.encode('ê😁');
    for (let cut = 1; cut < text.length; cut++) expect(run(g, text, [cut]).accepting).toBe(true);
    // a piece ending inside a character is taken only if a character of the class can start so
    const m = new GrammarMatcher(parseGbnf(g));
    expect(m.step(m.state, 0xc3)).not.toBe(DEAD); // é..ë are C3 A9..C3 AB
    expect(m.step(m.state, 0xc4)).toBe(DEAD);
    expect(m.walk(m.state, Uint8Array.of(0xc3, 0xa8))).toBe(DEAD); // è
    // overlong forms of "{" (C1 BB, E0 81 BB) and stray continuation bytes are refused
    const any = 'root ::= .+';
    expect(matches(any, Uint8Array.of(0xc1, 0xbb))).toBe(false);
    expect(matches(any, Uint8Array.of(0xe0, 0x81, 0xbb))).toBe(false);
    expect(matches(any, Uint8Array.of(0xbb))).toBe(false);
    expect(matches(any, Uint8Array.of(0xf4, 0x90, 0x80, 0x80))).toBe(false); // past U+10FFFF
    expect(matches(any, enc.encode('a\u{10FFFF}é'))).toBe(true);
  });

  it('x* runs in constant stack depth: a long match costs no more states than a short one', () => {
    const m = new GrammarMatcher(parseGbnf('root ::= "[" [a-z]* "]"'));
    expect(m.push(enc.encode('[abc'))).toBe(true);
    const s = m.state;
    expect(m.push(enc.encode('x'.repeat(5000)))).toBe(true);
    expect(m.state).toBe(s);
  });

  it('refuses a grammar whose live parses blow up', () => {
    // after n "a"s, 2^n distinct stacks of pending "b"/"c"
    const m = new GrammarMatcher(parseGbnf('root ::= s\ns ::= "a" s "b" | "a" s "c" | "."'));
    let err: unknown;
    try {
      m.push(enc.encode('a'.repeat(Math.log2(MAX_STACKS) + 2)));
    } catch (e) {
      err = e;
    }
    expect((err as BitNetError).code).toBe('GRAMMAR_TOO_AMBIGUOUS');
    // and one that needs more states than a matcher may keep
    const small = new GrammarMatcher(parseGbnf('root ::= "a"{0,500}'), { maxStates: 100 });
    expect(small.push(enc.encode('a'.repeat(90)))).toBe(true);
    expect(() => small.push(enc.encode('a'.repeat(20)))).toThrow(
      expect.objectContaining({ code: 'GRAMMAR_TOO_COMPLEX' }),
    );
  });
});
