// llama.cpp (through node-llama-cpp, the install of test/oracle/llama) measured by the same method
// as `bitnet bench`: the same prompt ids, then greedy decode steps; a warm-up run, then RUNS
// timed runs on an empty KV cache, medians reported.
//
//   node bench/llama-bench.mjs MODEL.gguf THREADS PROMPT GEN RUNS
//
// Prefill: controlledEvaluate over the prompt asking for the next token of the last one (one
// batch, logits of the last position, like our prefill). Decode: evaluate([next]) with greedy
// sampling, GEN tokens (each step evaluates one token). Prints one JSON object.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const oracleDir = resolve(here, '..', 'test', 'oracle', 'llama');
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(join(oracleDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href
);

const [modelPath, threadsArg, promptArg, genArg, runsArg] = process.argv.slice(2);
const threads = Number(threadsArg ?? 1);
const nPrompt = Number(promptArg ?? 128);
const nGen = Number(genArg ?? 64);
const runs = Number(runsArg ?? 3);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: threads });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
const nVocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? model.tokens?.length;
const context = await model.createContext({
  contextSize: 512,
  batchSize: Math.max(nPrompt, 32),
  threads,
  sequences: 1,
});
const sequence = context.getSequence();
const ids = (n) => Array.from({ length: n }, (_, i) => (i * 7919 + 13) % nVocab);

async function once(p, g) {
  await sequence.clearHistory();
  const prompt = ids(p);
  const input = prompt.map((t, i) =>
    i === p - 1 ? [t, { generateNext: { token: true, options: { temperature: 0 } } }] : t,
  );
  const t0 = performance.now();
  const out = await sequence.controlledEvaluate(input);
  const t1 = performance.now();
  const next = out[p - 1]?.next?.token;
  const tokens = [next];
  const it = sequence.evaluate([next], { temperature: 0 });
  for (let i = 0; i < g; i++) {
    const r = await it.next();
    if (r.done) break;
    tokens.push(r.value);
  }
  await it.return();
  const t2 = performance.now();
  return { prefillMs: t1 - t0, decodeMs: t2 - t1, tokens };
}

await once(Math.min(nPrompt, 32), Math.min(nGen, 8));
const results = [];
for (let r = 0; r < runs; r++) results.push(await once(nPrompt, nGen));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const prefill = results.map((x) => (nPrompt * 1000) / x.prefillMs);
const decode = results.map((x) => (nGen * 1000) / x.decodeMs);
process.stdout.write(
  `${JSON.stringify({
    engine: 'llama.cpp (node-llama-cpp 3.21.1, CPU prebuilt)',
    model: modelPath,
    threads,
    promptTokens: nPrompt,
    genTokens: nGen,
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
