import {
  BitNetError,
  BitNetModel,
  Device,
  GenerationConfig,
  InferenceConfig,
  KVCacheConfig,
  ModelConfig,
} from 'bitnet-edge';
import { beforeAll, describe, expect, it } from 'vitest';
import { tokenLogprob } from '../../src/generate/logprobs.ts';
import { synthFile } from '../helpers/models.ts';

let path: string;
beforeAll(async () => {
  path = await synthFile({ qtype: 'i2_s', seed: 21, arch: 'bitnet-b1.58' });
});

describe('BitNetModel', () => {
  it('greedy output is deterministic', async () => {
    const m = await BitNetModel.fromFile(path);
    const cfg = GenerationConfig.greedy().withMaxNewTokens(12);
    const a = await m.generateDetailed('the cat', cfg);
    const b = await m.generateDetailed('the cat', cfg);
    expect(a.tokenIds).toHaveLength(12);
    expect(b.tokenIds).toEqual(a.tokenIds);
    expect(b.text).toBe(a.text);
  });

  it('streamed text equals generate() text for the same seed', async () => {
    const m = await BitNetModel.fromFile(path);
    const cfg = new GenerationConfig({ maxNewTokens: 16, temperature: 0.9, seed: 1234 });
    let streamed = '';
    for await (const piece of m.generateStream('once upon', cfg)) streamed += piece;
    expect(streamed.length).toBeGreaterThan(0);
    expect(await m.generate('once upon', cfg)).toBe(streamed);
    // a different seed gives a different sample
    expect(await m.generate('once upon', cfg.withSeed(99))).not.toBe(streamed);
  });

  it('the stream is a cancellable ReadableStream and frees its cache entries', async () => {
    const m = await BitNetModel.fromFile(path);
    const s = m.generateStream('abc', { maxNewTokens: 200, seed: 1 });
    expect(s).toBeInstanceOf(ReadableStream);
    const reader = s.getReader();
    await reader.read();
    expect(m.engine.cache.size()).toBeGreaterThan(0);
    await reader.cancel();
    // the sequence went to the prompt cache (a later "abc…" prompt reuses it); nothing else is held
    expect(m.engine.cache.sequenceIds()).toHaveLength(1);
    expect(m.engine.promptCacheSize).toBe(1);
    m.engine.clearPromptCache();
    expect(m.engine.cache.size()).toBe(0);
    const off = await BitNetModel.fromFile(path, { promptCacheEntries: 0 });
    const r2 = off.generateStream('abc', { maxNewTokens: 200, seed: 1 }).getReader();
    await r2.read();
    await r2.cancel();
    expect(off.engine.cache.size()).toBe(0);
  });

  it('lastMetrics reports tokens/s; resetMetrics clears it', async () => {
    const m = await BitNetModel.fromFile(path);
    expect(m.lastMetrics()).toBeUndefined();
    await m.generate('hi', { maxNewTokens: 5, seed: 2 });
    const met = m.lastMetrics()!;
    expect(met.generatedTokens).toBeGreaterThan(0);
    expect(met.tokensPerSecond).toBeGreaterThan(0);
    expect(met.timeToFirstToken).toBeGreaterThan(0);
    expect(met.memoryUsage).toBeGreaterThan(0);
    m.resetMetrics();
    expect(m.lastMetrics()).toBeUndefined();
  });

  it('stop sequences cut the text across token boundaries', async () => {
    const m = await BitNetModel.fromFile(path);
    const cfg = new GenerationConfig({ maxNewTokens: 24, seed: 5, temperature: 0.8 });
    const full = await m.generateDetailed('x', cfg);
    const stop = full.text.slice(5, 8);
    const cut = await m.generateDetailed('x', cfg.withStopSequence(stop));
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
  });

  it('modelInfo and config describe the real model', async () => {
    const m = await BitNetModel.fromFile(path);
    const info = m.modelInfo();
    expect(info.architecture).toBe('bitnet-b1.58');
    expect(info.quantization.type).toBe('I2_S');
    expect(info.synthetic).toBe(true);
    expect(m.config().hiddenSize).toBe(256);
    expect(m.config().numLayers).toBe(2);
  });

  it('a missing file raises a BitNetError', async () => {
    await expect(BitNetModel.fromFile('/nonexistent/model.gguf')).rejects.toSatisfy(
      (e: unknown) => e instanceof BitNetError && e.kind === 'Io' && e.code === 'FILE_NOT_FOUND',
    );
  });

  it('an unavailable device is refused before loading, with the reason', async () => {
    await expect(BitNetModel.fromFile(path, new ModelConfig({ device: Device.Cuda(0) }))).rejects.toSatisfy(
      (e: unknown) => e instanceof BitNetError && e.kind === 'Device' && e.code === 'DEVICE_UNAVAILABLE',
    );
    expect(Device.availableDevices().map(String)).toEqual(['cpu']);
    expect(Device.Cpu.isAvailable()).toBe(true);
    expect(Device.Cuda(0).isAvailable()).toBe(false);
    expect(Device.Metal.isAvailable()).toBe(false);
    expect(Device.Cpu.capabilities().wasmSimd).toBe(true);
    const mem = Device.Cpu.memoryInfo();
    expect(mem.total).toBeGreaterThan(mem.free);
    expect(() => Device.Cuda(0).memoryInfo()).toThrow(BitNetError);
  });

  it('a full KV cache raises a Capacity error in error mode', async () => {
    const m = await BitNetModel.fromFile(path, {
      kvCache: new KVCacheConfig({ maxBytes: 64 * 1024, onFull: 'error' }),
    });
    await expect(m.generate('hello there', { maxNewTokens: 100, seed: 1 })).rejects.toSatisfy(
      (e: unknown) => e instanceof BitNetError && e.kind === 'Capacity',
    );
    expect(m.engine.cache.size()).toBe(0); // the failed sequence was released
  });

  it('a prompt longer than the context is refused', async () => {
    const m = await BitNetModel.fromFile(path, { maxSeqLen: 16 });
    await expect(m.generateDetailed({ ids: new Array(40).fill(3) }, { maxNewTokens: 2 })).rejects.toSatisfy(
      (e: unknown) => e instanceof BitNetError && e.code === 'PROMPT_TOO_LONG',
    );
  });
});

