// llama.cpp oracle for grammars: which tokens llama.cpp's grammar sampler allows at every step of
// a token path, for a GGUF model's vocabulary, using the llama.cpp that node-llama-cpp@3.21.1
// bundles (its prebuilt CPU binary, never a source build).
//
//   node grammar.mjs MODEL.gguf @JOB.json     JOB: {"grammar": GBNF, "paths": [[token ids], ...]}
//
// Prints {"nVocab": V, "paths": [{"allowed": [[ids allowed before token 0], ..., [after the last]]}]}.
// A path's tokens are accepted one by one; each must be allowed (else the script fails).
//
// API: node-llama-cpp has no public "is this token allowed" call; its own draft-token predictor and
// LlamaChat use the addon's AddonSampler.canBeNextTokenForGrammarEvaluationState (a one-candidate
// llama_sampler_apply of llama.cpp's grammar sampler) and acceptGrammarEvaluationStateToken. This
// script calls the same two addon functions, on the pinned version.
import { readFile } from 'node:fs/promises';
import { getLlama, LlamaGrammarEvaluationState, LlamaLogLevel } from 'node-llama-cpp';

const [modelPath, jobArg] = process.argv.slice(2);
if (!modelPath || !jobArg?.startsWith('@')) {
  console.error('usage: node grammar.mjs MODEL.gguf @JOB.json');
  process.exit(2);
}
const job = JSON.parse(await readFile(jobArg.slice(1), 'utf8'));
if (typeof job.grammar !== 'string' || !Array.isArray(job.paths)) throw new Error('JOB needs grammar and paths');

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: true });
const grammar = await llama.createGrammar({ grammar: job.grammar });
const nVocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
if (typeof nVocab !== 'number') throw new Error('no vocabulary size in the file');
const addon = llama._bindings.AddonSampler;

const paths = [];
for (const path of job.paths) {
  const state = new LlamaGrammarEvaluationState({ model, grammar });
  const allowed = [];
  for (let step = 0; step <= path.length; step++) {
    const ok = [];
    for (let t = 0; t < nVocab; t++) if (addon.canBeNextTokenForGrammarEvaluationState(state._state, t)) ok.push(t);
    allowed.push(ok);
    if (step === path.length) break;
    const t = path[step];
    if (!ok.includes(t)) throw new Error(`path token ${t} at step ${step} is not allowed by llama.cpp`);
    addon.acceptGrammarEvaluationStateToken(state._state, t);
  }
  paths.push({ allowed });
}
process.stdout.write(JSON.stringify({ nVocab, paths }));
await model.dispose();
await llama.dispose();
