// Several choices in one request: OpenAI's `n`, and several prompts in /v1/completions (what
// evaluation harnesses batch), streamed or not, with usage over all of them.
import type OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { metric, openAIFor, post, sseData, tinyModel, waitFor } from './helpers.ts';

let model: BitNetModel;
let app: ReturnType<typeof createApp>;
const headers = { 'content-type': 'application/json' };
const call = (path: string, body: unknown) => app.request(...post(path, body, headers));
const chat = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: 'user', content: 'tell me something' }],
  max_tokens: 6,
  temperature: 0.9,
  seed: 7,
  ...extra,
});

beforeAll(async () => {
  model = await tinyModel();
  app = createApp({ model, modelId: 'm', limits: { maxConcurrent: 1, maxQueue: 0 } });
});

type Chunk = {
  choices: { index: number; delta?: { content?: string }; text?: string; finish_reason: string | null }[];
  usage?: Record<string, unknown> | null;
};
const chunksOf = async (r: Response): Promise<Chunk[]> =>
  sseData(await r.text())
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d));

describe('n choices', () => {
  it('chat: n seeded choices, choice 0 is the n = 1 answer, choice j samples with seed + j; usage over all', async () => {
    const three = await (await call('/v1/chat/completions', chat({ n: 3 }))).json();
    expect(three.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2]);
    const alone = async (seed: number) =>
      (await (await call('/v1/chat/completions', chat({ seed }))).json()) as {
        choices: { message: { content: string } }[];
        usage: { prompt_tokens: number; completion_tokens: number };
      };
    const one = await alone(7);
    const texts = three.choices.map((c: { message: { content: string } }) => c.message.content);
    expect(texts).toEqual([
      one.choices[0].message.content,
      (await alone(8)).choices[0].message.content,
      (await alone(9)).choices[0].message.content,
    ]);
    expect(new Set(texts).size).toBeGreaterThan(1);
    // the prompt counts once; the completions add up
    expect(three.usage.prompt_tokens).toBe(one.usage.prompt_tokens);
    expect(three.usage.completion_tokens).toBe(6 * 3);
    expect(three.usage.total_tokens).toBe(three.usage.prompt_tokens + 18);
  });

  it('chat, streamed: each choice in turn, its chunks naming its index, one finish each, then the usage', async () => {
    const whole = await (await call('/v1/chat/completions', chat({ n: 3 }))).json();
    const chunks = await chunksOf(
      await call('/v1/chat/completions', chat({ n: 3, stream: true, stream_options: { include_usage: true } })),
    );
    const text = [0, 1, 2].map((i) =>
      chunks
        .flatMap((c) => c.choices)
        .filter((c) => c.index === i)
        .map((c) => c.delta?.content ?? '')
        .join(''),
    );
    expect(text).toEqual(whole.choices.map((c: { message: { content: string } }) => c.message.content));
    const finishes = chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason !== null);
    expect(finishes.map((c) => c.index)).toEqual([0, 1, 2]);
    // in order: no chunk of choice i after one of choice i + 1
    const order = chunks.flatMap((c) => c.choices.map((x) => x.index));
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(chunks.at(-1)?.usage).toMatchObject({ completion_tokens: 18 });
  });

  it('the OpenAI SDK reads n choices', async () => {
    const client = openAIFor(app);
    const r = await client.chat.completions.create({ model: 'm', ...chat({ n: 2 }) } as never);
    expect((r as OpenAI.ChatCompletion).choices).toHaveLength(2);
  });
});

