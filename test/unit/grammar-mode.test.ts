// Grammar-constrained generation: the per-step token mask against a brute-force check of every
// token, and grammars and JSON schemas through GenerationConfig, HTTP (with the OpenAI SDK's
// structured outputs) and the CLI.
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zodResponseFormat } from 'openai/helpers/zod';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { GenerationConfig } from '../../src/api/generation-config.ts';
import { BitNetError } from '../../src/errors.ts';
import { parseGbnf } from '../../src/generate/grammar/gbnf.ts';
import { compileGrammar, GrammarMode } from '../../src/generate/grammar/grammar-mode.ts';
import { jsonSchemaToGbnf } from '../../src/generate/grammar/json-schema.ts';
import { DEAD, GrammarMatcher } from '../../src/generate/grammar/matcher.ts';
import { createRng } from '../../src/generate/prng.ts';
import { createApp } from '../../src/http/app.ts';
import { synthFile } from '../helpers/models.ts';
import { valid } from '../helpers/schema-instances.ts';
import { openAIFor, post, sseData, tinyModel } from '../http/helpers.ts';

const enc = new TextEncoder();
const headers = { 'content-type': 'application/json' };

const SCHEMA = {
  type: 'object',
  properties: {
    answer: { enum: ['yes', 'no', 'maybe'] },
    sure: { type: 'boolean' },
    n: { type: 'integer', minimum: 0, maximum: 99 },
    note: { type: 'string', maxLength: 6 },
  },
  required: ['answer', 'sure', 'n'],
};

let model: BitNetModel;
beforeAll(async () => {
  model = await tinyModel();
});

/** Whether `text` is where the schema's grammar can be (a prefix of an instance). */
function prefixOk(schema: unknown, text: string): boolean {
  return new GrammarMatcher(parseGbnf(jsonSchemaToGbnf(schema))).push(enc.encode(text));
}

describe('GrammarMode', () => {
  it('masks exactly the tokens whose bytes the grammar takes next, at every step', () => {
    const tok = model.tokenizer!;
    const eog = tok.eogTokenIds;
    const rng = createRng(9);
    const grammars = [
      jsonSchemaToGbnf(SCHEMA),
      'root ::= [é-ü]+ ("." | "!")',
      'root ::= "a"+ ("b" "c"?)?',
      jsonSchemaToGbnf({ type: 'array', items: { type: 'string' }, maxItems: 3 }),
    ];
    for (const text of grammars) {
      const g = compileGrammar({ gbnf: text });
      const mode = new GrammarMode(g, tok, eog);
      const ref = new GrammarMatcher(parseGbnf(text));
      for (let step = 0; step < 40 && !mode.done; step++) {
        const masked = mode.mask(new Float32Array(tok.vocabSize));
        const allowed: number[] = [];
        for (let id = 0; id < tok.vocabSize; id++) {
          let want: boolean;
          if (eog.has(id)) want = ref.accepting();
          else if (tok.isSpecial(id)) want = false;
          else want = ref.walk(ref.state, tok.tokenBytes(id, { skipSpecialTokens: false })) !== DEAD;
          expect(masked[id] === 0, `${text} step ${step} token ${id}`).toBe(want);
          if (want) allowed.push(id);
        }
        // follow a random allowed token that is not an end (to walk deep into the grammar)
        const next = allowed.filter((id) => !eog.has(id));
        if (next.length === 0) break;
        const id = next[Math.floor(rng.nextFloat() * next.length)];
        mode.push(id);
        ref.push(tok.tokenBytes(id, { skipSpecialTokens: false }));
      }
    }
  });

  it('allows the end only where the grammar may stop; done when nothing can follow; a wrong token is a typed error', () => {
    const tok = model.tokenizer!;
    const eog = [...tok.eogTokenIds];
    const mode = new GrammarMode(compileGrammar({ gbnf: 'root ::= "ab" "c"?' }), tok, eog);
    const at = (ids: number[]) => ids.filter((id) => id < tok.vocabSize);
    const ends = () => at(eog).filter((id) => mode.mask(new Float32Array(tok.vocabSize))[id] === 0);
    expect(ends()).toEqual([]);
    for (const id of tok.encode('ab', { addBos: false } as never) as number[]) mode.push(id);
    expect(ends()).toEqual(at(eog));
    expect(mode.done).toBe(false);
    expect(() => mode.push(tok.encode('x', { addBos: false } as never)[0] as number)).toThrow(
      expect.objectContaining({ code: 'GRAMMAR_DEAD_END' }),
    );
    for (const id of tok.encode('c', { addBos: false } as never) as number[]) mode.push(id);
    expect(mode.done).toBe(true);
  });
});

