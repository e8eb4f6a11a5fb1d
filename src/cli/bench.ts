/**
 * `bitnet bench --model FILE [--threads N] [--prompt 128] [--gen 64] [--parallel 1] [--backend wasm|reference] [--runs 3] [--json]`
 *
 * llama-bench's method: a prompt of `--prompt` token ids (deterministic, spread over the vocabulary),
 * then `--gen` greedy decode steps of one token each; one warm-up run (prompt and generation capped
 * at 32 and 8 tokens), then `--runs` timed runs, each on an empty KV cache. Reports the median of
 * the runs: prefill tok/s = prompt / prefill time (logits of the last prompt token included),
 * decode tok/s = gen / decode time.
 *
 * `--parallel P` runs P sequences at once, as a server does with P requests in flight: each is
 * prefilled (its own prompt ids; sequence 0's are those of P = 1), then every decode step is P
 * concurrent forwards, which the wasm backend runs as one batch. Prefill tok/s = P·prompt / the
 * prefills' time; decode tok/s = P·gen / decode time (the sum over the sequences).
 *
 * Peak RSS is the process high-water mark (load included);
 * `decodeRssBytes` is the largest RSS sampled during decoding.
 *
 * The model loads from any location `generate` takes (a path, file://, https://, s3://, a shard-pack
 * directory or manifest), through the same ModelLoader. The wasm backend loads a local GGUF file
 * straight into its memory (node-open.ts), so the weights are held once; anything else is read by
 * the loader and copied into wasm memory. `fileBytes` is the model's size as the loader sees it (a
 * pack: its shards laid end to end). `weightType`/`headType` are ggml type ids (as before);
 * `weightTypeName`/`headTypeName` their names.
 */

import { parseArgs } from 'node:util';
import { ModelLoader } from '../api/model-loader.ts';
import { typeName } from '../gguf/ggml-types.ts';
import type { Backend } from '../kernels/backend.ts';
import { openLocalGguf } from '../kernels/wasm/open-local.ts';
import { KVCache } from '../model/kv-cache.ts';
import type { LoadedModel } from '../model/load.ts';
import { num, oneOf, required, str } from './args.ts';
import { resolveCliLocation } from './model-location.ts';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Sequence `seq`'s prompt ids (llama-bench.mjs writes the same). */
export function benchPromptIds(n: number, nVocab: number, seq = 0): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13 + seq * 101) % nVocab);
}

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

interface RunResult {
  prefillMs: number;
  decodeMs: number;
  /** Process CPU time (all threads), less sensitive than wall time to a busy machine. */
  prefillCpuMs: number;
  decodeCpuMs: number;
  maxDecodeRss: number;
  tokens: number[];
}

async function runOnce(
  backend: Backend,
  m: LoadedModel,
  prompt: number,
  gen: number,
  parallel: number,
  name: string,
): Promise<RunResult> {
  const hp = m.hparams;
  const cache = new KVCache(
    { maxSeqLen: prompt + gen + 1 },
    { nLayers: hp.nLayer, nKvHeads: hp.nHeadKv, headDim: hp.headDim },
  );
  const seqs = Array.from({ length: parallel }, (_, s) => cache.forSequence(`${name}-${s}`));
  const cpu = () => {
    const c = process.cpuUsage();
    return (c.user + c.system) / 1000;
  };
  const c0 = cpu();
  const t0 = performance.now();
  const logits: Float32Array[] = [];
  for (const [s, kv] of seqs.entries()) {
    const [row] = await backend.forward({
      tokens: benchPromptIds(prompt, hp.nVocab, s),
      startPos: 0,
      kv,
      logits: 'last',
    });
    logits.push(row);
  }
  const t1 = performance.now();
  const c1 = cpu();
  const tokens: number[] = [];
  let maxDecodeRss = 0;
  for (let i = 0; i < gen; i++) {
    // every sequence's step at once: the backend may run them as one batch
    const rows = await Promise.all(
      seqs.map((kv, s) => {
        const next = argmax(logits[s]);
        if (s === 0) tokens.push(next);
        return backend.forward({ tokens: [next], startPos: prompt + i, kv, logits: 'last', into: logits[s] });
      }),
    );
    for (let s = 0; s < parallel; s++) logits[s] = rows[s][0];
    maxDecodeRss = Math.max(maxDecodeRss, process.memoryUsage.rss());
  }
  const t2 = performance.now();
  const c2 = cpu();
  for (const kv of seqs) backend.release?.(kv);
  return { prefillMs: t1 - t0, decodeMs: t2 - t1, prefillCpuMs: c1 - c0, decodeCpuMs: c2 - c1, maxDecodeRss, tokens };
}

