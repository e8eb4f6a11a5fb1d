// OpenAI's sampling controls over HTTP: logprobs / top_logprobs (chat), logprobs N (completions),
// logprobs on /v1/generate, logit_bias, presence_penalty / frequency_penalty, and their 400s.
import { beforeAll, describe, expect, it } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { GenerationConfig } from '../../src/api/generation-config.ts';
import type { GenerationOutcome, TokenEvent } from '../../src/generate/engine.ts';
import { createApp } from '../../src/http/app.ts';
import { TokenNames } from '../../src/http/logprobs-wire.ts';
import { type ChoiceRun, completionChunks } from '../../src/http/openai.ts';
import { openAIFor, post, sseData, tinyModel } from './helpers.ts';

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
const MODEL = 'tiny-test';
const headers = { 'content-type': 'application/json' };
const call = async (path: string, body: unknown) => app.request(...post(path, body, headers));

beforeAll(async () => {
  model = await tinyModel();
  app = createApp({ model, modelId: MODEL });
});

const chat = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: 'user', content: 'say something' }],
  max_tokens: 8,
  temperature: 0,
  ...extra,
});
const completion = (extra: Record<string, unknown> = {}) => ({
  prompt: 'the cat',
  max_tokens: 8,
  temperature: 0,
  ...extra,
});

type ChatEntry = {
  id: number;
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { id: number; token: string; logprob: number; bytes: number[] }[];
};

/** The chunks of a streamed response, [DONE] left out. */
async function chunks(r: Response): Promise<{ choices: Record<string, unknown>[] }[]> {
  return sseData(await r.text())
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d));
}

describe('chat: logprobs and top_logprobs', () => {
  it('one entry per completion token, with bytes, id and the alternatives; the stream carries the same', async () => {
    const r = await call('/v1/chat/completions', chat({ logprobs: true, top_logprobs: 3 }));
    expect(r.status).toBe(200);
    const body = await r.json();
    const lp = body.choices[0].logprobs;
    expect(lp.refusal).toBeNull();
    const content = lp.content as ChatEntry[];
    expect(content).toHaveLength(body.usage.completion_tokens);
    const tok = model.tokenizer!;
    for (const e of content) {
      expect(e.bytes).toEqual(Array.from(tok.tokenBytes(e.id)));
      expect(e.token).toBe(new TextDecoder().decode(new Uint8Array(e.bytes)));
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.top_logprobs[0]).toMatchObject({ id: e.id, logprob: e.logprob }); // greedy
      for (let i = 1; i < 3; i++) expect(e.top_logprobs[i].logprob).toBeLessThanOrEqual(e.top_logprobs[i - 1].logprob);
    }
    // the ordinary tokens' bytes are the content's
    const plain = content.filter((e) => !tok.isSpecial(e.id)).flatMap((e) => e.bytes);
    expect(new TextDecoder().decode(new Uint8Array(plain))).toBe(body.choices[0].message.content);

    const s = await call('/v1/chat/completions', chat({ logprobs: true, top_logprobs: 3, stream: true }));
    const streamed = (await chunks(s)).flatMap(
      (c) => ((c.choices[0]?.logprobs as { content: ChatEntry[] } | null)?.content ?? []) as ChatEntry[],
    );
    expect(streamed).toEqual(content);
  });

  it('logprobs without top_logprobs lists none; without logprobs the field is null', async () => {
    const a = await (await call('/v1/chat/completions', chat({ logprobs: true }))).json();
    expect(a.choices[0].logprobs.content[0].top_logprobs).toEqual([]);
    const b = await (await call('/v1/chat/completions', chat({ logprobs: false }))).json();
    expect(b.choices[0].logprobs).toBeNull();
    const s = await chunks(await call('/v1/chat/completions', chat({ stream: true })));
    for (const c of s) if (c.choices.length) expect(c.choices[0].logprobs).toBeNull();
  });

  it('the values are those of the API (log-softmax of the raw logits)', async () => {
    const direct = await model.generateDetailed(
      { ids: [1] },
      GenerationConfig.greedy().withMaxNewTokens(3).withLogprobs(2),
    );
    const viaHttp = await (
      await call('/v1/generate', { promptIds: [1], maxNewTokens: 3, temperature: 0, logprobs: true, topLogprobs: 2 })
    ).json();
    expect(viaHttp.tokenIds).toEqual(direct.tokenIds);
    expect(
      viaHttp.logprobs.map((e: { id: number; logprob: number; top: unknown[] }) => [e.id, e.logprob, e.top]),
    ).toEqual(
      direct.logprobs!.map((e) => [
        e.id,
        e.logprob,
        e.top.map((t) => ({ ...t, token: new TextDecoder().decode(model.tokenizer!.tokenBytes(t.id)) })),
      ]),
    );
  });
});

