// llama.cpp (through node-llama-cpp, the install of test/oracle/llama) measured by the same method
// as `bitnet bench`: the same prompt ids, then greedy decode steps; a warm-up run, then RUNS
// timed runs on an empty KV cache, medians reported.
//
//   node bench/llama-bench.mjs MODEL.gguf THREADS PROMPT GEN RUNS [PARALLEL]
//
// Prefill: controlledEvaluate over the prompt asking for the next token of the last one (one
// batch, logits of the last position, like our prefill). Decode: evaluate([next]) with greedy
// sampling, GEN tokens (each step evaluates one token). Prints one JSON object.
//
// PARALLEL P > 1: one context with P sequences, each prefilled in turn with its own prompt ids
// (those of `bitnet bench --parallel`), then the P decode loops advance together; node-llama-cpp
// evaluates concurrent sequences' tokens in one batch. Rates are sums over the sequences.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const oracleDir = resolve(here, '..', 'test', 'oracle', 'llama');
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(join(oracleDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href
);

const [modelPath, threadsArg, promptArg, genArg, runsArg, parallelArg] = process.argv.slice(2);
const threads = Number(threadsArg ?? 1);
const nPrompt = Number(promptArg ?? 128);
const nGen = Number(genArg ?? 64);
const runs = Number(runsArg ?? 3);
const parallel = Number(parallelArg ?? 1);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: threads });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
const nVocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? model.tokens?.length;
const context = await model.createContext({
  contextSize: Math.max(512, parallel * (nPrompt + nGen + 32)),
  batchSize: Math.max(nPrompt, 32),
  threads,
  sequences: parallel,
});
const sequences = Array.from({ length: parallel }, () => context.getSequence());
// sequence s's prompt ids: those of `bitnet bench` (src/cli/bench.ts benchPromptIds)
const ids = (n, s = 0) => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + s * 101) % nVocab);

async function once(p, g) {
  const firsts = [];
  for (const sequence of sequences) await sequence.clearHistory();
  const t0 = performance.now();
  for (const [s, sequence] of sequences.entries()) {
    const input = ids(p, s).map((t, i) =>
      i === p - 1 ? [t, { generateNext: { token: true, options: { temperature: 0 } } }] : t,
    );
    const out = await sequence.controlledEvaluate(input);
    firsts.push(out[p - 1]?.next?.token);
  }
  const t1 = performance.now();
  const tokens = [firsts[0]];
  const its = sequences.map((sequence, s) => sequence.evaluate([firsts[s]], { temperature: 0 }));
  for (let i = 0; i < g; i++) {
    // every sequence's next step at once: node-llama-cpp batches them
    const rs = await Promise.all(its.map((it) => it.next()));
    if (rs.some((r) => r.done)) break;
    tokens.push(rs[0].value);
  }
  await Promise.all(its.map((it) => it.return()));
  const t2 = performance.now();
  return { prefillMs: t1 - t0, decodeMs: t2 - t1, tokens };
}

await once(Math.min(nPrompt, 32), Math.min(nGen, 8));
const results = [];
for (let r = 0; r < runs; r++) results.push(await once(nPrompt, nGen));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const prefill = results.map((x) => (parallel * nPrompt * 1000) / x.prefillMs);
const decode = results.map((x) => (parallel * nGen * 1000) / x.decodeMs);
process.stdout.write(
  `${JSON.stringify({
    engine: 'llama.cpp (node-llama-cpp 3.21.1, CPU prebuilt)',
    model: modelPath,
    threads,
    promptTokens: nPrompt,
    genTokens: nGen,
    parallel,
    runs,
    prefillTokensPerSecond: median(prefill),
    decodeTokensPerSecond: median(decode),
    prefillRuns: prefill,
    decodeRuns: decode,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    greedyTokens: results[0].tokens.slice(0, 8),
  })}\n`,
);
await context.dispose();
await model.dispose();
await llama.dispose();