export async function benchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      threads: { type: 'string' },
      prompt: { type: 'string' },
      gen: { type: 'string' },
      runs: { type: 'string' },
      parallel: { type: 'string' },
      backend: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const threads = num(values, 'threads', { int: true, min: 1 }) ?? 1;
  const prompt = num(values, 'prompt', { int: true, min: 1 }) ?? 128;
  const gen = num(values, 'gen', { int: true, min: 1 }) ?? 64;
  const runs = num(values, 'runs', { int: true, min: 1 }) ?? 3;
  const parallel = num(values, 'parallel', { int: true, min: 1, max: 64 }) ?? 1;
  const kind = oneOf(values, 'backend', ['wasm', 'reference'] as const) ?? 'wasm';
  const path = await resolveCliLocation(location); // before the clock: a download is not load time

  const tLoad = performance.now();
  let model: LoadedModel;
  let backend: Backend;
  let build = '';
  if (kind === 'wasm') {
    const { WasmBackend } = await import('../kernels/wasm/backend.ts');
    const direct = await openLocalGguf(path);
    try {
      model = await new ModelLoader().load(direct ?? path);
    } finally {
      await direct?.close?.();
    }
    const wb = WasmBackend.create(model, { numThreads: threads });
    build = wb.build;
    backend = wb;
  } else {
    const { ReferenceBackend } = await import('../kernels/reference-backend.ts');
    model = await new ModelLoader().load(path);
    backend = new ReferenceBackend(model);
  }
  const fileBytes = model.file.fileSize;
  const loadMs = performance.now() - tLoad;

  await runOnce(backend, model, Math.min(prompt, 32), Math.min(gen, 8), parallel, 'warmup');
  const results: RunResult[] = [];
  for (let r = 0; r < runs; r++) results.push(await runOnce(backend, model, prompt, gen, parallel, `run${r}`));
  const prefill = results.map((x) => (parallel * prompt * 1000) / x.prefillMs);
  const decode = results.map((x) => (parallel * gen * 1000) / x.decodeMs);
  const hp = model.hparams;
  const weightType = model.weights.layers[0]?.wq.type;
  const headType = model.weights.output.type;
  const out = {
    model: path,
    fileBytes,
    shape: { nEmbd: hp.nEmbd, nLayer: hp.nLayer, nFF: hp.nFF, nHead: hp.nHead, nHeadKv: hp.nHeadKv, nVocab: hp.nVocab },
    weightType,
    weightTypeName: weightType === undefined ? undefined : typeName(weightType),
    headType,
    headTypeName: typeName(headType),
    backend: kind,
    build,
    threads: (backend as { numThreads?: number }).numThreads ?? 1,
    promptTokens: prompt,
    genTokens: gen,
    parallel,
    runs,
    loadMs,
    prefillTokensPerSecond: median(prefill),
    decodeTokensPerSecond: median(decode),
    prefillRuns: prefill,
    decodeRuns: decode,
    prefillCpuMsPerToken: median(results.map((x) => x.prefillCpuMs / (parallel * prompt))),
    decodeCpuMsPerToken: median(results.map((x) => x.decodeCpuMs / (parallel * gen))),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    decodeRssBytes: Math.max(...results.map((x) => x.maxDecodeRss)),
    greedyTokens: results[0].tokens.slice(0, 8),
  };
  backend.dispose?.();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } else {
    console.log(
      `${path}: ${out.backend}${build ? ` (${build})` : ''}, ${out.threads} thread(s)${parallel > 1 ? `, ${parallel} sequences` : ''}: prefill ${out.prefillTokensPerSecond.toFixed(2)} tok/s, ` +
        `decode ${out.decodeTokensPerSecond.toFixed(2)} tok/s, peak RSS ${(out.peakRssBytes / 2 ** 20).toFixed(0)} MiB ` +
        `(${(out.peakRssBytes / fileBytes).toFixed(2)}× the file)`,
    );
  }
  return 0;
}