describe('grammar-constrained generation', () => {
  it('every text is a prefix of an instance; every one that stops parses and fits the schema', async () => {
    let stopped = 0;
    for (let seed = 1; seed <= 8; seed++) {
      const cfg = new GenerationConfig({ maxNewTokens: 60, temperature: 1, seed, jsonSchema: SCHEMA });
      const r = await model.generateDetailed({ ids: [1, 2, 3] }, cfg);
      expect(prefixOk(SCHEMA, r.text), r.text).toBe(true);
      if (r.finishReason === 'stop') {
        stopped++;
        expect(valid(SCHEMA, JSON.parse(r.text)), r.text).toBe(true);
      }
    }
    expect(stopped).toBeGreaterThan(0);
    // a grammar: the text is one of its sentences, and it stops there
    for (let seed = 1; seed <= 4; seed++) {
      const r = await model.generateDetailed(
        'hello',
        new GenerationConfig({ maxNewTokens: 10, seed, temperature: 1, grammar: 'root ::= ("yes" | "no") "."' }),
      );
      expect(['yes.', 'no.']).toContain(r.text);
      expect(r.finishReason).toBe('stop');
    }
  });

  it('GenerationConfig refuses malformed or several constraints; the engine refuses a bad grammar before any work', async () => {
    const bad: [Record<string, unknown>, string, string][] = [
      [{ grammar: 3 }, 'INVALID_GENERATION_CONFIG', 'grammar'],
      [{ grammar: '  ' }, 'INVALID_GENERATION_CONFIG', 'grammar'],
      [{ jsonSchema: [] }, 'INVALID_GENERATION_CONFIG', 'jsonSchema'],
      [{ jsonSchema: null }, 'INVALID_GENERATION_CONFIG', 'jsonSchema'],
      [{ grammar: 'root ::= "a"', jsonSchema: {} }, 'INVALID_GENERATION_CONFIG', 'jsonSchema'],
      [{ grammar: 'root ::= "a"', responseFormat: 'json_object' }, 'INVALID_GENERATION_CONFIG', 'grammar'],
    ];
    for (const [init, code, field] of bad) {
      let err: unknown;
      try {
        new GenerationConfig(init).validate();
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(init)).toBeInstanceOf(BitNetError);
      expect((err as BitNetError).code).toBe(code);
      expect((err as BitNetError).details.field).toBe(field);
    }
    await expect(model.generate('hi', new GenerationConfig({ grammar: 'root ::= nope' }))).rejects.toMatchObject({
      code: 'INVALID_GRAMMAR',
    });
    await expect(
      model.generate('hi', new GenerationConfig({ jsonSchema: { type: 'integer', multipleOf: 3 } })),
    ).rejects.toMatchObject({ code: 'UNSUPPORTED_JSON_SCHEMA' });
    // the builders carry the constraint
    const c = new GenerationConfig().withJsonSchema(SCHEMA);
    expect(c.jsonSchema).toEqual(SCHEMA);
    expect(c.withGrammar('root ::= "x"').withJsonSchema(undefined).grammar).toBe('root ::= "x"');
  });
});

