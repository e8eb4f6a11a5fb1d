/**
 * Test helpers for JSON-schema grammars: a validator of the schema subset json-schema.ts supports
 * (properties in the order written, as the grammar writes them), and random instances of a schema.
 */
import type { Rng } from './json-values.ts';

type S = Record<string, unknown>;

function resolve(s: S, root: S): S {
  if (typeof s.$ref !== 'string') return s;
  if (s.$ref === '#') return root;
  const [, where, name] = s.$ref.split('/');
  return (root[where] as Record<string, S>)[name];
}

const typeOf = (v: unknown): string =>
  v === null
    ? 'null'
    : Array.isArray(v)
      ? 'array'
      : typeof v === 'number'
        ? Number.isInteger(v)
          ? 'integer'
          : 'number'
        : typeof v;

/** Whether `v` is an instance of schema `s` (object keys in the order of `properties`, then extras). */
export function valid(s: S | boolean, v: unknown, root: S = s as S): boolean {
  if (s === true) return true;
  if (s === false) return false;
  s = resolve(s, root);
  if (s.nullable === true && v === null) return true;
  if ('const' in s) return JSON.stringify(s.const) === JSON.stringify(v);
  if (Array.isArray(s.enum)) return s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v));
  for (const k of ['anyOf', 'oneOf', 'allOf'])
    if (Array.isArray(s[k])) return (s[k] as S[]).some((sub) => valid(sub, v, root));
  const types = s.type === undefined ? undefined : ([] as string[]).concat(s.type as string);
  const t = typeOf(v);
  if (types && !types.includes(t) && !(t === 'integer' && types.includes('number'))) return false;
  if (t === 'string') {
    const n = [...(v as string)].length;
    if (n < ((s.minLength as number) ?? 0) || n > ((s.maxLength as number) ?? Number.POSITIVE_INFINITY)) return false;
    if (s.format === 'date') return /^\d{4}-\d\d-\d\d$/.test(v as string);
    if (s.format === 'uuid') return /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(v as string);
  }
  if (t === 'array') {
    const a = v as unknown[];
    if (Array.isArray(s.prefixItems))
      return a.length === s.prefixItems.length && a.every((x, i) => valid((s.prefixItems as S[])[i], x, root));
    if (a.length < ((s.minItems as number) ?? 0) || a.length > ((s.maxItems as number) ?? Number.POSITIVE_INFINITY))
      return false;
    return a.every((x) => valid((s.items as S) ?? true, x, root));
  }
  if (t === 'object') {
    const o = v as Record<string, unknown>;
    const props = (s.properties as Record<string, S>) ?? {};
    const required = (s.required as string[]) ?? [];
    const declared = [...Object.keys(props), ...required.filter((r) => !(r in props))];
    const add = s.additionalProperties ?? !('properties' in s);
    const keys = Object.keys(o);
    // the declared keys first, in order, then the extras
    const firstExtra = keys.findIndex((k) => !declared.includes(k));
    const inOrder = keys.slice(0, firstExtra < 0 ? keys.length : firstExtra);
    if (inOrder.some((k, i) => i > 0 && declared.indexOf(k) <= declared.indexOf(inOrder[i - 1]))) return false;
    if (firstExtra >= 0 && keys.slice(firstExtra).some((k) => declared.includes(k))) return false;
    if (required.some((r) => !(r in o))) return false;
    for (const k of keys) {
      if (declared.includes(k)) {
        if (!valid(props[k] ?? true, o[k], root)) return false;
      } else if (add === false || !valid(add as S, o[k], root)) return false;
    }
  }
  return true;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng.nextFloat() * xs.length)];
const STRINGS = ['', 'a', 'Zoë', 'tab\tq"uote\\', '😀 x', 'line\nfeed'];

/** A random instance of schema `s` (recursion cut at `depth`). */
export function instance(s: S | boolean, rng: Rng, root: S = s as S, depth = 4): unknown {
  if (s === true) return pick(rng, [1, 'x', null, [true], { k: 2.5 }]);
  s = resolve(s as S, root);
  if (s.nullable === true && rng.nextFloat() < 0.3) return null;
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum)) return pick(rng, s.enum);
  for (const k of ['anyOf', 'oneOf', 'allOf'])
    if (Array.isArray(s[k])) return instance(pick(rng, s[k] as S[]), rng, root, depth);
  let types = s.type === undefined ? ['object'] : ([] as string[]).concat(s.type as string);
  if (depth <= 0 && types.includes('null')) types = ['null'];
  const t = pick(rng, types);
  switch (t) {
    case 'null':
      return null;
    case 'boolean':
      return rng.nextFloat() < 0.5;
    case 'integer':
      return pick(rng, [0, 7, -42, 123456789012]);
    case 'number':
      return pick(rng, [0, -1.5, 3.25e-7, 1e21, 42]);
    case 'string': {
      if (s.format === 'date') return pick(rng, ['2024-02-29', '1999-12-31']);
      if (s.format === 'date-time') return '2024-02-29T23:59:59.5+05:30';
      if (s.format === 'time') return '00:00:00Z';
      if (s.format === 'uuid') return '123e4567-e89b-12d3-A456-426614174000';
      const min = (s.minLength as number) ?? 0;
      const max = (s.maxLength as number) ?? 12;
      const n = min + Math.floor(rng.nextFloat() * (max - min + 1));
      return Array.from({ length: n }, () => pick(rng, ['a', 'é', '"', '\\', '\n', '😀', ' '])).join('');
    }
    case 'array': {
      if (Array.isArray(s.prefixItems)) return s.prefixItems.map((p) => instance(p as S, rng, root, depth - 1));
      const min = (s.minItems as number) ?? 0;
      const max = Math.min((s.maxItems as number) ?? 3, min + 3);
      const n = depth <= 0 ? min : min + Math.floor(rng.nextFloat() * (max - min + 1));
      return Array.from({ length: n }, () => instance((s.items as S) ?? true, rng, root, depth - 1));
    }
    default: {
      const props = (s.properties as Record<string, S>) ?? {};
      const required = (s.required as string[]) ?? [];
      const o: Record<string, unknown> = {};
      for (const k of [...Object.keys(props), ...required.filter((r) => !(r in props))])
        if (required.includes(k) || (depth > 0 && rng.nextFloat() < 0.6))
          o[k] = instance(props[k] ?? true, rng, root, depth - 1);
      const add = s.additionalProperties ?? !('properties' in s);
      if (add !== false && depth > 0 && rng.nextFloat() < 0.5)
        o[`x-${pick(rng, STRINGS)}`] = instance(add === true ? true : (add as S), rng, root, depth - 1);
      return o;
    }
  }
}
