/**
 * JSON Schema → GBNF (gbnf.ts), for OpenAI's `response_format: {type: "json_schema"}`.
 *
 * The output is one JSON value with JSON mode's bounded whitespace and strings (json-grammar.ts). What is
 * supported, and how:
 * - `type` (one or a list), `enum`, `const`, `nullable` (OpenAPI), `anyOf`, `oneOf` (as anyOf:
 *   a grammar cannot check that exactly one branch matches), `allOf` of one schema;
 * - objects: `properties` in the order written, the `required` ones always, the others optional
 *   (a property of `required` missing from `properties` takes any value, after them);
 *   `additionalProperties` false when `properties` is given and it is absent (as llama.cpp does:
 *   a model told the keys should not invent others), else true or a schema; extra keys come after
 *   the declared ones and may be any string;
 * - arrays: `items`, `minItems`, `maxItems`, and `prefixItems` with `items: false` (a tuple);
 * - strings: `minLength`, `maxLength`, `format` date, time, date-time and uuid, `pattern` (regex.ts);
 * - numbers: at most 16 integer digits, 16 fraction digits and 3 exponent digits (a weak model can
 *   otherwise write digits forever); `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`
 *   exactly on integers (numeric-range.ts), and inclusive integer bounds on numbers (written then
 *   without an exponent);
 * - `$ref` to `#`, `#/$defs/…` or `#/definitions/…` (recursion included);
 * - annotations (`title`, `description`, `default`, `examples`, `$schema`, `$id`, `$comment`,
 *   `readOnly`, `writeOnly`, `deprecated`, `strict`) are ignored.
 * Any other keyword (`multipleOf`, `not`, `if`, …) is refused with UNSUPPORTED_JSON_SCHEMA
 * naming it and where it is, rather than generating output the schema would reject.
 */
import { BitNetError } from '../../errors.ts';
import { MAX_REPEAT } from './gbnf.ts';
import { CHAR_RULE, STRING_RULE, WS_RULE } from './json-grammar.ts';
import { integerRange, MAX_MAGNITUDE, numberRange } from './numeric-range.ts';
import { patternToGbnf } from './regex.ts';

type Schema = Record<string, unknown> | boolean;

const ANNOTATIONS = new Set([
  'title',
  'description',
  'default',
  'examples',
  '$schema',
  '$id',
  '$comment',
  'readOnly',
  'writeOnly',
  'deprecated',
  'strict',
  '$defs',
  'definitions',
]);
const HANDLED = new Set([
  'type',
  'enum',
  'const',
  'nullable',
  'anyOf',
  'oneOf',
  'allOf',
  '$ref',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'format',
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
]);
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];

/** The building blocks every schema grammar may use (added only when used). */
const PRIMITIVES: Record<string, string> = {
  ws: WS_RULE,
  char: CHAR_RULE,
  string: STRING_RULE,
  integer: `"-"? ([0] | [1-9] [0-9]{0,15})`,
  number: `integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?`,
  boolean: `"true" | "false"`,
  null: `"null"`,
  value: `object | array | string | number | boolean | null`,
  object: `"{" ws (member ("," ws member)*)? "}"`,
  member: `string ws ":" ws value ws`,
  array: `"[" ws (value ws ("," ws value ws)*)? "]"`,
  'date-body': `[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])`,
  'time-body': `([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])`,
  hex: `[0-9a-fA-F]`,
};
const PRIMITIVE_DEPS: Record<string, string[]> = {
  string: ['char'],
  number: ['integer'],
  value: ['object', 'array', 'string', 'number', 'boolean', 'null'],
  object: ['ws', 'member'],
  member: ['string', 'ws', 'value'],
  array: ['ws', 'value'],
};
const FORMATS: Record<string, { body: string; deps: string[] }> = {
  date: { body: `"\\"" date-body "\\""`, deps: ['date-body'] },
  time: { body: `"\\"" time-body "\\""`, deps: ['time-body'] },
  'date-time': { body: `"\\"" date-body "T" time-body "\\""`, deps: ['date-body', 'time-body'] },
  uuid: { body: `"\\"" hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12} "\\""`, deps: ['hex'] },
};