describe('bad input to the API is refused up front, with typed errors', () => {
  const code = (c: string) => (e: unknown) => e instanceof BitNetError && e.code === c;

  it('generateStream throws PROMPT_TOO_LONG / BAD_TOKEN when called, before a stream exists', async () => {
    const m = await BitNetModel.fromFile(path, { maxSeqLen: 16 });
    expect(() => m.generateStream({ ids: new Array(40).fill(3) })).toThrow(
      expect.objectContaining({ code: 'PROMPT_TOO_LONG' }),
    );
    expect(() => m.generateStream({ ids: [1, 1e9] })).toThrow(expect.objectContaining({ code: 'BAD_TOKEN' }));
    expect(m.engine.cache.stats().bytes).toBe(0);
  });

  it('a prompt that is neither text nor {ids} is a Config BAD_PROMPT error', async () => {
    const m = await BitNetModel.fromFile(path);
    await expect(m.generate(42 as unknown as string)).rejects.toSatisfy(code('BAD_PROMPT'));
    await expect(m.generateDetailed({ ids: 'abc' } as unknown as { ids: number[] })).rejects.toSatisfy(
      code('BAD_PROMPT'),
    );
  });

  it('an unknown preTokenizer is refused by the config, before the file is read', async () => {
    await expect(BitNetModel.fromFile('/nonexistent/x.gguf', { preTokenizer: 'foo' })).rejects.toSatisfy(
      (e: unknown) =>
        e instanceof BitNetError &&
        e.code === 'PRETOKENIZER_UNKNOWN' &&
        /llama-bpe/.test(e.message) &&
        e.kind === 'Tokenization',
    );
  });

  it("text for a model whose tokenizer failed to build names that failure, not 'no tokenizer'", async () => {
    const { InferenceEngine } = await import('../../src/api/inference-engine.ts');
    const m = await BitNetModel.fromFile(path);
    const why = BitNetError.Tokenization('PRETOKENIZER_UNKNOWN', "unknown pre-tokenizer 'qwen9'", { name: 'qwen9' });
    const broken = { ...m.engine.model, tokenizer: undefined, tokenizerError: why };
    const eng = new InferenceEngine(broken, undefined, Device.Cpu, new InferenceConfig(), { backend: 'reference' });
    expect(() => eng.encodePrompt('hi')).toThrow(
      expect.objectContaining({ code: 'PRETOKENIZER_UNKNOWN', message: expect.stringMatching(/qwen9.*token ids/) }),
    );
    expect(eng.encodePrompt({ ids: [1, 2] })).toEqual([1, 2]);
  });

  it('logprobs: one per generated token, log-softmax of the raw logits that token was sampled from', async () => {
    const m = await BitNetModel.fromFile(path);
    const prompt = m.engine.encodePrompt('the cat');
    const r = await m.generateDetailed({ ids: prompt }, GenerationConfig.greedy().withMaxNewTokens(6).withLogprobs(4));
    expect(r.logprobs).toHaveLength(r.tokenIds.length);
    for (let i = 0; i < r.tokenIds.length; i++) {
      const lp = r.logprobs![i];
      const logits = await m.engine.nextTokenLogits([...prompt, ...r.tokenIds.slice(0, i)]);
      let max = Number.NEGATIVE_INFINITY;
      for (const l of logits) max = Math.max(max, l);
      let z = 0;
      for (const l of logits) z += Math.exp(l - max);
      expect(lp.id).toBe(r.tokenIds[i]);
      expect(lp.logprob).toBeCloseTo(logits[lp.id] - max - Math.log(z), 12);
      expect(lp.top).toHaveLength(4);
      expect(lp.top[0]).toEqual({ id: lp.id, logprob: lp.logprob }); // greedy, nothing moved the logits
    }
    expect((await m.generateDetailed({ ids: prompt }, GenerationConfig.greedy().withMaxNewTokens(2))).logprobs).toBe(
      undefined,
    );
  });

  it('promptLogprobs scores the prompt in chunks: the same as log-softmax of every row, on both backends', async () => {
    for (const backend of ['wasm', 'reference'] as const) {
      const m = await BitNetModel.fromFile(path, { backend });
      const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % m.modelInfo().vocabSize);
      const rows = await m.engine.forward(ids);
      const V = rows.shape[1];
      const expected = ids.slice(1).map((id, p) => tokenLogprob(rows.data.subarray(p * V, (p + 1) * V), id, 3));
      const r = await m.generateDetailed(
        { ids },
        GenerationConfig.greedy().withMaxNewTokens(2).withPromptLogprobs().withLogprobs(3),
      );
      expect(r.promptLogprobs, backend).toEqual([{ id: ids[0], logprob: null, top: null }, ...expected]);
      expect(r.tokenIds).toHaveLength(2);
      // score only: nothing generated, the same entries
      const s = await m.generateDetailed(
        { ids },
        new GenerationConfig({ maxNewTokens: 0, promptLogprobs: true, topLogprobs: 3 }),
      );
      expect([s.tokenIds, s.generatedTokens, s.promptLogprobs]).toEqual([[], 0, r.promptLogprobs]);
    }
    expect(() => new GenerationConfig({ maxNewTokens: 0 }).validate()).toThrow(/0 only with promptLogprobs/);
  });

  it("perplexity: llama-perplexity's chunks and halves, from the model's own logits, on both backends", async () => {
    const results: number[] = [];
    for (const backend of ['wasm', 'reference'] as const) {
      const m = await BitNetModel.fromFile(path, { backend });
      const ids = Array.from({ length: 50 }, (_, i) => (i * 53 + 7) % m.modelInfo().vocabSize);
      const r = await m.perplexity({ ids }, { chunkSize: 24 });
      // by hand: 2 chunks of 24, BOS first where the vocabulary adds it, positions 13..23 scored
      const bos = m.tokenizer!.addBos ? m.tokenizer!.specialTokens.bosTokenId : undefined;
      let nll = 0;
      for (let c = 0; c < 2; c++) {
        const chunk = ids.slice(c * 24, (c + 1) * 24);
        if (bos !== undefined) chunk[0] = bos;
        const rows = await m.engine.forward(chunk);
        const V = rows.shape[1];
        for (let j = 13; j < 24; j++) nll -= tokenLogprob(rows.data.subarray((j - 1) * V, j * V), chunk[j], 0).logprob;
      }
      expect([r.chunks, r.tokensScored]).toEqual([2, 22]);
      expect(r.meanNll, backend).toBeCloseTo(nll / 22, 12);
      results.push(r.ppl);
    }
    expect(results[0]).toBe(results[1]); // the wasm kernels equal the reference bit for bit
    const m = await BitNetModel.fromFile(path);
    const ctx = m.modelInfo().contextLength;
    await expect(m.perplexity('x', { chunkSize: ctx + 1 })).rejects.toMatchObject({
      code: 'INVALID_PERPLEXITY_CONFIG',
    });
    await expect(m.perplexity('x', { chunkSize: 8 })).rejects.toMatchObject({ code: 'TEXT_TOO_SHORT' });
  });

  it('a logit bias bans the greedy token; logprobs stay those of the model', async () => {
    const m = await BitNetModel.fromFile(path);
    const prompt = { ids: m.engine.encodePrompt('the cat') };
    const plain = await m.generateDetailed(prompt, GenerationConfig.greedy().withMaxNewTokens(1).withLogprobs(2));
    const first = plain.tokenIds[0];
    const banned = await m.generateDetailed(
      prompt,
      GenerationConfig.greedy()
        .withMaxNewTokens(1)
        .withLogprobs(2)
        .withLogitBias({ [first]: -100 }),
    );
    expect(banned.tokenIds[0]).not.toBe(first);
    expect(banned.logprobs![0].top).toEqual(plain.logprobs![0].top);
    expect(banned.tokenIds[0]).toBe(banned.logprobs![0].top[1].id);
    const V = m.modelInfo().vocabSize;
    await expect(m.generateDetailed(prompt, GenerationConfig.greedy().withLogitBias({ [V]: 1 }))).rejects.toMatchObject(
      { code: 'SAMPLER_BAD_LOGIT_BIAS', details: { field: 'logitBias', token: String(V) } },
    );
  });

  it('sampleToken checks its config and logits like GenerationConfig does', async () => {
    const m = await BitNetModel.fromFile(path);
    const V = m.modelInfo().vocabSize;
    const logits = new Float32Array(V);
    logits[7] = 5;
    const ok = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1 };
    expect(m.engine.sampleToken(logits, ok)).toBe(7);
    for (const bad of [
      { temperature: -5 },
      { topP: 0 },
      { topK: 1.5 },
      { minP: 2 },
      { repetitionPenalty: 0 },
      { seed: -1 },
    ]) {
      expect(() => m.engine.sampleToken(logits, { ...ok, ...bad }), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ code: 'INVALID_GENERATION_CONFIG' }),
      );
    }
    expect(() => m.engine.sampleToken(new Float32Array(3), ok)).toThrow(
      expect.objectContaining({ code: 'BAD_LOGITS' }),
    );
  });
});

