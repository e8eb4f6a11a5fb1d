// The prompt cache (src/generate/prompt-cache.ts): which entry a prompt takes, and that a reused
// prefix gives exactly what a fresh prefill gives, on both backends that keep one.
import { BitNetModel, GenerationConfig } from 'bitnet-edge';
import { beforeAll, describe, expect, it } from 'vitest';
import { PromptCache, type ReusableSequence } from '../../src/generate/prompt-cache.ts';
import { createApp } from '../../src/http/app.ts';
import { synthFile } from '../helpers/models.ts';

/** A fake sequence: `held` positions, a log of what was done to it. */
function fakeSeq(held: number, log: string[], name: string): ReusableSequence {
  let len = held;
  return {
    release: () => log.push(`release ${name}`),
    length: () => len,
    truncate: (n) => {
      len = Math.min(len, n);
      log.push(`truncate ${name} ${n}`);
    },
    setIdle: () => {},
  };
}

describe('PromptCache', () => {
  it('hands out the entry with the longest shared prefix, cut to it, keeping the last prompt token to compute', () => {
    const log: string[] = [];
    const c = new PromptCache<ReusableSequence>(3);
    c.put(fakeSeq(4, log, 'a'), [1, 2, 3, 4]);
    c.put(fakeSeq(5, log, 'b'), [1, 2, 9, 9, 9]);
    expect(c.take([7, 8])).toBeUndefined(); // nothing shared
    const hit = c.take([1, 2, 3, 4, 5, 6]);
    expect(hit?.reuse).toBe(4);
    expect(log).toEqual(['truncate a 4']);
    expect(c.size).toBe(1); // taken out: no one else gets it
    // the whole prompt cached: all but its last token is reused
    c.put(hit!.seq, [1, 2, 3, 4, 5, 6]);
    expect(c.take([1, 2, 3])?.reuse).toBe(2);
    expect(c.take([1])).toBeUndefined();
  });

  it('drops entries the KV cache evicted, and the oldest past capacity', () => {
    const log: string[] = [];
    const c = new PromptCache<ReusableSequence>(2);
    const evicted = fakeSeq(0, log, 'gone'); // holds 0 of its 3 tokens
    c.put(evicted, [1, 2, 3]);
    c.put(fakeSeq(3, log, 'x'), [5, 6, 7]);
    expect(c.take([1, 2, 3, 4])).toBeUndefined();
    expect(log).toEqual(['release gone']);
    c.put(fakeSeq(1, log, 'y'), [8]);
    c.put(fakeSeq(1, log, 'z'), [9]);
    expect(log).toEqual(['release gone', 'release x']);
    c.clear();
    expect(c.size).toBe(0);
    new PromptCache<ReusableSequence>(0).put(fakeSeq(1, log, 'off'), [1]);
    expect(log.at(-1)).toBe('release off');
  });
});

let path: string;
beforeAll(async () => {
  path = await synthFile({ qtype: 'i2_s', seed: 33, arch: 'bitnet-b1.58' });
});

