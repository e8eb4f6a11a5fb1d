// JSON mode: its grammar against JSON.parse (whole texts, pieces, random objects and mutations),
// its bounds, and the engine generating under it.
import { BitNetModel, GenerationConfig } from 'bitnet-edge';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseGbnf } from '../../src/generate/grammar/gbnf.ts';
import { JSON_OBJECT_GBNF, MAX_DEPTH, MAX_INDENT } from '../../src/generate/grammar/json-grammar.ts';
import { GrammarMatcher } from '../../src/generate/grammar/matcher.ts';
import { createRng } from '../../src/generate/prng.ts';
import { createApp } from '../../src/http/app.ts';
import { mutateOne, randomValue } from '../helpers/json-values.ts';
import { synthFile } from '../helpers/models.ts';

const enc = new TextEncoder();

const grammar = parseGbnf(JSON_OBJECT_GBNF);

/** Whether JSON mode's grammar takes the whole text (in pieces cut at `cuts`), and has finished there. */
function recognizes(text: string, cuts: number[] = []): { accepted: boolean; done: boolean } {
  const c = new GrammarMatcher(grammar);
  const bytes = enc.encode(text);
  let at = 0;
  for (const end of [...cuts.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length]) {
    const piece = bytes.subarray(at, end);
    at = end;
    if (piece.length === 0) continue;
    if (!c.push(piece)) return { accepted: false, done: false };
  }
  // an object that has closed is the end: nothing may follow it
  if (c.accepting() !== c.finished()) throw new Error('JSON mode may stop only where nothing can follow');
  return { accepted: true, done: c.finished() };
}

/** JSON.parse's verdict in JSON mode's terms: one object, with JSON mode's whitespace (wsRunsOk). */
function parsesAsObject(text: string): boolean {
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) && wsRunsOk(text);
  } catch {
    return false;
  }
}

/** Outside strings, every whitespace run is " " or a newline and at most 20 spaces/tabs; none at the ends. */
function wsRunsOk(text: string): boolean {
  if (/^\s|\s$/.test(text)) return false;
  let outside = '';
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inStr) {
      if (ch === '\\') i++;
      else if (ch === '"') inStr = false;
      outside += 'x';
    } else {
      if (ch === '"') inStr = true;
      outside += ch;
    }
  }
  return (outside.match(/[ \t\r\n]+/g) ?? []).every((run) => /^( |\n[ \t]{0,20})$/.test(run));
}

