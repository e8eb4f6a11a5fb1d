// The library API's lifecycle and its JS-caller edges: a loaded model never changes the caller's
// config, dispose() frees the worker threads, InferenceConfig's requestTimeout and
// maxConcurrentRequests take effect, AbortSignals end in typed errors, and settings or locations
// of the wrong kind are typed errors instead of TypeErrors.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  BitNetError,
  BitNetModel,
  Device,
  GenerationConfig,
  InferenceConfig,
  InferenceEngine,
  ModelConfig,
} from 'bitnet-edge';
import { beforeAll, describe, expect, it } from 'vitest';
import { synthFile } from '../helpers/models.ts';

let path: string; // context 128
let long: string; // context 512
beforeAll(async () => {
  path = await synthFile({ qtype: 'i2_s', seed: 31, arch: 'bitnet-b1.58' });
  long = await synthFile({ qtype: 'i2_s', seed: 32, arch: 'bitnet-b1.58', ctx: 512 });
});

const codeOf = async (p: Promise<unknown> | (() => unknown)): Promise<string> => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(BitNetError);
    return (e as BitNetError).code;
  }
  return 'no error';
};

describe('a loaded model and the config it was given', () => {
  it("loading fills a copy: the caller's config loads the next model as it was", async () => {
    const cfg = new ModelConfig({ backend: 'reference' });
    const a = await BitNetModel.fromFile(path, cfg);
    expect(cfg.maxSeqLen).toBe(2048);
    expect(cfg.vocabSize).toBe(32000);
    expect(cfg.kvCache.maxSeqLen).toBe(4096);
    const b = await BitNetModel.fromFile(long, cfg);
    expect(a.config()).not.toBe(b.config());
    expect(a.config().maxSeqLen).toBe(128);
    expect(b.config().maxSeqLen).toBe(512);
    // a 200-token prompt fits the second model's context (before, it got the first model's 128)
    const r = await b.generateDetailed({ ids: Array(200).fill(5) }, { maxNewTokens: 2 });
    expect(r.tokenIds).toHaveLength(2);
    expect(await codeOf(a.generateDetailed({ ids: Array(200).fill(5) }, { maxNewTokens: 2 }))).toBe('PROMPT_TOO_LONG');
  });

  it('a device may be given as a string; anything else that is not a Device is a typed error', async () => {
    const m = await BitNetModel.fromFile(path, { device: 'cpu' as never, backend: 'reference' });
    expect(m.config().device).toBe(Device.Cpu);
    expect(await codeOf(BitNetModel.fromFile(path, { device: {} as never }))).toBe('INVALID_MODEL_CONFIG');
    expect(await codeOf(BitNetModel.fromFile(path, { device: 'tpu' as never }))).toBe('BAD_DEVICE');
  });

  it('a location that is not a path, URL or ByteSource is BAD_LOCATION', async () => {
    for (const bad of [null, undefined, 42, '', new Uint8Array(4), {}])
      expect(await codeOf(BitNetModel.fromFile(bad as never)), String(bad)).toBe('BAD_LOCATION');
  });
});

describe('settings named like methods or inherited', () => {
  it('are unknown settings, not overwritten methods', () => {
    for (const make of [
      () => new GenerationConfig({ validate: 1 } as never),
      () => new GenerationConfig({ toJSON: 1 } as never),
      () => new GenerationConfig(JSON.parse('{"__proto__":{}}')),
      () => new GenerationConfig({ constructor: 1 } as never),
      () => new ModelConfig({ validate: 0 } as never),
      () => new InferenceConfig({ hasOwnProperty: 0 } as never),
    ])
      expect(make).toThrow(/unknown (generation|model|inference) setting/);
    expect(new GenerationConfig({ maxNewTokens: 3 }).withSeed(1).maxNewTokens).toBe(3);
    // a value of the wrong type shows as what it is: the string "0.5", not 0.5
    expect(() => new GenerationConfig({ temperature: '0.5' as never }).validate()).toThrow(/\(got "0\.5"\)$/);
    expect(() => new InferenceConfig({ numThreads: '2' as never }).validate()).toThrow(/\(got "2"\)$/);
  });
});