describe('several prompts in /v1/completions', () => {
  it('one choice per prompt (× n), prompt-major, each what the prompt alone gives', async () => {
    const body = { prompt: ['the cat', 'a dog'], max_tokens: 4, temperature: 0, n: 2 };
    const j = await (await call('/v1/completions', body)).json();
    expect(j.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2, 3]);
    const alone = async (prompt: string) =>
      (await (await call('/v1/completions', { prompt, max_tokens: 4, temperature: 0 })).json()) as {
        choices: { text: string }[];
        usage: { prompt_tokens: number };
      };
    const [cat, dog] = [await alone('the cat'), await alone('a dog')];
    // greedy: both choices of a prompt are its answer
    expect(j.choices.map((c: { text: string }) => c.text)).toEqual([
      cat.choices[0].text,
      cat.choices[0].text,
      dog.choices[0].text,
      dog.choices[0].text,
    ]);
    expect(j.usage.prompt_tokens).toBe(cat.usage.prompt_tokens + dog.usage.prompt_tokens);
  });

  it('a batch of token-id prompts scored with echo (an evaluation harness with batch_size > 1)', async () => {
    const prompts = [
      [1, 72, 101, 108, 108, 111],
      [1, 119, 111, 114, 108, 100, 33],
    ];
    const j = await (
      await call('/v1/completions', { prompt: prompts, max_tokens: 0, echo: true, logprobs: 1, temperature: 0 })
    ).json();
    expect(j.choices).toHaveLength(2);
    for (const [i, ids] of prompts.entries()) {
      const single = await (
        await call('/v1/completions', { prompt: ids, max_tokens: 0, echo: true, logprobs: 1, temperature: 0 })
      ).json();
      expect(j.choices[i].logprobs).toEqual(single.choices[0].logprobs);
      expect(j.choices[i].text).toBe(single.choices[0].text);
    }
    expect(j.usage.prompt_tokens).toBe(13);
  });

  it('streamed: the prompts in turn, each chunk naming its index', async () => {
    const chunks = await chunksOf(
      await call('/v1/completions', { prompt: ['the cat', 'a dog'], max_tokens: 4, temperature: 0, stream: true }),
    );
    const j = await (
      await call('/v1/completions', { prompt: ['the cat', 'a dog'], max_tokens: 4, temperature: 0 })
    ).json();
    for (const i of [0, 1]) {
      const text = chunks
        .flatMap((c) => c.choices)
        .filter((c) => c.index === i)
        .map((c) => c.text ?? '')
        .join('');
      expect(text).toBe(j.choices[i].text);
    }
  });

  it('a client that leaves during choice 2 of 3 frees the slot; a bad prompt among several fails the request first', async () => {
    const ac = new AbortController();
    const [path, init] = post('/v1/chat/completions', chat({ n: 3, max_tokens: 60, stream: true }), headers);
    const r = await app.request(path, { ...init, signal: ac.signal });
    const reader = r.body!.getReader();
    const dec = new TextDecoder();
    let seen = '';
    while (!seen.includes('"index":1')) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += dec.decode(value);
    }
    expect(seen).toContain('"index":1');
    ac.abort();
    await reader.cancel();
    await waitFor(
      async () => metric(await (await app.request('/metrics')).text(), 'bitnet_active_generations') === 0,
      'the slot to be freed',
    );
    // maxQueue 0: a held slot would make this a 429
    expect((await call('/v1/chat/completions', chat({ max_tokens: 1 }))).status).toBe(200);
    // the first prompt is fine, the second has an id outside the vocabulary: refused before any runs
    const promptTokens = async () =>
      metric(await (await app.request('/metrics')).text(), 'bitnet_tokens_total', { type: 'prompt' });
    const before = await promptTokens();
    const bad = await call('/v1/completions', {
      prompt: [
        [1, 2],
        [1, 99999],
      ],
      max_tokens: 2,
    });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatchObject({ code: 'BAD_TOKEN', param: 'prompt' });
    expect(await promptTokens()).toBe(before);
  });
});

