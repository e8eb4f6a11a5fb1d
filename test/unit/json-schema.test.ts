// JSON Schema → GBNF: random instances of each schema are taken whole and end the grammar; texts
// the schema rejects are refused; unsupported or malformed schemas fail with typed errors.
import * as pkg from 'bitnet-edge';
import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { parseGbnf } from '../../src/generate/grammar/gbnf.ts';
import { gbnfLiteral, jsonSchemaToGbnf } from '../../src/generate/grammar/json-schema.ts';
import { DEAD, GrammarMatcher } from '../../src/generate/grammar/matcher.ts';
import { integerRange, numberRange } from '../../src/generate/grammar/numeric-range.ts';
import { createRng } from '../../src/generate/prng.ts';
import { instance, valid } from '../helpers/schema-instances.ts';

const enc = new TextEncoder();
type S = Record<string, unknown>;

function verdict(schema: unknown, text: string) {
  const m = new GrammarMatcher(parseGbnf(jsonSchemaToGbnf(schema)));
  const taken = m.push(enc.encode(text));
  return { matches: taken && m.accepting(), finished: taken && m.finished() };
}

const SCHEMAS: S[] = [
  {
    type: 'object',
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 8 },
      age: { type: 'integer' },
      score: { type: 'number' },
      ok: { type: 'boolean' },
      tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, minItems: 1, maxItems: 3 },
      nick: { type: ['string', 'null'] },
    },
    required: ['name', 'age'],
  },
  { type: 'array', items: { type: 'object', properties: { k: { const: { deep: [1, 'x'] } } }, required: ['k'] } },
  {
    $defs: {
      node: {
        type: 'object',
        properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } },
        required: ['v'],
      },
    },
    $ref: '#/$defs/node',
  },
  {
    type: 'object',
    properties: { kind: { anyOf: [{ type: 'integer' }, { enum: ['x', null, true] }] } },
    additionalProperties: { type: 'number' },
    required: ['kind'],
  },
  { type: 'object', additionalProperties: true },
  { type: 'object' },
  {
    type: 'object',
    properties: {
      when: { type: 'string', format: 'date' },
      at: { type: 'string', format: 'date-time' },
      t: { type: 'string', format: 'time' },
      id: { type: 'string', format: 'uuid' },
    },
    required: ['when', 'at', 't', 'id'],
  },
  { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'string' }], items: false },
  { type: 'object', properties: { 'we"ird\\ key é': { type: 'boolean' } }, required: ['we"ird\\ key é'] },
  { type: 'object', properties: { a: { type: 'string', nullable: true }, b: { type: 'null' } }, required: ['a', 'b'] },
  { type: 'object', properties: {}, required: ['free'] },
  { type: 'string', maxLength: 3 },
];