describe('a reused prefix equals a fresh prefill, bit for bit', () => {
  for (const backend of ['wasm', 'reference'] as const) {
    it(`${backend}: a conversation's next turn, and a prompt that leaves the cached one midway`, async () => {
      const cached = await BitNetModel.fromFile(path, { backend });
      const fresh = await BitNetModel.fromFile(path, { backend, promptCacheEntries: 0 });
      const cfg = GenerationConfig.greedy().withMaxNewTokens(6).withLogprobs(2);
      const run = async (m: BitNetModel, ids: number[]) => m.generateDetailed({ ids }, cfg);
      const turn1 = Array.from({ length: 30 }, (_, i) => (i * 7 + 3) % 250);
      const a1 = await run(cached, turn1);
      expect(a1.stats.cachedPromptTokens).toBe(0);
      // the next turn: the first turn, its answer, and a new message
      const turn2 = [...turn1, ...a1.tokenIds, 11, 12, 13];
      const a2 = await run(cached, turn2);
      const b2 = await run(fresh, turn2);
      // the last generated token was sampled but never run through the model: it is prefilled now
      expect(a2.stats.cachedPromptTokens).toBe(turn1.length + a1.tokenIds.length - 1);
      expect(b2.stats.cachedPromptTokens).toBe(0);
      expect(a2.tokenIds).toEqual(b2.tokenIds);
      expect(a2.logprobs).toEqual(b2.logprobs);
      // a prompt that shares the first 20 tokens only
      const other = [...turn1.slice(0, 20), 99, 98, 97];
      const a3 = await run(cached, other);
      expect(a3.stats.cachedPromptTokens).toBe(20);
      expect([a3.tokenIds, a3.logprobs]).toEqual([
        (await run(fresh, other)).tokenIds,
        (await run(fresh, other)).logprobs,
      ]);
      expect(cached.engine.promptCacheSize).toBeGreaterThan(0);
      expect(fresh.engine.promptCacheSize).toBe(0);
    });
  }

  it('an entry the KV cache evicted under memory pressure is not used', async () => {
    // room for 4 blocks (16 positions each) per layer: one sequence of 38 positions takes 3, so the
    // second prompt's sequence evicts the first, which sits in the prompt cache
    const probe = (await BitNetModel.fromFile(path)).engine.cache;
    const maxBytes = probe.blockBytes * probe.shape.nLayers * 4;
    const m = await BitNetModel.fromFile(path, { kvCache: { maxBytes, onFull: 'evict' } });
    const cfg = GenerationConfig.greedy().withMaxNewTokens(2);
    const p1 = Array.from({ length: 36 }, (_, i) => i + 1);
    const p2 = Array.from({ length: 36 }, (_, i) => i + 100);
    await m.generateDetailed({ ids: p1 }, cfg);
    await m.generateDetailed({ ids: p2 }, cfg);
    const again = await m.generateDetailed({ ids: [...p1, 7] }, cfg);
    expect(again.stats.cachedPromptTokens).toBe(0);
    const ref = await BitNetModel.fromFile(path, { promptCacheEntries: 0 });
    expect(again.tokenIds).toEqual((await ref.generateDetailed({ ids: [...p1, 7] }, cfg)).tokenIds);
  });

  it('idle entries are evicted before sequences in use, under LFU and even with onFull error', async () => {
    const probe = (await BitNetModel.fromFile(path)).engine.cache;
    const maxBytes = probe.blockBytes * probe.shape.nLayers * 4;
    const cfg = GenerationConfig.greedy().withMaxNewTokens(2);
    for (const kvCache of [
      { maxBytes, onFull: 'error' as const },
      { maxBytes, onFull: 'evict' as const, evictionPolicy: 'lfu' as const },
    ]) {
      const m = await BitNetModel.fromFile(path, { kvCache });
      // 38 positions each: one sequence fits, two do not; the first is idle in the prompt cache
      await m.generateDetailed({ ids: Array.from({ length: 36 }, (_, i) => i + 1) }, cfg);
      expect(m.engine.promptCacheSize).toBe(1);
      const r = await m.generateDetailed({ ids: Array.from({ length: 36 }, (_, i) => i + 100) }, cfg);
      expect(r.tokenIds, JSON.stringify(kvCache)).toHaveLength(2);
      expect(m.engine.cache.stats().evictions).toBe(1);
    }
  });

  it('is off with int8 KV compression (old blocks depend on how long the sequence was)', async () => {
    const m = await BitNetModel.fromFile(path, { backend: 'reference', kvCache: { compressOldEntries: true } });
    const ids = Array.from({ length: 20 }, (_, i) => i + 1);
    await m.generateDetailed({ ids }, GenerationConfig.greedy().withMaxNewTokens(2));
    const r = await m.generateDetailed({ ids: [...ids, 5] }, GenerationConfig.greedy().withMaxNewTokens(2));
    expect([r.stats.cachedPromptTokens, m.engine.promptCacheSize]).toEqual([0, 0]);
  });

  it('a generation that fails mid-forward leaves nothing behind', async () => {
    const m = await BitNetModel.fromFile(path, { backend: 'reference' });
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(
      m.generateDetailed({ ids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }, GenerationConfig.greedy(), ac.signal),
    ).rejects.toThrow('stop');
    expect([m.engine.promptCacheSize, m.engine.cache.size()]).toEqual([0, 0]);
  });

  it('over HTTP: the usage says how many prompt tokens were reused', async () => {
    const model = await BitNetModel.fromFile(path);
    const app = createApp({ model, modelId: 'm' });
    const ask = async (messages: { role: string; content: string }[]) =>
      (
        await app.request('/v1/chat/completions', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ messages, max_tokens: 4, temperature: 0 }),
        })
      ).json();
    const first = [{ role: 'user', content: 'hello there, how are you today?' }];
    const r1 = await ask(first);
    expect(r1.usage.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    const r2 = await ask([
      ...first,
      { role: 'assistant', content: r1.choices[0].message.content },
      { role: 'user', content: 'and now?' },
    ]);
    expect(r2.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(r1.usage.prompt_tokens - 1);
    expect(r2.usage.prompt_tokens_details.cached_tokens).toBeLessThan(r2.usage.prompt_tokens);
  });
});