describe('over HTTP', () => {
  let app: ReturnType<typeof createApp>;
  beforeAll(() => {
    app = createApp({ model, modelId: 'm' });
  });
  const call = (path: string, body: unknown) => app.request(...post(path, body, headers));
  const chat = (extra: Record<string, unknown>) => ({
    messages: [{ role: 'user', content: 'answer in JSON' }],
    max_tokens: 80,
    seed: 4,
    ...extra,
  });
  const rf = { type: 'json_schema', json_schema: { name: 'answer', schema: SCHEMA, strict: true } };

  it('chat response_format json_schema: the same object streamed or not, valid for the schema', async () => {
    const whole = await (await call('/v1/chat/completions', chat({ response_format: rf }))).json();
    const content = whole.choices[0].message.content;
    expect(whole.choices[0].finish_reason).toBe('stop');
    expect(valid(SCHEMA, JSON.parse(content)), content).toBe(true);
    const streamed = sseData(
      await (await call('/v1/chat/completions', chat({ response_format: rf, stream: true }))).text(),
    )
      .filter((d) => d !== '[DONE]')
      .map((d) => JSON.parse(d).choices[0]?.delta?.content ?? '')
      .join('');
    expect(streamed).toBe(content);
  });

  it("the OpenAI SDK's structured outputs (zodResponseFormat, chat.completions.parse) get a parsed object", async () => {
    const client = openAIFor(app);
    const Answer = z.object({ verdict: z.enum(['yes', 'no']), sure: z.boolean(), n: z.number().int() });
    // zod's int() sends the safe-integer bounds as minimum / maximum
    let parsed = 0;
    for (const seed of [1, 2, 3, 4]) {
      const r = await client.chat.completions
        .parse({
          model: 'm',
          messages: [{ role: 'user', content: 'q' }],
          response_format: zodResponseFormat(Answer, 'answer'),
          max_tokens: 120,
          seed,
        })
        .catch((e: Error) => {
          // the SDK throws when the object was cut by max_tokens; nothing else may fail
          expect(e.constructor.name).toBe('LengthFinishReasonError');
          return undefined;
        });
      if (!r) continue;
      parsed++;
      expect(Answer.parse(r.choices[0].message.parsed)).toEqual(JSON.parse(r.choices[0].message.content!));
    }
    expect(parsed).toBeGreaterThan(0);
  });

  it('completions and /v1/generate take a grammar; n choices each follow it', async () => {
    const grammar = 'root ::= [A-C] ("-" [0-9]){1,3}';
    const shape = /^[A-C](-[0-9]){1,3}$/;
    const j = await (await call('/v1/completions', { prompt: 'code:', max_tokens: 20, n: 3, seed: 1, grammar })).json();
    expect(j.choices).toHaveLength(3);
    for (const c of j.choices) expect(c.text).toMatch(/^[A-C](-[0-9]){0,3}$/);
    expect(
      j.choices.some((c: { finish_reason: string; text: string }) => c.finish_reason === 'stop' && shape.test(c.text)),
    ).toBe(true);
    const g = await (await call('/v1/generate', { prompt: 'x', maxNewTokens: 30, seed: 2, jsonSchema: SCHEMA })).json();
    expect(prefixOk(SCHEMA, g.text), g.text).toBe(true);
    const yes = await (await call('/v1/generate', { prompt: 'x', maxNewTokens: 5, grammar: 'root ::= "ok"' })).json();
    expect(yes.text).toBe('ok');
  });

  it('bad grammars and schemas are 400s naming the field, before any token', async () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['/v1/chat/completions', chat({ grammar: 'root ::= x' }), 'INVALID_GRAMMAR', 'grammar'],
      ['/v1/completions', { prompt: 'a', grammar: 'root ::= "a' }, 'INVALID_GRAMMAR', 'grammar'],
      ['/v1/completions', { prompt: 'a', grammar: '' }, 'INVALID_REQUEST', 'grammar'],
      [
        '/v1/chat/completions',
        chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { not: {} } } } }),
        'UNSUPPORTED_JSON_SCHEMA',
        'response_format.json_schema.schema',
      ],
      [
        '/v1/chat/completions',
        chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'nope' } } } }),
        'INVALID_JSON_SCHEMA',
        'response_format.json_schema.schema',
      ],
      [
        '/v1/chat/completions',
        chat({ response_format: { type: 'json_schema', json_schema: { name: 'a b', schema: {} } } }),
        'INVALID_REQUEST',
        'response_format.json_schema.name',
      ],
      [
        '/v1/chat/completions',
        chat({ response_format: { type: 'json_schema' } }),
        'INVALID_REQUEST',
        'response_format.json_schema',
      ],
      [
        '/v1/chat/completions',
        chat({ response_format: { type: 'json_object' }, grammar: 'root ::= "a"' }),
        'INVALID_GENERATION_CONFIG',
        'grammar',
      ],
      [
        '/v1/generate',
        { prompt: 'a', jsonSchema: { type: 'object', minProperties: 1 } },
        'UNSUPPORTED_JSON_SCHEMA',
        'jsonSchema',
      ],
    ];
    for (const [path, body, code, param] of cases) {
      const r = await call(path, { ...body, stream: true });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect((await r.json()).error, JSON.stringify(body)).toMatchObject({ code, param });
    }
  });
});

describe('the CLI', () => {
  let file: string;
  let dir: string;
  beforeAll(async () => {
    file = await synthFile({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58' });
    dir = await mkdtemp(join(tmpdir(), 'bitnet-grammar-'));
  });
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['bin/bitnet.js', 'generate', '--model', file, '--prompt', 'hi', ...args], {
      encoding: 'utf8',
    });

  it('generate --grammar, --grammar-file, --json-schema and --json-schema-file', async () => {
    expect(cli('--grammar', 'root ::= "yes" | "no"', '--seed', '1').stdout.trim()).toMatch(/^(yes|no)$/);
    await writeFile(join(dir, 'g.gbnf'), 'root ::= "A" [0-9]\n');
    expect(cli('--grammar-file', join(dir, 'g.gbnf'), '--seed', '2').stdout.trim()).toMatch(/^A[0-9]$/);
    const schema = { enum: ['red', 'green'] };
    expect(cli('--json-schema', JSON.stringify(schema)).stdout.trim()).toMatch(/^"(red|green)"$/);
    await writeFile(join(dir, 's.json'), JSON.stringify(SCHEMA));
    const out = cli('--json-schema-file', join(dir, 's.json'), '--max-tokens', '12', '--seed', '3').stdout;
    expect(prefixOk(SCHEMA, out.replace(/\n$/, '')), out).toBe(true);
  });

  it('refuses two constraints, unreadable files, bad JSON and bad grammars with typed errors', () => {
    const cases: [string[], RegExp][] = [
      [['--grammar', 'root ::= "a"', '--json-schema', '{}'], /BAD_FLAG.*cannot be used together/],
      [['--grammar-file', join(dir, 'missing.gbnf')], /FILE_NOT_FOUND/],
      [['--json-schema', '{nope'], /BAD_FLAG.*--json-schema is not JSON/],
      [['--grammar', 'root ::= "a" )'], /INVALID_GRAMMAR/],
      [['--json-schema', '{"type":"integer","multipleOf":3}'], /UNSUPPORTED_JSON_SCHEMA/],
    ];
    for (const [args, why] of cases) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toMatch(why);
    }
  });
});