describe('a backend that runs generations together (cuda: runsGenerationsTogether)', () => {
  // The tiny model behind an engine that says its backend batches concurrent generations, and
  // counts how many of its generations are running at once.
  let live = 0;
  let maxLive = 0;
  const endedAborted: boolean[] = [];
  let together: ReturnType<typeof createApp>;
  beforeAll(() => {
    const served: ServedModel = {
      tokenizer: model.tokenizer,
      modelInfo: () => model.modelInfo(),
      engine: {
        backendName: 'batching',
        runsGenerationsTogether: true,
        check: (p, c) => model.engine.check(p, c),
        stream: (p, c, s) => {
          const it = model.engine.stream(p, c, s);
          // seed 1000 fails at its second token; seeds 1001.. are slow (20 ms a token)
          const seed = Number(c.seed);
          return (async function* () {
            live++;
            maxLive = Math.max(maxLive, live);
            let n = 0;
            try {
              let r = await it.next();
              while (!r.done) {
                if (seed === 1000 && ++n === 2) throw new Error('choice 0 broke');
                if (seed > 1000) await new Promise((w) => setTimeout(w, 20));
                yield r.value;
                r = await it.next();
              }
              return r.value;
            } finally {
              await it.return(undefined as never).catch(() => {}); // the engine's generator frees its sequence
              if (seed > 1000) endedAborted.push(s?.aborted === true);
              live--;
            }
          })();
        },
      },
    };
    // one slot and no queue: the choices of a request share its slot
    together = createApp({ model: served, modelId: 'm', limits: { maxConcurrent: 1, maxQueue: 0 } });
  });
  const ask = (path: string, body: unknown) => together.request(...post(path, body, headers));

  it('n choices and several prompts start at once; answers, order and usage are those of runs in turn', async () => {
    maxLive = 0;
    const want = await (await call('/v1/chat/completions', chat({ n: 3 }))).json();
    const got = await (await ask('/v1/chat/completions', chat({ n: 3 }))).json();
    expect(maxLive).toBe(3);
    expect(got.choices).toEqual(want.choices);
    expect(got.usage).toEqual(want.usage);
    // streamed: the same chunks in the same order (choice 0, then 1, then 2)
    const body = chat({ n: 3, stream: true, stream_options: { include_usage: true } });
    const strip = (cs: Chunk[]) => cs.map((c) => ({ choices: c.choices, usage: c.usage }));
    maxLive = 0;
    const streamed = strip(await chunksOf(await ask('/v1/chat/completions', body)));
    expect(maxLive).toBe(3);
    expect(streamed).toEqual(strip(await chunksOf(await call('/v1/chat/completions', body))));
    const prompts = { prompt: ['the cat', 'a dog'], max_tokens: 4, temperature: 0, n: 2 };
    maxLive = 0;
    const many = await (await ask('/v1/completions', prompts)).json();
    expect(maxLive).toBe(4);
    expect(many.choices).toEqual((await (await call('/v1/completions', prompts)).json()).choices);
  });

  it('a choice that fails stops the others (not streamed: the error answers)', async () => {
    const r = await ask('/v1/chat/completions', chat({ n: 3, max_tokens: 100, seed: 1000 }));
    expect(r.status).toBe(500);
    await waitFor(() => live === 0, 'every generation to stop');
    // choices 1 and 2 (100 tokens at 20 ms each) were cancelled, not left to finish
    expect(endedAborted).toEqual([true, true]);
  });

  it('a client that leaves cancels every choice and frees the one slot', async () => {
    const ac = new AbortController();
    const [path, init] = post('/v1/chat/completions', chat({ n: 3, max_tokens: 60, stream: true }), headers);
    const r = await together.request(path, { ...init, signal: ac.signal });
    const reader = r.body!.getReader();
    await reader.read();
    expect(live).toBe(3);
    ac.abort();
    await reader.cancel();
    await waitFor(() => live === 0, 'every generation to stop');
    await waitFor(
      async () => metric(await (await together.request('/metrics')).text(), 'bitnet_active_generations') === 0,
      'the slot to be freed',
    );
    expect((await ask('/v1/chat/completions', chat({ max_tokens: 1 }))).status).toBe(200);
  });
});