describe('completions: logprobs N (the legacy format)', () => {
  it('tokens, token_logprobs, top_logprobs by string, text_offset; streamed the same', async () => {
    const body = await (await call('/v1/completions', completion({ logprobs: 2 }))).json();
    const lp = body.choices[0].logprobs;
    const n = body.usage.completion_tokens;
    expect(lp.tokens).toHaveLength(n);
    expect(lp.token_logprobs).toHaveLength(n);
    expect(lp.top_logprobs).toHaveLength(n);
    let at = 0;
    for (let i = 0; i < n; i++) {
      expect(lp.text_offset[i]).toBe(at);
      at += [...lp.tokens[i]].length;
      const alts = Object.entries(lp.top_logprobs[i]) as [string, number][];
      expect(alts.length).toBeGreaterThan(0);
      expect(alts.length).toBeLessThanOrEqual(2);
      expect(alts[0]).toEqual([lp.tokens[i], lp.token_logprobs[i]]); // greedy
    }
    const s = await chunks(await call('/v1/completions', completion({ logprobs: 2, stream: true })));
    const parts = s.map((c) => c.choices[0]?.logprobs as Record<string, unknown[]> | null).filter((x) => x !== null);
    const joined = (k: string) => parts.flatMap((p) => p[k]);
    expect(joined('tokens')).toEqual(lp.tokens);
    expect(joined('token_logprobs')).toEqual(lp.token_logprobs);
    expect(joined('top_logprobs')).toEqual(lp.top_logprobs);
    expect(joined('text_offset')).toEqual(lp.text_offset);
    // logprobs: 0 reports the tokens' own log-probabilities and no alternatives
    const zero = await (await call('/v1/completions', completion({ logprobs: 0 }))).json();
    expect(zero.choices[0].logprobs.token_logprobs).toEqual(lp.token_logprobs);
    expect(zero.choices[0].logprobs.top_logprobs.every((o: object) => Object.keys(o).length === 0)).toBe(true);
    const none = await (await call('/v1/completions', completion())).json();
    expect(none.choices[0].logprobs).toBeNull();
  });
});

