/**
 * `bitnet perplexity --model LOCATION (--file TEXT_FILE | --text TEXT | --prompt-ids 1,2,3) [--ctx N]
 * [--chunks N] [--threads N] [--backend reference|wasm|cuda] [--json]`: a text's perplexity as
 * llama.cpp's `llama-perplexity -f FILE -c N [--chunks N]` computes it (src/generate/perplexity.ts),
 * so the two are comparable on the same GGUF file and text. Progress goes to stderr as llama.cpp
 * prints it (`[1]12.3456,[2]…`); the result to stdout: `PPL = X +/- E`, or one JSON object.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { idList, num, oneOf, preTokenizerFlag, required, str } from './args.ts';
import { openCliModel, resolveCliLocation } from './model-location.ts';

export async function perplexityCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      file: { type: 'string' },
      text: { type: 'string' },
      'prompt-ids': { type: 'string' },
      ctx: { type: 'string' },
      chunks: { type: 'string' },
      threads: { type: 'string' },
      backend: { type: 'string' },
      'pre-tokenizer': { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const inputs = (['file', 'text', 'prompt-ids'] as const).filter((k) => values[k] !== undefined);
  if (inputs.length !== 1)
    throw BitNetError.Config('BAD_FLAG', 'give exactly one of --file, --text and --prompt-ids', { given: inputs });
  const chunkSize = num(values, 'ctx', { int: true, min: 4 });
  const maxChunks = num(values, 'chunks', { int: true, min: 1 });
  const threads = num(values, 'threads', { int: true, min: 1 });
  const backend = oneOf(values, 'backend', ['reference', 'wasm', 'cuda'] as const);
  const ids = values['prompt-ids'] === undefined ? undefined : idList(String(values['prompt-ids']), 'prompt-ids');
  let text = str(values, 'text');
  const file = str(values, 'file');
  if (file !== undefined) {
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw BitNetError.Io(
        'INPUT_UNREADABLE',
        `cannot read --file ${file}: ${(e as Error).message}`,
        { path: file },
        e,
      );
    }
  }

  const model = await openCliModel(await resolveCliLocation(location, { quiet: values.json === true }), {
    backend,
    numThreads: threads,
    preTokenizer: preTokenizerFlag(values),
  });
  const t0 = performance.now();
  const r = await model.perplexity(ids ? { ids } : text!, {
    chunkSize,
    maxChunks,
    onChunk: ({ chunk, chunks, ppl }) =>
      process.stderr.write(`[${chunk}]${ppl.toFixed(4)}${chunk < chunks ? ',' : '\n'}`),
  });
  const seconds = (performance.now() - t0) / 1000;
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({ ...r, seconds, backend: model.engine.backendName, model: model.modelInfo().name })}\n`,
    );
  } else {
    process.stdout.write(`PPL = ${r.ppl.toFixed(4)} +/- ${r.pplError.toFixed(5)}\n`);
    console.error(
      `${r.chunks} chunks of ${r.chunkSize} tokens, ${r.tokensScored} tokens scored, ${seconds.toFixed(1)} s (${model.engine.backendName})`,
    );
  }
  return 0;
}