describe('seeds past 2^53 in JSON', () => {
  it('toJSON writes their digits and the constructor reads them back', () => {
    const big = 2n ** 63n + 5n;
    const c = new GenerationConfig({ seed: big, maxNewTokens: 4 });
    const text = JSON.stringify(c);
    expect(JSON.parse(text).seed).toBe(big.toString());
    expect(new GenerationConfig(JSON.parse(text)).seed).toBe(big);
    expect(c.withTemperature(0.5).seed).toBe(big); // with() goes through toJSON
    expect(JSON.parse(JSON.stringify(new GenerationConfig({ seed: 7n }))).seed).toBe(7);
    expect(new GenerationConfig({ seed: '12' }).seed).toBe(12);
    expect(() => new GenerationConfig({ seed: 'x12' }).validate()).toThrow(/seed must be an integer/);
    expect(() => new GenerationConfig({ seed: (2n ** 64n).toString() }).validate()).toThrow(/seed must be/);
  });
});

describe('AbortSignals', () => {
  it('an aborted or timed-out signal ends a generation with a typed error', async () => {
    // wasm: a step waits a macrotask turn, so a timer's abort lands mid-generation
    const m = await BitNetModel.fromFile(long, { backend: 'wasm' });
    const cfg = { maxNewTokens: 50 };
    expect(await codeOf(m.generateDetailed('hi', cfg, AbortSignal.abort()))).toBe('CANCELLED');
    const timedOut = AbortSignal.abort(new DOMException('late', 'TimeoutError'));
    expect(await codeOf(m.generateDetailed('hi', cfg, timedOut))).toBe('TIMEOUT');
    const ac = new AbortController();
    const run = m.generateDetailed('hi', { maxNewTokens: 400 }, ac.signal);
    setTimeout(() => ac.abort(), 20);
    expect(await codeOf(run)).toBe('CANCELLED');
    // a typed reason is kept
    const why = BitNetError.Timeout('MINE', 'mine');
    expect(await codeOf(m.generateDetailed('hi', cfg, AbortSignal.abort(why)))).toBe('MINE');
  });
});

describe('InferenceConfig limits on a directly built engine', () => {
  const engineWith = async (inf: InferenceConfig) => {
    const m = await BitNetModel.fromFile(path, { backend: 'reference' });
    const model = (m.engine as unknown as { model: InferenceEngine['model'] }).model;
    return new InferenceEngine(model, model.tokenizer, Device.Cpu, inf, { backend: 'reference' });
  };

  it('requestTimeout ends a generation with GENERATION_TIMEOUT; 0 is none', async () => {
    const e = await engineWith(new InferenceConfig({ requestTimeout: 1 }));
    expect(await codeOf(e.generate('hi', { maxNewTokens: 100 }))).toBe('GENERATION_TIMEOUT');
    // the timed-out sequence was freed (or kept as a finished one by the prompt cache): nothing else holds KV
    expect(e.cache.stats().sequences).toBe(e.promptCacheSize);
    // a consumer that stops early frees its sequence too
    const early = await engineWith(new InferenceConfig({ requestTimeout: 60_000, maxConcurrentRequests: 1 }));
    const s = early.stream('hi', { maxNewTokens: 20 });
    await s.next();
    await s.return(undefined as never);
    expect(early.cache.stats().sequences).toBe(early.promptCacheSize);
    expect((await early.generate('hi', { maxNewTokens: 2 })).tokenIds).toHaveLength(2); // its slot was released
    const none = await engineWith(new InferenceConfig({ requestTimeout: 0 }));
    expect((await none.generate('hi', { maxNewTokens: 3 })).tokenIds).toHaveLength(3);
  });

  it('maxConcurrentRequests: 1 runs generations one after another, in call order', async () => {
    const log: string[] = [];
    const drain = async (e: InferenceEngine, tag: string) => {
      const it = e.stream('hi', { maxNewTokens: 6 });
      for (let r = await it.next(); !r.done; r = await it.next()) log.push(tag);
    };
    const one = await engineWith(new InferenceConfig({ maxConcurrentRequests: 1, requestTimeout: 0 }));
    await Promise.all([drain(one, 'a'), drain(one, 'b'), drain(one, 'c')]);
    // each generation's events all come before the next one's (none interleave, as a batch would)
    expect(log.join('')).toMatch(/^a+b+c+$/);
    // a waiter whose signal aborts leaves the queue with a typed error; the others go on
    log.length = 0;
    const first = drain(one, 'a');
    const gone = one.generate('hi', { maxNewTokens: 6 }, AbortSignal.abort());
    expect(await codeOf(gone)).toBe('CANCELLED');
    await Promise.all([first, drain(one, 'b')]);
    expect(log.join('')).toMatch(/^a+b+$/);
    // without the cap the same three interleave
    log.length = 0;
    const many = await engineWith(new InferenceConfig({ maxConcurrentRequests: 16, requestTimeout: 0 }));
    await Promise.all([drain(many, 'a'), drain(many, 'b'), drain(many, 'c')]);
    expect(log.join('')).not.toMatch(/^a+b+c+$/);
  });
});