describe('GenerationConfig', () => {
  it('has the seed defaults and presets', () => {
    const c = new GenerationConfig();
    expect(c).toMatchObject({
      maxNewTokens: 100,
      temperature: 0.7,
      topP: 0.9,
      topK: 50,
      repetitionPenalty: 1,
      skipSpecialTokens: true,
      stream: false,
    });
    expect(GenerationConfig.greedy().temperature).toBe(0);
    expect(GenerationConfig.creative().temperature).toBeGreaterThan(0.7);
    expect(GenerationConfig.balanced().validate()).toBeInstanceOf(GenerationConfig);
    const b = c
      .withMaxNewTokens(5)
      .withTemperature(0.1)
      .withTopK(3)
      .withTopP(0.5)
      .withRepetitionPenalty(1.2)
      .withSeed(9)
      .withStopSequences(['x']);
    expect(b).toMatchObject({
      maxNewTokens: 5,
      temperature: 0.1,
      topK: 3,
      topP: 0.5,
      repetitionPenalty: 1.2,
      seed: 9,
      stopSequences: ['x'],
    });
    expect(c.maxNewTokens).toBe(100); // builders do not mutate
  });
  it('has the OpenAI sampling controls: penalties, logit bias, logprobs', () => {
    const c = new GenerationConfig();
    expect(c).toMatchObject({
      presencePenalty: 0,
      frequencyPenalty: 0,
      logitBias: {},
      logprobs: false,
      topLogprobs: 0,
    });
    const bias = { 5: -100 };
    const b = c.withPresencePenalty(0.5).withFrequencyPenalty(-1).withLogitBias(bias).withLogprobs(3);
    expect(b.validate()).toMatchObject({
      presencePenalty: 0.5,
      frequencyPenalty: -1,
      logitBias: { 5: -100 },
      logprobs: true,
      topLogprobs: 3,
    });
    bias[5] = 7; // the config keeps its own copy
    expect(b.logitBias).toEqual({ 5: -100 });
    expect(b.withLogprobs(false)).toMatchObject({ logprobs: false, topLogprobs: 0 });
    expect(b.toJSON()).toMatchObject({ presencePenalty: 0.5, logitBias: { 5: -100 }, topLogprobs: 3 });
  });
  it('validate() rejects bad values', () => {
    const bad: Record<string, unknown>[] = [
      { minP: -0.1 },
      { minP: 1.5 },
      { presencePenalty: 2.5 },
      { frequencyPenalty: -3 },
      { frequencyPenalty: Number.NaN },
      { logitBias: { x: 1 } },
      { logitBias: { '-1': 1 } },
      { logitBias: { 1: 101 } },
      { logitBias: [1, 2] },
      { logitBias: null },
      { logprobs: 'yes' },
      { logprobs: true, topLogprobs: 21 },
      { logprobs: true, topLogprobs: 1.5 },
      { topLogprobs: 2 },
      { maxNewTokens: 0 },
      { maxNewTokens: 1.5 },
      { temperature: -1 },
      { temperature: Number.NaN },
      { topP: 0 },
      { topP: 1.5 },
      { topK: -1 },
      { repetitionPenalty: 0 },
      { stopSequences: [''] },
      { seed: -3 },
    ];
    for (const b of bad) expect(() => new GenerationConfig(b).validate(), JSON.stringify(b)).toThrow(BitNetError);
    expect(() => new GenerationConfig({ nope: 1 } as never)).toThrow(BitNetError);
  });
  it('InferenceConfig presets validate', () => {
    for (const c of [
      InferenceConfig.default(),
      InferenceConfig.lowLatency(),
      InferenceConfig.highThroughput(),
      InferenceConfig.memoryEfficient(),
    ]) {
      expect(c.validate()).toBeInstanceOf(InferenceConfig);
    }
    expect(() => new InferenceConfig({ numThreads: 0 }).validate()).toThrow(BitNetError);
  });
});
