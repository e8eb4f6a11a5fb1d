// Batched decode over HTTP: requests in flight at once decode as one batch on the wasm backend
// (InferenceConfig.maxBatchSize), and each gets the answer it gets alone, token for token.
import { beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { createApp } from '../../src/http/app.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';
import { metric, post, sseData } from './helpers.ts';

const headers = { 'content-type': 'application/json' };
let bytes: Uint8Array;

beforeAll(async () => {
  bytes = await synthBytes({ qtype: 'tq2_0', seed: 12, activation: 'silu', embdType: 'q8_0' });
});

async function served(maxBatchSize?: number) {
  // no prompt cache: a request alone and the same request later must do the same work
  const model = await BitNetModel.fromFile(new MemorySource(bytes, 'batching'), {
    backend: 'wasm',
    maxBatchSize,
    promptCacheEntries: 0,
  });
  const app = createApp({ model, modelId: 'm', limits: { maxConcurrent: 4, maxQueue: 8 } });
  return { model, app };
}

// four different conversations, sampled (temperature, seeds), long enough to overlap
const bodies = [0, 1, 2, 3].map((j) => ({
  messages: [{ role: 'user', content: `question number ${j}${' and more'.repeat(j)}` }],
  max_tokens: 12,
  temperature: 0.8,
  seed: 100 + j,
}));

describe('batched decode over HTTP', () => {
  it('four concurrent requests decode together; each answer equals its run alone; /metrics counts the batches', async () => {
    const { model, app } = await served();
    expect(model.engine.backendName).toBe('wasm');
    const ask = async (b: object) => (await app.request(...post('/v1/chat/completions', b, headers))).json();
    const alone = [];
    for (const b of bodies) alone.push(await ask(b));
    const before = { ...model.engine.decodeStats };
    expect(before.largestBatch).toBe(1);
    const together = await Promise.all(bodies.map(ask));
    for (let j = 0; j < bodies.length; j++) {
      expect(together[j].choices[0].message.content, `request ${j}`).toBe(alone[j].choices[0].message.content);
      expect(together[j].usage, `request ${j}`).toEqual(alone[j].usage);
    }
    const after = model.engine.decodeStats;
    expect(after?.largestBatch).toBeGreaterThanOrEqual(3);
    // fewer kernel runs than steps: the steps shared runs
    const runs = (after?.runs ?? 0) - (before.runs ?? 0);
    const steps = (after?.steps ?? 0) - (before.steps ?? 0);
    expect(steps).toBeGreaterThan(runs);
    const text = await (await app.request('/metrics')).text();
    expect(metric(text, 'bitnet_decode_batches_total')).toBe(after?.runs);
    expect(metric(text, 'bitnet_decode_steps_total')).toBe(after?.steps);
    // every prompt was prefilled (8 requests, each one chunk); none waited behind decode steps here
    expect(metric(text, 'bitnet_prefill_chunks_total')).toBe(after?.prefillChunks);
    expect(after?.prefillChunks).toBeGreaterThanOrEqual(8);
    expect(metric(text, 'bitnet_prefill_chunks_shortened_total')).toBe(after?.sharedPrefillChunks);
  });

  it('streamed concurrent requests also batch and stream the same text; maxBatchSize 1 turns batching off', async () => {
    const { model, app } = await served();
    const streamText = async (b: object) => {
      const r = await app.request(...post('/v1/chat/completions', { ...b, stream: true }, headers));
      return sseData(await r.text())
        .filter((d) => d !== '[DONE]')
        .map((d) => JSON.parse(d).choices[0]?.delta?.content ?? '')
        .join('');
    };
    const alone = [];
    for (const b of bodies) alone.push(await streamText(b));
    const together = await Promise.all(bodies.map(streamText));
    expect(together).toEqual(alone);
    expect(model.engine.decodeStats?.largestBatch).toBeGreaterThanOrEqual(2);

    const off = await served(1);
    const offTogether = await Promise.all(
      bodies.map(async (b) => {
        const r = await off.app.request(...post('/v1/chat/completions', b, headers));
        return (await r.json()).choices[0].message.content;
      }),
    );
    expect(offTogether).toEqual(together);
    expect(off.model.engine.decodeStats).toMatchObject({ runs: 0, largestBatch: 0 }); // every step alone
  });

  it('a bad maxBatchSize is a typed error before anything loads', async () => {
    await expect(BitNetModel.fromFile(new MemorySource(bytes, 'batching'), { maxBatchSize: 0 })).rejects.toMatchObject({
      code: 'INVALID_MODEL_CONFIG',
      details: { field: 'maxBatchSize' },
    });
  });
});