/** This process's OS threads (Linux), or undefined elsewhere. */
function threads(): number | undefined {
  try {
    return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

describe('dispose', () => {
  it('a model dropped without dispose() is collected with its wasm backend, whose reaper stops the workers', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let freed = 0;
    const registry = new FinalizationRegistry(() => freed++);
    // in a function of its own, so that no frame of this test still holds the last model
    const loadAndDrop = async (i: number) => {
      const m = await BitNetModel.fromFile(path, { backend: 'wasm', numThreads: 2 });
      await m.generate('hi', { maxNewTokens: 2 });
      expect(m.engine.numThreads).toBe(2);
      registry.register((m.engine as unknown as { engine: { backend: object } }).engine.backend, i);
    };
    for (let i = 0; i < 2; i++) await loadAndDrop(i);
    // (before, the reaper's own held value kept each backend, and so its workers, alive for good)
    for (let k = 0; k < 50 && freed < 2; k++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(freed).toBe(2);
  });

  it('frees the worker threads; every later call is MODEL_DISPOSED; twice is fine', async () => {
    const m = await BitNetModel.fromFile(path, { backend: 'wasm', numThreads: 2 });
    await m.generate('hi', { maxNewTokens: 2 }); // starts the pool
    expect(m.engine.numThreads).toBe(2);
    const before = threads();
    m.dispose();
    m.dispose();
    expect(m.engine.isDisposed).toBe(true);
    expect(await codeOf(m.generate('hi', { maxNewTokens: 2 }))).toBe('MODEL_DISPOSED');
    expect(await codeOf(() => m.generateStream('hi'))).toBe('MODEL_DISPOSED');
    expect(await codeOf(m.embed('hi'))).toBe('MODEL_DISPOSED');
    expect(await codeOf(m.engine.forward([1, 2]))).toBe('MODEL_DISPOSED');
    if (before !== undefined) {
      // the worker's thread ends (terminate() is asynchronous)
      const until = Date.now() + 5000;
      while ((threads() as number) >= before && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(threads()).toBeLessThan(before);
    }
    // `using` disposes at the end of the block
    let kept: BitNetModel | undefined;
    {
      using u = await BitNetModel.fromFile(path, { backend: 'reference' });
      expect(u.engine.isDisposed).toBe(false);
      kept = u;
    }
    expect(kept.engine.isDisposed).toBe(true);
  });
});