describe('completions: echo, and scoring a prompt with max_tokens 0', () => {
  it("scores token ids as an evaluation harness asks (echo, logprobs 1, max_tokens 0): the API's numbers", async () => {
    const ids = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100];
    const r = await call('/v1/completions', { prompt: [ids], max_tokens: 0, echo: true, logprobs: 1, temperature: 0 });
    expect(r.status).toBe(200);
    const body = await r.json();
    const c = body.choices[0];
    expect(c.text).toBe(model.tokenizer!.decode(ids, { skipSpecialTokens: true }));
    expect(c.finish_reason).toBe('length');
    // a scored prompt is prefilled whole (every row is needed), never taken from the prompt cache
    expect(body.usage).toEqual({
      prompt_tokens: ids.length,
      completion_tokens: 0,
      total_tokens: ids.length,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    const api = await model.generateDetailed(
      { ids },
      new GenerationConfig({ maxNewTokens: 0, promptLogprobs: true, topLogprobs: 1 }),
    );
    expect(c.logprobs.token_logprobs).toEqual(api.promptLogprobs!.map((e) => e.logprob));
    expect(c.logprobs.token_logprobs[0]).toBeNull();
    expect(c.logprobs.top_logprobs[0]).toBeNull();
    expect(c.logprobs.tokens).toEqual(ids.map((id) => new TextDecoder().decode(model.tokenizer!.tokenBytes(id))));
    for (let i = 1; i < ids.length; i++) expect(Object.keys(c.logprobs.top_logprobs[i])).toHaveLength(1);
  });

  it('echo with a text prompt and a completion: prompt then completion, in text, logprobs and the stream', async () => {
    const body = completion({ prompt: 'Hello there', max_tokens: 3, echo: true, logprobs: 2 });
    const j = await (await call('/v1/completions', body)).json();
    const c = j.choices[0];
    const promptIds = model.engine.encodePrompt('Hello there');
    const plain = await (
      await call('/v1/completions', completion({ prompt: 'Hello there', max_tokens: 3, logprobs: 2 }))
    ).json();
    expect(c.text).toBe(`Hello there${plain.choices[0].text}`);
    expect(c.logprobs.tokens).toHaveLength(promptIds.length + 3);
    expect(c.logprobs.tokens.slice(promptIds.length)).toEqual(plain.choices[0].logprobs.tokens);
    expect(c.logprobs.token_logprobs.slice(promptIds.length)).toEqual(plain.choices[0].logprobs.token_logprobs);
    let at = 0;
    for (let i = 0; i < c.logprobs.tokens.length; i++) {
      expect(c.logprobs.text_offset[i]).toBe(at);
      at += [...c.logprobs.tokens[i]].length;
    }
    const s = await chunks(await call('/v1/completions', { ...body, stream: true }));
    expect(s.map((x) => x.choices[0]?.text ?? '').join('')).toBe(c.text);
    expect(s[0].choices[0].text).toBe('Hello there');
    const parts = s.map((x) => x.choices[0]?.logprobs as Record<string, unknown[]> | null).filter((x) => x !== null);
    for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'])
      expect(
        parts.flatMap((p) => p[k]),
        k,
      ).toEqual(c.logprobs[k]);
    // echo without logprobs: the text only
    const e = await (
      await call('/v1/completions', completion({ prompt: 'Hello there', max_tokens: 3, echo: true }))
    ).json();
    expect([e.choices[0].text, e.choices[0].logprobs]).toEqual([c.text, null]);
    // streamed score-only request: one chunk with the prompt, then the finish
    const so = await chunks(
      await call('/v1/completions', { prompt: [1, 2, 3], max_tokens: 0, echo: true, logprobs: 0, stream: true }),
    );
    expect(so.map((x) => (x.choices[0]?.logprobs as { tokens: unknown[] } | null)?.tokens.length ?? null)).toEqual([
      3,
      null,
    ]);
  });

  it('/v1/generate: promptLogprobs with maxNewTokens 0', async () => {
    const j = await (
      await call('/v1/generate', { promptIds: [1, 2, 3], maxNewTokens: 0, promptLogprobs: true, topLogprobs: 1 })
    ).json();
    expect(j.tokenIds).toEqual([]);
    expect(j.promptLogprobs).toHaveLength(3);
    expect(j.promptLogprobs[0]).toMatchObject({ id: 1, logprob: null, top: null });
    expect(j.promptLogprobs[1]).toMatchObject({ id: 2, logprob: expect.any(Number), top: [expect.any(Object)] });
  });
});

describe('/v1/generate: logprobs on token events and in done', () => {
  it('each token event carries its entry; done and the JSON body list them all', async () => {
    const body = { promptIds: [1, 2, 3], maxNewTokens: 6, temperature: 0, logprobs: true, topLogprobs: 2 };
    const j = await (await call('/v1/generate', body)).json();
    expect(j.logprobs).toHaveLength(j.tokenIds.length);
    expect(j.logprobs[0]).toMatchObject({ id: j.tokenIds[0], token: expect.any(String), logprob: expect.any(Number) });
    expect(j.logprobs[0].top).toHaveLength(2);
    const text = await (await call('/v1/generate', { ...body, stream: true })).text();
    const tokens = [...text.matchAll(/event: token\ndata: (.*)/g)].map((m) => JSON.parse(m[1]));
    const done = JSON.parse(/event: done\ndata: (.*)/.exec(text)![1]);
    expect(tokens.filter((t) => 'id' in t).map((t) => t.logprob)).toEqual(j.logprobs);
    expect(done.logprobs).toEqual(j.logprobs);
    const plain = await (await call('/v1/generate', { promptIds: [1, 2, 3], maxNewTokens: 2 })).json();
    expect(plain).not.toHaveProperty('logprobs');
  });
});

describe('logit_bias and the penalties', () => {
  it('logit_bias +100 forces a token, −100 bans the greedy one', async () => {
    const forced = await (
      await call('/v1/chat/completions', chat({ logit_bias: { '65': 100 }, logprobs: true }))
    ).json();
    expect(forced.choices[0].logprobs.content.map((e: ChatEntry) => e.id)).toEqual(Array(8).fill(65));
    const plain = await (await call('/v1/generate', { promptIds: [1, 2, 3], maxNewTokens: 1, temperature: 0 })).json();
    const first = plain.tokenIds[0];
    const banned = await (
      await call('/v1/completions', {
        prompt: [1, 2, 3],
        max_tokens: 1,
        temperature: 0,
        logit_bias: { [first]: -100 },
        logprobs: 1,
      })
    ).json();
    const nat = await (
      await call('/v1/generate', {
        promptIds: [1, 2, 3],
        maxNewTokens: 1,
        temperature: 0,
        logitBias: { [first]: -100 },
      })
    ).json();
    expect(nat.tokenIds[0]).not.toBe(first);
    expect(banned.choices[0].logprobs.tokens[0]).toBe(
      new TextDecoder().decode(model.tokenizer!.tokenBytes(nat.tokenIds[0])),
    );
  });

  it('presence_penalty and frequency_penalty reach the sampler (the same tokens as the API)', async () => {
    const ids = [1, 2, 3];
    const runApi = async (cfg: GenerationConfig) => (await model.generateDetailed({ ids }, cfg)).tokenIds;
    const base = GenerationConfig.greedy().withMaxNewTokens(12);
    const plain = await runApi(base);
    for (const [wire, cfg] of [
      [{ presence_penalty: 2 }, base.withPresencePenalty(2)],
      [{ frequency_penalty: 2 }, base.withFrequencyPenalty(2)],
      [{ frequency_penalty: -2 }, base.withFrequencyPenalty(-2)],
    ] as const) {
      const expected = await runApi(cfg);
      expect(expected, `${JSON.stringify(wire)} changes the greedy tokens of this model`).not.toEqual(plain);
      const viaHttp = await (
        await call('/v1/completions', { prompt: ids, max_tokens: 12, temperature: 0, logprobs: 0, ...wire })
      ).json();
      const spelled = expected.map((id) => new TextDecoder().decode(model.tokenizer!.tokenBytes(id)));
      expect(viaHttp.choices[0].logprobs.tokens).toEqual(spelled);
    }
  });
});

describe('min_p', () => {
  it('reaches the sampler: the same tokens as the API, and not those without it', async () => {
    const ids = [1, 2, 3];
    const cfg = new GenerationConfig({ maxNewTokens: 16, temperature: 2, topP: 1, topK: 0, seed: 11 });
    const api = async (c: GenerationConfig) => (await model.generateDetailed({ ids }, c)).tokenIds;
    const withMinP = await api(cfg.withMinP(0.3));
    expect(withMinP).not.toEqual(await api(cfg));
    const spelled = withMinP.map((id) => new TextDecoder().decode(model.tokenizer!.tokenBytes(id)));
    const r = await (
      await call('/v1/completions', {
        prompt: ids,
        max_tokens: 16,
        temperature: 2,
        seed: 11,
        min_p: 0.3,
        logprobs: 0,
      })
    ).json();
    expect(r.choices?.[0].logprobs.tokens, JSON.stringify(r)).toEqual(spelled);
  });
});

describe('bad values → 400 naming the field', () => {
  const bad: [string, unknown, string, string][] = [
    ['/v1/chat/completions', chat({ top_logprobs: 2 }), 'INVALID_REQUEST', 'top_logprobs'],
    ['/v1/chat/completions', chat({ logprobs: true, top_logprobs: 21 }), 'INVALID_REQUEST', 'top_logprobs'],
    ['/v1/chat/completions', chat({ logprobs: 'yes' }), 'INVALID_REQUEST', 'logprobs'],
    ['/v1/chat/completions', chat({ presence_penalty: 2.5 }), 'INVALID_REQUEST', 'presence_penalty'],
    ['/v1/chat/completions', chat({ min_p: 2 }), 'INVALID_REQUEST', 'min_p'],
    ['/v1/generate', { promptIds: [1], minP: -1 }, 'INVALID_REQUEST', 'minP'],
    ['/v1/chat/completions', chat({ frequency_penalty: -3 }), 'INVALID_REQUEST', 'frequency_penalty'],
    ['/v1/chat/completions', chat({ logit_bias: { abc: 1 } }), 'INVALID_REQUEST', 'logit_bias.abc'],
    ['/v1/chat/completions', chat({ logit_bias: { '5': 101 } }), 'INVALID_REQUEST', 'logit_bias.5'],
    ['/v1/chat/completions', chat({ logit_bias: { '5000': 1 } }), 'SAMPLER_BAD_LOGIT_BIAS', 'logit_bias'],
    ['/v1/completions', completion({ logprobs: 21 }), 'INVALID_REQUEST', 'logprobs'],
    ['/v1/completions', completion({ logprobs: true }), 'INVALID_REQUEST', 'logprobs'],
    ['/v1/completions', completion({ max_tokens: 0 }), 'INVALID_REQUEST', 'max_tokens'],
    ['/v1/completions', completion({ echo: 'yes' }), 'INVALID_REQUEST', 'echo'],
    ['/v1/chat/completions', chat({ max_tokens: 0 }), 'INVALID_REQUEST', 'max_tokens'],
    ['/v1/generate', { promptIds: [1], maxNewTokens: 0 }, 'INVALID_GENERATION_CONFIG', 'maxNewTokens'],
    ['/v1/generate', { promptIds: [1], topLogprobs: 2 }, 'INVALID_GENERATION_CONFIG', 'topLogprobs'],
    ['/v1/generate', { promptIds: [1], logitBias: { '300': 1 } }, 'SAMPLER_BAD_LOGIT_BIAS', 'logitBias'],
    ['/v1/generate', { promptIds: [1], presencePenalty: 9 }, 'INVALID_REQUEST', 'presencePenalty'],
  ];
  for (const [path, body, code, param] of bad) {
    it(`${path} ${JSON.stringify(body).slice(-60)}`, async () => {
      const r = await call(path, body);
      expect(r.status).toBe(400);
      const e = (await r.json()).error;
      expect(e).toMatchObject({ type: 'invalid_request_error', code, param });
    });
  }
  it('a bad bias is refused before the stream starts', async () => {
    const r = await call('/v1/chat/completions', chat({ stream: true, logit_bias: { '999': 1 } }));
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toMatch(/json/);
  });
});

describe('streamed logprobs follow the text', () => {
  const lp = (id: number) => ({ id, logprob: -id / 10, top: [{ id, logprob: -id / 10 }] });
  async function* events(): AsyncGenerator<TokenEvent, GenerationOutcome> {
    yield { id: 65, text: '', logprob: lp(65) }; // held back (a possible stop)
    yield { id: 66, text: 'AB', logprob: lp(66) };
    yield { id: 67, text: '', logprob: lp(67) }; // held back to the end, then cut by the stop
    return {
      tokenIds: [65, 66, 67],
      text: 'AB',
      finishReason: 'stop',
      promptTokens: 1,
      generatedTokens: 3,
      timings: { prefillMs: 0, decodeMs: 0, totalMs: 0, firstTokenMs: 0 },
      cachedPromptTokens: 0,
    };
  }
  const ident = { id: 'x', created: 0, model: 'm' };
  async function* one(): AsyncGenerator<ChoiceRun, void> {
    yield { index: 0, events: events(), countsPrompt: true };
  }
  const collect = async (g: AsyncGenerator<string, void>) => {
    const out: { choices: Record<string, unknown>[] }[] = [];
    for await (const s of g) if (!s.includes('[DONE]')) out.push(JSON.parse(s.slice(6)));
    return out;
  };

  it('chat: held-back tokens go with the chunk that shows their text; the rest before the finish chunk', async () => {
    const names = new TokenNames(model.tokenizer);
    const c = await collect(completionChunks('chat', ident, one(), false, names, true));
    const rows = c.map((x) => [
      x.choices[0].delta,
      (x.choices[0].logprobs as { content: { id: number }[] } | null)?.content.map((e) => e.id) ?? null,
      x.choices[0].finish_reason,
    ]);
    expect(rows).toEqual([
      [{ role: 'assistant', content: '' }, null, null],
      [{ content: 'AB' }, [65, 66], null],
      [{ content: '' }, [67], null],
      [{}, null, 'stop'],
    ]);
  });

  it('completions: text_offset runs on across chunks', async () => {
    const names = new TokenNames(model.tokenizer);
    const c = await collect(completionChunks('completion', ident, one(), false, names, true));
    const offsets = c.map((x) => (x.choices[0].logprobs as { text_offset: number[] } | null)?.text_offset ?? null);
    expect(offsets).toEqual([[0, 1], [2], null]);
  });
});

describe('the OpenAI SDK reads them', () => {
  const client = () => openAIFor(app);

  it("chat.completions.stream() accumulates the streamed logprobs into the non-streamed response's", async () => {
    const params = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'say something' }],
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
      presence_penalty: 0.5,
      frequency_penalty: 0.5,
      logit_bias: { '70': 2 },
    };
    const whole = await client().chat.completions.create(params);
    const final = await client().chat.completions.stream(params).finalChatCompletion();
    expect(final.choices[0].message.content).toBe(whole.choices[0].message.content);
    expect(final.choices[0].logprobs?.content).toEqual(whole.choices[0].logprobs?.content);
    expect(whole.choices[0].logprobs?.content).toHaveLength(whole.usage!.completion_tokens);
  });

  it('completions.create with logprobs', async () => {
    const r = await client().completions.create({
      model: MODEL,
      prompt: 'the cat',
      max_tokens: 4,
      temperature: 0,
      logprobs: 3,
    });
    expect(r.choices[0].logprobs?.tokens).toHaveLength(r.usage!.completion_tokens);
    expect(Object.keys(r.choices[0].logprobs!.top_logprobs![0]).length).toBeGreaterThan(0);
  });
});
