/**
 * `bitnet embed --model LOCATION (--text TEXT ... | --prompt-ids 1,2,3) [--pooling mean|last]
 * [--no-normalize] [--backend reference|wasm] [--threads N] [--json]`: an embedding per input
 * (BitNetModel.embed: final hidden states pooled, unit length unless --no-normalize).
 *
 * Output: one line per input, the vector's numbers separated by spaces; with --json one object
 * `{ dimensions, pooling, normalized, embeddings: [{ index, tokens, embedding }] }`. JSON's
 * shortest round-trip formatting prints every f32 exactly. Flags are checked before the model opens.
 */
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { POOLINGS } from '../generate/embeddings.ts';
import { idList, num, oneOf, required, str } from './args.ts';
import { openCliModel, resolveCliLocation } from './model-location.ts';

export async function embedCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      text: { type: 'string', multiple: true },
      'prompt-ids': { type: 'string' },
      pooling: { type: 'string' },
      'no-normalize': { type: 'boolean' },
      backend: { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const texts = (values.text as string[] | undefined) ?? [];
  const idsFlag = str(values, 'prompt-ids');
  if (texts.length > 0 && idsFlag !== undefined) {
    throw BitNetError.Config('BAD_FLAG', 'give --text (one or more) or --prompt-ids, not both', { flag: 'text' });
  }
  if (texts.length === 0 && idsFlag === undefined) {
    throw BitNetError.Config('MISSING_FLAG', 'nothing to embed: give --text (one or more) or --prompt-ids', {
      flag: 'text',
    });
  }
  const ids = idsFlag === undefined ? undefined : idList(idsFlag, 'prompt-ids');
  const pooling = oneOf(values, 'pooling', POOLINGS) ?? 'mean';
  const backend = oneOf(values, 'backend', ['reference', 'wasm'] as const);
  const numThreads = num(values, 'threads', { int: true, min: 1 });
  const normalize = values['no-normalize'] !== true;
  const path = await resolveCliLocation(location, { quiet: values.json === true });
  const model = await openCliModel(path, { backend, numThreads });
  const inputs = ids ? [{ ids }] : texts;
  const out: { index: number; tokens: number; embedding: number[] }[] = [];
  for (const [index, input] of inputs.entries()) {
    const r = await model.engine.embed(input, { pooling, normalize });
    out.push({ index, tokens: r.promptTokens, embedding: Array.from(r.embedding) });
  }
  if (values.json) {
    const dimensions = out[0]?.embedding.length ?? 0;
    process.stdout.write(`${JSON.stringify({ dimensions, pooling, normalized: normalize, embeddings: out })}\n`);
  } else for (const e of out) process.stdout.write(`${e.embedding.join(' ')}\n`);
  return 0;
}