describe("JSON mode's grammar", () => {
  it('takes valid objects whole and in any pieces, every strict prefix without being done', () => {
    const docs = [
      '{}',
      '{"a":1}',
      '{ "a" : [1, 2.5, -3e-2, 0, true, false, null, "x\\u00e9\\n"], "b": {"c": {}} }',
      '{\n  "name": "bitnet",\n  "list": [\n    {},\n    []\n  ]\n}',
      '{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t"}',
      '{"ü": "😀"}',
    ];
    const rng = createRng(5);
    for (const d of docs) {
      expect(recognizes(d), d).toEqual({ accepted: true, done: true });
      const cuts = Array.from({ length: 5 }, () => Math.floor(rng.nextFloat() * d.length));
      expect(recognizes(d, cuts), d).toEqual({ accepted: true, done: true });
      for (let i = 1; i < enc.encode(d).length; i++) {
        const c = new GrammarMatcher(grammar);
        expect(c.push(enc.encode(d).subarray(0, i)), `${d} [0, ${i})`).toBe(true);
        expect(c.finished()).toBe(false);
      }
    }
  });

  it('refuses what JSON does not allow', () => {
    for (const bad of [
      '[]',
      '"x"',
      '1',
      '{a:1}',
      "{'a':1}",
      '{"a":01}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":-}',
      '{"a":1e}',
      '{"a":tru}',
      '{"a":1,}',
      '{,}',
      '{"a" 1}',
      '{"a":[1 2]}',
      '{"a":"\\x"}',
      '{"a":"\\u12g4"}',
      '{"a":"line\nbreak"}',
      '{"a":1}}',
      '{"a":1} x',
      '{"a":1]',
      '{"a":[1}',
      ' {}',
      '{  "a":1}',
      '{\t"a":1}',
      '{"a":1}\n',
      '{\r\n"a":1}',
    ]) {
      const r = recognizes(bad);
      expect(r.accepted && r.done, bad).toBe(false);
    }
  });

  it('agrees with JSON.parse on random objects and their one-byte mutations', () => {
    const rng = createRng(11);
    const alphabet = '{}[]",:0123456789.eE+-tfnrulsa \\\n';
    let valid = 0;
    for (let t = 0; t < 400; t++) {
      const v = { root: randomValue(rng, 4) };
      const text = JSON.stringify(v, null, rng.nextFloat() < 0.5 ? 0 : 2);
      expect(recognizes(text), text).toEqual({ accepted: true, done: true });
      // one byte replaced, inserted or deleted
      const m = mutateOne(text, rng, alphabet);
      const r = recognizes(m);
      const ok = parsesAsObject(m);
      if (ok) valid++;
      expect(r.accepted && r.done, JSON.stringify(m)).toBe(ok);
    }
    expect(valid).toBeGreaterThan(20); // the mutations include valid ones, so both sides are exercised
  });

  it('closers match their openers; depth and whitespace are bounded; characters are whole UTF-8', () => {
    expect(recognizes('{"a":[{"b":1]}]').accepted).toBe(false);
    expect(recognizes('{"a":[{"b":1}]}')).toEqual({ accepted: true, done: true });
    const deep = `{"a":${'['.repeat(MAX_DEPTH - 1)}`;
    expect(recognizes(deep).accepted).toBe(true);
    expect(recognizes(`${deep}[`).accepted).toBe(false);
    expect(recognizes(`{\n${' '.repeat(MAX_INDENT)}`).accepted).toBe(true);
    expect(recognizes(`{\n${'\t'.repeat(MAX_INDENT + 1)}`).accepted).toBe(false);
    expect(recognizes('{\n\n').accepted).toBe(false);
    // a string takes any character, split across pieces, but no broken UTF-8
    expect(recognizes('{"k":"é😀"}', [7, 9, 11])).toEqual({ accepted: true, done: true });
    const c = new GrammarMatcher(grammar);
    expect(c.push(enc.encode('{"k":"'))).toBe(true);
    expect(c.push(Uint8Array.of(0xc0, 0xaf))).toBe(false); // overlong "/"
    expect(c.push(Uint8Array.of(0x80))).toBe(false); // a lone continuation byte
  });
});

let path: string;
beforeAll(async () => {
  path = await synthFile({ qtype: 'i2_s', seed: 8, arch: 'bitnet-b1.58' });
});

describe('JSON mode in the engine', () => {
  it('every generation is a prefix of one object; one that stops is a whole object', async () => {
    const m = await BitNetModel.fromFile(path);
    const close = m.tokenizer!.tokenToId('}')!;
    let stopped = 0;
    for (let seed = 1; seed <= 6; seed++) {
      // a bias on "}" lets a random model close its object now and then
      const cfg = new GenerationConfig({
        maxNewTokens: 40,
        temperature: 1,
        seed,
        responseFormat: 'json_object',
      }).withLogitBias({ [close]: 4 });
      const r = await m.generateDetailed({ ids: [1, 2, 3] }, cfg);
      const c = recognizes(r.text);
      expect(c.accepted, r.text).toBe(true);
      expect(c.done).toBe(r.finishReason === 'stop');
      if (r.finishReason === 'stop') {
        stopped++;
        expect(typeof JSON.parse(r.text)).toBe('object');
      }
    }
    expect(stopped).toBeGreaterThan(0);
    // without JSON mode the same model writes no JSON
    const plain = await m.generateDetailed({ ids: [1, 2, 3] }, new GenerationConfig({ maxNewTokens: 20, seed: 1 }));
    expect(recognizes(plain.text).accepted).toBe(false);
  });

  it('over HTTP: response_format json_object; an unknown type is refused', async () => {
    const model = await BitNetModel.fromFile(path);
    const close = model.tokenizer!.tokenToId('}')!;
    const app = createApp({ model, modelId: 'm' });
    const ask = (extra: Record<string, unknown>) =>
      app.request('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          messages: [{ role: 'user', content: 'json please' }],
          max_tokens: 40,
          seed: 3,
          ...extra,
        }),
      });
    const r = await (await ask({ response_format: { type: 'json_object' }, logit_bias: { [close]: 6 } })).json();
    expect(r.choices[0].finish_reason).toBe('stop');
    expect(JSON.parse(r.choices[0].message.content)).toEqual(expect.any(Object));
    const bad = await ask({ response_format: { type: 'xml' } });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatchObject({ code: 'INVALID_REQUEST', param: 'response_format.type' });
  });
});