describe('jsonSchemaToGbnf', () => {
  it('takes random instances of each schema, compact and indented, and ends where they end', () => {
    const rng = createRng(31);
    for (const schema of SCHEMAS) {
      for (let t = 0; t < 40; t++) {
        const v = instance(schema, rng);
        expect(valid(schema, v), JSON.stringify(v)).toBe(true);
        for (const indent of [0, 2]) {
          const text = JSON.stringify(v, null, indent);
          const r = verdict(schema, text);
          expect(r.matches, `${JSON.stringify(schema)} ⟵ ${text}`).toBe(true);
          if (typeof v === 'object' || typeof v === 'string') expect(r.finished, text).toBe(true);
        }
      }
    }
  });

  it('refuses texts the schema rejects', () => {
    const person = SCHEMAS[0];
    const bad: [unknown, string][] = [
      [person, '{"age":1}'], // required name missing
      [person, '{"name":"","age":1}'], // minLength 1
      [person, '{"name":"123456789","age":1}'], // maxLength 8
      [person, '{"name":"a","age":1.5}'], // integer
      [person, '{"name":"a","age":1,"tags":[]}'], // minItems 1
      [person, '{"name":"a","age":1,"tags":["a","b","c","a"]}'], // maxItems 3
      [person, '{"name":"a","age":1,"tags":["d"]}'], // enum
      [person, '{"name":"a","age":1,"extra":1}'], // additionalProperties false with properties
      [person, '{"age":1,"name":"a"}'], // order as written
      [person, '{"name":"a","age":01}'],
      [person, '{"name":"a","age":1,"ok":"true"}'],
      [SCHEMAS[3], '{"kind":"y"}'],
      [SCHEMAS[3], '{"kind":1,"x":"s"}'], // extras must be numbers
      [SCHEMAS[6], '{"when":"2024-13-01","at":"2024-01-01T00:00:00Z","t":"00:00:00Z","id":"x"}'],
      [SCHEMAS[7], '[1,"a",2]'],
      [SCHEMAS[7], '["a",1]'],
      [SCHEMAS[9], '{"a":"x"}'],
      [SCHEMAS[11], '"abcd"'],
    ];
    for (const [schema, text] of bad) {
      expect(verdict(schema, text).matches, `${JSON.stringify(schema)} ⟵ ${text}`).toBe(false);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        continue;
      }
      expect(valid(schema as S, parsed), text).toBe(false);
    }
    // valid JSON the grammar still refuses: its whitespace and digit bounds
    for (const [schema, text] of [
      [person, ' {"name":"a","age":1}'],
      [person, '{"name":"a",  "age":1}'],
      [{ type: 'object', properties: { a: { type: 'integer' } } }, '{"a":1,"a":1}'], // a key twice
      [person, '{"name":"a","age":12345678901234567}'], // 17 integer digits
      [{ type: 'number' }, '1.12345678901234567'], // 17 fraction digits
      [{ type: 'number' }, '1e1234'],
    ] as [unknown, string][])
      expect(verdict(schema, text).matches, text).toBe(false);
  });

  it('the package exports the converter and the GBNF parser', () => {
    expect(pkg.jsonSchemaToGbnf(SCHEMAS[0])).toBe(jsonSchemaToGbnf(SCHEMAS[0]));
    expect(pkg.parseGbnf('root ::= "a"').rules).toHaveLength(1);
  });

  it('true and {} take any value; a string literal is escaped for GBNF', () => {
    for (const s of [true, {}, { description: 'anything', title: 'x' }])
      for (const t of ['1', '"s"', 'null', '[{"a":[]}]', '{"b":false}']) expect(verdict(s, t).matches, t).toBe(true);
    expect(gbnfLiteral('a"b\\c\n\u007f é')).toBe('"a\\"b\\\\c\\x0a\\x7f é"');
    const m = new GrammarMatcher(parseGbnf(`root ::= ${gbnfLiteral('q"\\\n\u0001é')}`));
    expect(m.push(enc.encode('q"\\\n\u0001é')) && m.finished()).toBe(true);
  });

  it('refuses unsupported keywords and malformed schemas, saying where', () => {
    const cases: [unknown, string, string, RegExp][] = [
      [{ type: 'string', pattern: '^(?=a)' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /lookarounds/],
      [{ type: 'string', pattern: '^(a)\\1$' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /backreferences/],
      [{ type: 'string', pattern: '\\bword' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /word boundaries/],
      [{ type: 'string', pattern: 'a^b' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /only at the start or the end/],
      [{ type: 'string', pattern: '^a|b$' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /\^\(a\|b\)\$/],
      [{ type: 'string', pattern: '^a{2000}$' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /over 1000/],
      [{ type: 'string', pattern: '^(a$' }, 'UNSUPPORTED_JSON_SCHEMA', '/pattern', /not closed/],
      [
        { type: 'string', pattern: 'a', maxLength: 3 },
        'UNSUPPORTED_JSON_SCHEMA',
        '/',
        /pattern together with maxLength/,
      ],
      [{ pattern: 3 }, 'INVALID_JSON_SCHEMA', '/pattern', /a string/],
      [{ type: 'object', not: {} }, 'UNSUPPORTED_JSON_SCHEMA', '/', /keyword not/],
      [
        { properties: { n: { type: 'integer', multipleOf: 2 } } },
        'UNSUPPORTED_JSON_SCHEMA',
        '/properties/n',
        /multipleOf/,
      ],
      [{ type: 'number', minimum: 0.5 }, 'UNSUPPORTED_JSON_SCHEMA', '/minimum', /inclusive integers/],
      [{ type: 'number', exclusiveMinimum: 0 }, 'UNSUPPORTED_JSON_SCHEMA', '/exclusiveMinimum', /inclusive integers/],
      [{ type: 'integer', minimum: 3, exclusiveMaximum: 3 }, 'INVALID_JSON_SCHEMA', '/', /no integer lies within/],
      [{ type: 'integer', maximum: '9' }, 'INVALID_JSON_SCHEMA', '/maximum', /finite number/],
      [{ type: 'string', format: 'email' }, 'UNSUPPORTED_JSON_SCHEMA', '/format', /format "email"/],
      [{ allOf: [{}, {}] }, 'UNSUPPORTED_JSON_SCHEMA', '/allOf', /allOf/],
      [{ $ref: 'https://x/y.json' }, 'UNSUPPORTED_JSON_SCHEMA', '/$ref', /\$ref/],
      [{ type: 'array', prefixItems: [{}] }, 'UNSUPPORTED_JSON_SCHEMA', '/', /tuple/],
      [{ type: 'array', maxItems: 5000 }, 'UNSUPPORTED_JSON_SCHEMA', '/maxItems', /over 1000/],
      [{ type: 'strin' }, 'INVALID_JSON_SCHEMA', '/type', /"strin"/],
      [{ type: [] }, 'INVALID_JSON_SCHEMA', '/type', /no type/],
      [{ enum: [] }, 'INVALID_JSON_SCHEMA', '/enum', /non-empty/],
      [{ properties: [] }, 'INVALID_JSON_SCHEMA', '/properties', /object of schemas/],
      [{ required: 'a' }, 'INVALID_JSON_SCHEMA', '/required', /property names/],
      [{ type: 'string', minLength: -1 }, 'INVALID_JSON_SCHEMA', '/minLength', /non-negative/],
      [{ type: 'string', minLength: 3, maxLength: 2 }, 'INVALID_JSON_SCHEMA', '/', /below minLength/],
      [{ $ref: '#/$defs/none' }, 'INVALID_JSON_SCHEMA', '/$ref', /names no definition/],
      [{ items: { properties: { a: false } } }, 'INVALID_JSON_SCHEMA', '/items/properties/a', /matches no value/],
      [false, 'INVALID_JSON_SCHEMA', '/', /matches no value/],
      ['object', 'INVALID_JSON_SCHEMA', '/', /an object or a boolean/],
    ];
    for (const [schema, code, path, why] of cases) {
      let err: unknown;
      try {
        jsonSchemaToGbnf(schema);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(schema)).toBeInstanceOf(BitNetError);
      expect((err as BitNetError).code, JSON.stringify(schema)).toBe(code);
      expect((err as BitNetError).details.path, JSON.stringify(schema)).toBe(path);
      expect((err as BitNetError).message, JSON.stringify(schema)).toMatch(why);
    }
  });
});

describe('pattern', () => {
  it('takes exactly the strings RegExp(pattern, "u").test takes (random strings, as JSON)', () => {
    const patterns = [
      '^[A-Z]{2}-\\d{3}$',
      'abc',
      '^(a|bc)+$',
      '^\\w+@\\w+\\.(com|org)$',
      '^[^"\\\\]*$',
      '"',
      '^\\s?\\S*$',
      '^.{2,4}$',
      '^(?:x[yz]?){1,3}$',
      '^[\\u00e9-\\u00f0\\d]+$',
      '\\\\',
      '^a\\$$',
      '^😀.$',
      '^[\\n\\t"]+$',
      '^$',
      'a.c',
      '^(?<id>[a-c]+?)-\\x41*$',
    ];
    const alphabet = [
      'a',
      'b',
      'c',
      'x',
      'y',
      'z',
      'A',
      'Z',
      '-',
      '1',
      '9',
      '@',
      '.',
      'com',
      'org',
      '"',
      '\\',
      '\n',
      '\t',
      ' ',
      'é',
      'ñ',
      '😀',
      '$',
      '_',
    ];
    const rng = createRng(3);
    let matching = 0;
    for (const pattern of patterns) {
      const m = new GrammarMatcher(parseGbnf(jsonSchemaToGbnf({ type: 'string', pattern })));
      const re = new RegExp(pattern, 'u');
      for (let t = 0; t < 1000; t++) {
        const n = Math.floor(rng.nextFloat() * 7);
        const str = Array.from({ length: n }, () => alphabet[Math.floor(rng.nextFloat() * alphabet.length)]).join('');
        const s = m.walk(m.state, enc.encode(JSON.stringify(str)));
        const want = re.test(str);
        if (want) matching++;
        expect(s !== DEAD && m.accepting(s), `${pattern} ⟵ ${JSON.stringify(str)}`).toBe(want);
      }
      // the shortest instances RegExp finds are taken too
      for (const sample of [
        'AB-123',
        'abc',
        'bca',
        'a@b.org',
        '',
        '"',
        'x',
        'éé9',
        '\\',
        'a$',
        '😀!',
        '\n"',
        'abc',
        'ba-AA',
      ])
        if (re.test(sample))
          expect(verdict({ type: 'string', pattern }, JSON.stringify(sample)).matches, sample).toBe(true);
    }
    expect(matching).toBeGreaterThan(1000); // both verdicts are exercised
  });
});

describe('numeric bounds', () => {
  // one matcher per expression, every text walked from its start (the step cache is shared)
  const matchers = new Map<string, GrammarMatcher>();
  const takes = (expr: string, text: string) => {
    let m = matchers.get(expr);
    if (!m) matchers.set(expr, (m = new GrammarMatcher(parseGbnf(`root ::= ${expr}`))));
    const s = m.walk(m.state, enc.encode(text));
    return s !== DEAD && m.accepting(s);
  };
  const BOUNDS: [bigint | null, bigint | null][] = [
    [0n, 0n],
    [-5n, 5n],
    [7n, 123n],
    [-123n, -7n],
    [null, 42n],
    [-42n, null],
    [0n, null],
    [null, -1n],
    [95n, 1005n],
    [-1000n, -999n],
    [1n, 1n],
  ];
  it('integers: exactly those within the bounds, every value from -1300 to 1300', () => {
    for (const [lo, hi] of BOUNDS) {
      const g = integerRange(lo, hi);
      for (let v = -1300; v <= 1300; v++) {
        const want = (lo === null || BigInt(v) >= lo) && (hi === null || BigInt(v) <= hi);
        expect(takes(g, String(v)), `${v} in [${lo}, ${hi}]`).toBe(want);
      }
      for (const t of ['01', '-0', '+1', '1e2', '1.0']) expect(takes(g, t), t).toBe(false);
    }
    // zod's int(): the safe-integer bounds, at their edges
    const safe = integerRange(-9007199254740991n, 9007199254740991n);
    for (const t of ['9007199254740991', '-9007199254740991', '8999999999999999', '0'])
      expect(takes(safe, t), t).toBe(true);
    for (const t of ['9007199254740992', '-9007199254740992', '10000000000000000'])
      expect(takes(safe, t), t).toBe(false);
  });

  it('numbers: integer bounds with any fraction inside, a zero one at a bound', () => {
    for (const [lo, hi] of BOUNDS) {
      const g = numberRange(lo, hi);
      for (let v = -1300; v <= 1300; v += 1)
        for (const t of [`${v}`, `${v}.5`, `${v}.0`, `${v}.000`, `${v}.25`, v === 0 ? '-0.5' : `${v}.75`]) {
          const x = Number(t);
          const want = (lo === null || x >= Number(lo)) && (hi === null || x <= Number(hi));
          expect(takes(g, t), `${t} in [${lo}, ${hi}]`).toBe(want);
        }
    }
    expect(takes(numberRange(0n, 1n), '1e0')).toBe(false); // no exponent within bounds
  });

  it('a schema with bounds, as zod writes them (the OpenAI SDK turns int() into the safe-integer bounds)', () => {
    const s = {
      type: 'object',
      properties: {
        n: { type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 },
        pct: { type: 'number', minimum: 0, maximum: 100 },
        k: { type: 'integer', exclusiveMinimum: 0.5, exclusiveMaximum: 10 },
      },
      required: ['n', 'pct', 'k'],
      additionalProperties: false,
    };
    expect(verdict(s, '{"n":-12,"pct":99.5,"k":1}').matches).toBe(true);
    expect(verdict(s, '{"n":-12,"pct":100.0,"k":9}').matches).toBe(true);
    expect(verdict(s, '{"n":-12,"pct":100.5,"k":9}').matches).toBe(false);
    expect(verdict(s, '{"n":-12,"pct":-0.5,"k":9}').matches).toBe(false);
    expect(verdict(s, '{"n":-12,"pct":1,"k":0}').matches).toBe(false);
    expect(verdict(s, '{"n":-12,"pct":1,"k":10}').matches).toBe(false);
  });
});
