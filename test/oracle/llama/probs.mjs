// llama.cpp oracle: per-position next-token distributions for a GGUF model, computed by the
// llama.cpp that node-llama-cpp@3.21.1 bundles (its prebuilt CPU binary, never a source build).
//
//   node probs.mjs MODEL.gguf 1,2,3          one prompt (comma-separated token ids)
//   node probs.mjs MODEL.gguf @LISTS.json    several prompts: a JSON array of id arrays
//
// Prints one JSON object to stdout: {"nVocab": V, "runs": [{"ids": [...], "probs": [[V numbers], ...]}]}
// with one probs row per prompt position (row i = distribution of the token after ids[0..i]).
// No BOS is added: the ids are evaluated exactly as given. Set ORACLE_THREADS to change the
// thread count (default 1).
//
// API: LlamaContextSequence.controlledEvaluate with generateNext.probabilities on every token.
// node-llama-cpp exposes no raw-logits getter; its `probabilities` are computed in the addon
// (AddonContext.cpp, sampleToken) as a float32 softmax over every candidate left by the sampler
// chain. With temperature 0 the chain is only the greedy sampler, which picks the argmax and
// leaves the logits and the candidate list alone, so the map holds softmax(logits) over the full
// vocabulary. The script checks that (size == vocab, sum ≈ 1) rather than trusting it.
import { readFile } from 'node:fs/promises';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [modelPath, idsArg] = process.argv.slice(2);
if (!modelPath || !idsArg) {
  console.error('usage: node probs.mjs MODEL.gguf (1,2,3 | @LISTS.json)');
  process.exit(2);
}
const lists = idsArg.startsWith('@')
  ? JSON.parse(await readFile(idsArg.slice(1), 'utf8'))
  : [idsArg.split(',').map((s) => Number(s.trim()))];
for (const ids of lists) {
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((t) => Number.isInteger(t) && t >= 0)) {
    throw new Error(`bad id list: ${JSON.stringify(ids).slice(0, 80)}`);
  }
}
const threads = Number(process.env.ORACLE_THREADS ?? 1);

// build: 'never' — fail loudly (NoBinaryFoundError) instead of silently compiling llama.cpp for minutes.
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: threads });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const longest = Math.max(...lists.map((l) => l.length));
const context = await model.createContext({
  contextSize: Math.max(longest, 32),
  batchSize: longest,
  threads,
  sequences: 1,
});
const sequence = context.getSequence();

const runs = [];
let nVocab = 0;
for (const ids of lists) {
  await sequence.clearHistory(); // every prompt starts from an empty KV cache
  const input = ids.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 0 } } }]);
  const out = await sequence.controlledEvaluate(input);
  const probs = out.map((o, i) => {
    const map = o?.next?.probabilities;
    if (!map) throw new Error(`no probabilities at position ${i}`);
    if (nVocab === 0) nVocab = map.size;
    if (map.size !== nVocab) throw new Error(`position ${i}: ${map.size} candidates, expected ${nVocab}`);
    const row = new Array(nVocab).fill(0);
    let sum = 0;
    for (const [tok, p] of map) {
      row[tok] = p;
      sum += p;
    }
    if (Math.abs(sum - 1) > 1e-3) throw new Error(`position ${i}: probabilities sum to ${sum}`);
    return row;
  });
  runs.push({ ids, probs });
}
// Sanity: the candidate list covers the whole vocabulary (no top-k truncation).
const vocabLen = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
if (typeof vocabLen === 'number' && vocabLen !== nVocab)
  throw new Error(`got ${nVocab} candidates, vocab has ${vocabLen}`);

process.stdout.write(JSON.stringify({ nVocab, runs }));
await context.dispose();
await model.dispose();
await llama.dispose();