/** A GBNF string literal holding exactly `s`. */
export function gbnfLiteral(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** `e` as one item of a sequence: parenthesised when it has alternatives. */
const group = (e: string) => (e.includes('|') ? `(${e})` : e);

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const ptr = (path: string, key: string | number) => `${path}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;

function invalid(path: string, message: string): never {
  throw BitNetError.Config('INVALID_JSON_SCHEMA', `json schema at ${path || '/'}: ${message}`, {
    path: path || '/',
  });
}

class Converter {
  readonly rules: Map<string, string>;
  private readonly refRules = new Map<string, string>();
  private readonly root: Schema;
  private readonly prefix: string;

  /** `rules` may be shared by several converters (one per schema), each with its own rule-name prefix. */
  constructor(root: Schema, rules = new Map<string, string>(), prefix = 's') {
    this.root = root;
    this.rules = rules;
    this.prefix = prefix;
  }

  use(name: string): string {
    if (!this.rules.has(name)) {
      if (name in PRIMITIVES) {
        this.rules.set(name, PRIMITIVES[name]);
        for (const d of PRIMITIVE_DEPS[name] ?? []) this.use(d);
      }
    }
    return name;
  }

  /** A fresh rule name for a schema at `path`. */
  name(path: string): string {
    const base =
      path
        .replace(/[^a-zA-Z0-9]+/g, '-')
        .replace(/^-|-$/g, '')
        .slice(-40) || 'root';
    let n = `${this.prefix}-${base}`;
    for (let i = 2; this.rules.has(n) || n in PRIMITIVES; i++) n = `${this.prefix}-${base}-${i}`;
    this.rules.set(n, ''); // reserved until defined
    return n;
  }

  define(name: string, body: string): string {
    this.rules.set(name, body);
    return name;
  }

  /** A GBNF expression matching the schema at `path`. */
  expr(s: unknown, path: string): string {
    if (s === true) return this.use('value');
    if (s === false) invalid(path, 'false matches no value');
    if (!isObj(s)) invalid(path, 'a schema is an object or a boolean');
    for (const k of Object.keys(s))
      if (!HANDLED.has(k) && !ANNOTATIONS.has(k))
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${path || '/'}: the keyword ${k} is not supported (supported: ${[...HANDLED].join(', ')})`,
          { path: path || '/', keyword: k },
        );
    const alt = (e: string) => (s.nullable === true ? `(${e}) | ${this.use('null')}` : e);
    if ('$ref' in s) return alt(this.ref(s.$ref, ptr(path, '$ref')));
    if ('const' in s) return alt(this.literal(s.const));
    if ('enum' in s) {
      if (!Array.isArray(s.enum) || s.enum.length === 0) invalid(ptr(path, 'enum'), 'enum is a non-empty array');
      return alt(s.enum.map((v) => group(this.literal(v))).join(' | '));
    }
    for (const k of ['anyOf', 'oneOf', 'allOf'] as const) {
      if (!(k in s)) continue;
      const list = s[k];
      if (!Array.isArray(list) || list.length === 0) invalid(ptr(path, k), `${k} is a non-empty array of schemas`);
      if (k === 'allOf' && list.length > 1)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${ptr(path, k)}: allOf of more than one schema is not supported`,
          { path: ptr(path, k), keyword: k },
        );
      return alt(list.map((sub, i) => `(${this.expr(sub, ptr(ptr(path, k), i))})`).join(' | '));
    }
    let types: string[];
    if (s.type === undefined) {
      // no type: from the keywords that imply one, else any value
      if ('properties' in s || 'additionalProperties' in s || 'required' in s) types = ['object'];
      else if ('items' in s || 'prefixItems' in s) types = ['array'];
      else if ('format' in s || 'pattern' in s || 'minLength' in s || 'maxLength' in s) types = ['string'];
      else return alt(this.use('value'));
    } else types = Array.isArray(s.type) ? s.type : [s.type];
    for (const t of types)
      if (typeof t !== 'string' || !TYPES.includes(t))
        invalid(ptr(path, 'type'), `type ${JSON.stringify(t)} is not one of ${TYPES.join(', ')}`);
    if (types.length === 0) invalid(ptr(path, 'type'), 'type lists no type');
    const parts = types.map((t) => this.typed(t, s, path));
    return alt(parts.length === 1 ? parts[0] : parts.map((p) => `(${p})`).join(' | '));
  }

  /** Exactly this JSON value, with the bounded whitespace between an array's or object's tokens. */
  private literal(v: unknown): string {
    if (v === null || typeof v !== 'object') return gbnfLiteral(JSON.stringify(v));
    const ws = this.use('ws');
    const parts = Array.isArray(v)
      ? v.map((x) => `${group(this.literal(x))} ${ws}`)
      : Object.entries(v).map(
          ([k, x]) => `${gbnfLiteral(JSON.stringify(k))} ${ws} ":" ${ws} ${group(this.literal(x))} ${ws}`,
        );
    const [open, close] = Array.isArray(v) ? ['"["', '"]"'] : ['"{"', '"}"'];
    return `${open} ${ws} ${parts.join(` "," ${ws} `)} ${close}`;
  }

  private typed(t: string, s: Record<string, unknown>, path: string): string {
    switch (t) {
      case 'object':
        return this.object(s, path);
      case 'array':
        return this.array(s, path);
      case 'string':
        return this.string(s, path);
      case 'integer':
      case 'number':
        return this.bounded(t, s, path);
      default:
        return this.use(t);
    }
  }

  /**
   * An integer or a number within minimum / maximum / exclusiveMinimum / exclusiveMaximum. Integers
   * take any bounds; numbers take inclusive integer bounds only (then without an exponent).
   */
  private bounded(t: 'integer' | 'number', s: Record<string, unknown>, path: string): string {
    const keys = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'].filter((k) => s[k] !== undefined);
    if (keys.length === 0) return this.use(t);
    for (const k of keys)
      if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) invalid(ptr(path, k), `${k} is a finite number`);
    const b = (k: string) => s[k] as number | undefined;
    if (t === 'number') {
      const bad = keys.find((k) => k.startsWith('exclusive') || !Number.isInteger(s[k]));
      if (bad)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${ptr(path, bad)}: a number's bounds must be inclusive integers (minimum, maximum); ${bad} ${s[bad]} is not supported (an integer type takes any bounds)`,
          { path: ptr(path, bad), keyword: bad },
        );
    }
    // the inclusive integer bounds, clamped to the digits an integer may have
    const los = [
      b('minimum') === undefined ? undefined : Math.ceil(b('minimum')!),
      b('exclusiveMinimum') === undefined ? undefined : Math.floor(b('exclusiveMinimum')!) + 1,
    ];
    const his = [
      b('maximum') === undefined ? undefined : Math.floor(b('maximum')!),
      b('exclusiveMaximum') === undefined ? undefined : Math.ceil(b('exclusiveMaximum')!) - 1,
    ];
    const clamp = (x: number) => {
      const v = BigInt(x);
      return v > MAX_MAGNITUDE ? MAX_MAGNITUDE : v < -MAX_MAGNITUDE ? -MAX_MAGNITUDE : v;
    };
    // the tightest of each side (bigints: Math.max does not take them)
    let lo: bigint | null = null;
    let hi: bigint | null = null;
    for (const x of los) if (x !== undefined && (lo === null || clamp(x) > lo)) lo = clamp(x);
    for (const x of his) if (x !== undefined && (hi === null || clamp(x) < hi)) hi = clamp(x);
    if (lo !== null && hi !== null && lo > hi) invalid(path, `no ${t} lies within the bounds`);
    return t === 'integer' ? integerRange(lo, hi) : numberRange(lo, hi);
  }

  private count(s: Record<string, unknown>, key: string, path: string): number | undefined {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      invalid(ptr(path, key), `${key} is a non-negative integer`);
    if (v > MAX_REPEAT)
      throw BitNetError.Config(
        'UNSUPPORTED_JSON_SCHEMA',
        `json schema at ${ptr(path, key)}: ${key} over ${MAX_REPEAT} is not supported`,
        { path: ptr(path, key), keyword: key },
      );
    return v;
  }

  private string(s: Record<string, unknown>, path: string): string {
    if (s.pattern !== undefined) {
      if (typeof s.pattern !== 'string') invalid(ptr(path, 'pattern'), 'pattern is a string');
      const other = ['format', 'minLength', 'maxLength'].find((k) => k in s);
      if (other)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${path || '/'}: pattern together with ${other} is not supported`,
          { path: path || '/', keyword: other },
        );
      return `"\\"" ${patternToGbnf(s.pattern, ptr(path, 'pattern'))} "\\""`;
    }
    if (s.format !== undefined) {
      const f = typeof s.format === 'string' ? FORMATS[s.format] : undefined;
      if (!f)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${ptr(path, 'format')}: format ${JSON.stringify(s.format)} is not supported (supported: ${Object.keys(FORMATS).join(', ')})`,
          { path: ptr(path, 'format'), keyword: 'format' },
        );
      for (const d of f.deps) this.use(d);
      return f.body;
    }
    const min = this.count(s, 'minLength', path) ?? 0;
    const max = this.count(s, 'maxLength', path);
    if (min === 0 && max === undefined) return this.use('string');
    if (max !== undefined && max < min) invalid(path, 'maxLength is below minLength');
    this.use('char');
    return `"\\"" char{${min},${max ?? ''}} "\\""`;
  }

  private array(s: Record<string, unknown>, path: string): string {
    const ws = this.use('ws');
    if (s.prefixItems !== undefined) {
      if (!Array.isArray(s.prefixItems)) invalid(ptr(path, 'prefixItems'), 'prefixItems is an array of schemas');
      if (s.items !== false || 'minItems' in s || 'maxItems' in s)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${path || '/'}: prefixItems is supported only as a tuple (with items: false, no minItems or maxItems)`,
          { path: path || '/', keyword: 'prefixItems' },
        );
      const items = s.prefixItems.map((sub, i) => `${group(this.expr(sub, ptr(ptr(path, 'prefixItems'), i)))} ${ws}`);
      return `"[" ${ws} ${items.length ? items.join(` "," ${ws} `) : ''} "]"`;
    }
    const item = s.items === undefined || s.items === true ? this.use('value') : this.expr(s.items, ptr(path, 'items'));
    const min = this.count(s, 'minItems', path) ?? 0;
    const max = this.count(s, 'maxItems', path);
    if (max !== undefined && max < min) invalid(path, 'maxItems is below minItems');
    if (max === 0) return `"[" ${ws} "]"`;
    const one = this.define(this.name(ptr(path, 'item')), `${group(item)} ${ws}`);
    const more = `("," ${ws} ${one}){${Math.max(min - 1, 0)},${max === undefined ? '' : max - 1}}`;
    const list = `${one} ${more}`;
    return min === 0 ? `"[" ${ws} (${list})? "]"` : `"[" ${ws} ${list} "]"`;
  }

  private object(s: Record<string, unknown>, path: string): string {
    const ws = this.use('ws');
    const props = s.properties ?? {};
    if (!isObj(props)) invalid(ptr(path, 'properties'), 'properties is an object of schemas');
    const required = s.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string'))
      invalid(ptr(path, 'required'), 'required is an array of property names');
    const names = Object.keys(props);
    for (const r of required) if (!names.includes(r)) names.push(r);
    const add = s.additionalProperties ?? !('properties' in s);
    // members in order: the key literal, its value, and the space before the next token
    const kvs = names.map((n) => {
      const value = n in props ? this.expr(props[n], ptr(ptr(path, 'properties'), n)) : this.use('value');
      return this.define(
        this.name(ptr(path, n)),
        `${gbnfLiteral(JSON.stringify(n))} ${ws} ":" ${ws} ${group(value)} ${ws}`,
      );
    });
    const req = names.map((n) => required.includes(n));
    let extra: string | undefined;
    if (add !== false) {
      const value = add === true ? this.use('value') : this.expr(add, ptr(path, 'additionalProperties'));
      extra = this.define(
        this.name(ptr(path, 'additional')),
        `${this.use('string')} ${ws} ":" ${ws} ${group(value)} ${ws}`,
      );
    }
    // A[i]: members i.. after at least one member; B[i]: members i.. with none written yet
    const base = this.name(ptr(path, 'members'));
    // an empty body is written "" (llama.cpp refuses a rule with nothing after ::=)
    const tailA = extra ? `("," ${ws} ${extra})*` : '""';
    const A: string[] = [];
    const B: string[] = [];
    A[names.length] = this.define(`${base}-a${names.length}`, tailA);
    B[names.length] = this.define(`${base}-b${names.length}`, extra ? `(${extra} ${A[names.length]})?` : '""');
    for (let i = names.length - 1; i >= 0; i--) {
      A[i] = this.define(
        `${base}-a${i}`,
        req[i] ? `"," ${ws} ${kvs[i]} ${A[i + 1]}` : `("," ${ws} ${kvs[i]})? ${A[i + 1]}`,
      );
      B[i] = this.define(`${base}-b${i}`, req[i] ? `${kvs[i]} ${A[i + 1]}` : `${kvs[i]} ${A[i + 1]} | ${B[i + 1]}`);
    }
    this.rules.delete(base);
    return `"{" ${ws} ${B[0]} "}"`;
  }

  private ref(r: unknown, path: string): string {
    if (typeof r !== 'string') invalid(path, '$ref is a string');
    let rule = this.refRules.get(r);
    if (rule !== undefined) return rule;
    let target: unknown;
    if (r === '#') target = this.root;
    else {
      const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(r);
      if (!m)
        throw BitNetError.Config(
          'UNSUPPORTED_JSON_SCHEMA',
          `json schema at ${path}: $ref ${JSON.stringify(r)} is not supported (only #, #/$defs/… and #/definitions/…)`,
          { path, keyword: '$ref' },
        );
      const key = m[2].replace(/~1/g, '/').replace(/~0/g, '~');
      const defs = isObj(this.root) ? this.root[m[1]] : undefined;
      target = isObj(defs) ? defs[key] : undefined;
      if (target === undefined) invalid(path, `$ref ${JSON.stringify(r)} names no definition`);
    }
    // named before it is converted, so a recursive reference finds it
    rule = this.name(r === '#' ? 'ref-root' : `ref/${m2(r)}`);
    this.refRules.set(r, rule);
    this.define(rule, this.expr(target, r.slice(1)));
    return rule;
  }
}

