// llama.cpp tokenizer oracle: token ids from the llama.cpp bundled with node-llama-cpp@3.21.1 (prebuilt CPU
// binary, installed in test/oracle/llama by test/oracle/oracle-setup.ts), for vocab-only GGUF files.
//
//   node llama-tokenize.mjs JOBS.json
//
// JOBS.json: [{"model": "/path/vocab.gguf", "runs": [{"texts": ["...", ...], "special": false}, ...]}, ...]
// Prints {"results": [[[[ids...], ...], ...], ...]}: per job, per run, per text, llama_tokenize(text,
// add_special = false, parse_special = special), via LlamaModel.tokenize(text, special) on a model loaded
// with vocabOnly (each model is loaded once: loading a 128k vocab takes seconds).
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const entry = join(here, '..', 'oracle', 'llama', 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const jobs = JSON.parse(await readFile(process.argv[2], 'utf8'));
// build: 'never' — fail loudly instead of compiling llama.cpp from source.
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const results = [];
for (const job of jobs) {
  const model = await llama.loadModel({ modelPath: job.model, vocabOnly: true, gpuLayers: 0 });
  results.push(job.runs.map((r) => r.texts.map((t) => Array.from(model.tokenize(t, r.special === true)))));
  await model.dispose();
}
process.stdout.write(JSON.stringify({ results }));
await llama.dispose();