const m2 = (r: string) => r.split('/').pop() ?? r;

/** The GBNF grammar of the values a JSON schema allows (root rule `root`). */
export function jsonSchemaToGbnf(schema: unknown): string {
  const { exprs, rules } = jsonSchemaRules([schema]);
  return gbnfText(`root ::= ${exprs[0]}`, rules);
}

/**
 * Several schemas in one rule set (each with its own `$ref` root and rule-name prefix): each one's
 * GBNF expression, and the rules they use, for a caller that writes its own root (tool-calls.ts).
 * Rule names that the caller adds must not start with `s` followed by a digit and `-`.
 */
export function jsonSchemaRules(
  schemas: readonly unknown[],
  /** Rethrows schema i's conversion error (to say which schema it was). */
  onError: (i: number, e: unknown) => never = (_, e) => {
    throw e;
  },
): { exprs: string[]; rules: Map<string, string> } {
  const rules = new Map<string, string>();
  const exprs = schemas.map((schema, i) => {
    try {
      if (schema !== true && schema !== false && !isObj(schema)) invalid('', 'a schema is an object or a boolean');
      return new Converter(schema as Schema, rules, schemas.length === 1 ? 's' : `s${i}`).expr(schema, '');
    } catch (e) {
      return onError(i, e);
    }
  });
  return { exprs, rules };
}

/** GBNF text: the given first lines, then every rule of `rules`. */
export function gbnfText(first: string, rules: ReadonlyMap<string, string>): string {
  const lines = [first];
  for (const [name, body] of rules) lines.push(`${name} ::= ${body}`);
  return `${lines.join('\n')}\n`;
}
