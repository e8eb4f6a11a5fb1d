/**
 * `bitnet logits --model PATH --prompt-ids 1,2,3 --json`: logits at every prompt position (no BOS
 * added). `--activations q8k` (diagnostic, TQ1_0/TQ2_0 files only) runs the reference with
 * llama.cpp's per-256-block Q8_K activations instead of bitnet.cpp's per-token int8, to show how
 * much of a distance to llama.cpp is activation rounding (docs/numerics.md).
 *
 * Every flag is validated before the model is opened. Non-finite logits are an error
 * (Model/LOGITS_NAN, as `generate` raises on the same model): JSON would print them as `null`.
 */
import { parseArgs } from 'node:util';
import { ModelLoader } from '../api/model-loader.ts';
import { BitNetError } from '../errors.ts';
import { KVCache } from '../model/kv-cache.ts';
import { ReferenceForward } from '../model/reference.ts';
import { idList, oneOf, required, str } from './args.ts';
import { openCliModel, resolveCliLocation } from './model-location.ts';

async function q8kLogits(path: string, ids: number[]): Promise<Float32Array[]> {
  // The same locations as the other commands (paths, URLs, shard packs).
  const m = await new ModelLoader().load(path);
  const f = new ReferenceForward(m.hparams, m.weights, { activations: 'q8k' });
  const { nLayer, nHeadKv, headDim } = m.hparams;
  const kv = new KVCache(
    { maxSeqLen: Math.max(ids.length, 1) },
    { nLayers: nLayer, nKvHeads: nHeadKv, headDim },
  ).forSequence('q8k');
  return ids.map((id, pos) => Float32Array.from(f.logits(f.forwardToken(id, pos, kv))));
}

/** Throws Model/LOGITS_NAN at the first NaN or ±Infinity (JSON has no way to print either). */
export function checkFinite(rows: ArrayLike<number>[]): void {
  for (let pos = 0; pos < rows.length; pos++) {
    const r = rows[pos];
    for (let id = 0; id < r.length; id++) {
      const v = r[id];
      if (!Number.isFinite(v)) {
        const what = Number.isNaN(v) ? 'NaN' : String(v);
        throw BitNetError.Model('LOGITS_NAN', `logits contain ${what} (prompt position ${pos}, token id ${id})`, {
          position: pos,
          id,
          value: what,
        });
      }
    }
  }
}

export async function logitsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      'prompt-ids': { type: 'string' },
      backend: { type: 'string' },
      activations: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const ids = idList(required(str(values, 'prompt-ids'), 'prompt-ids'), 'prompt-ids');
  const location = required(str(values, 'model'), 'model');
  const activations = oneOf(values, 'activations', ['per-token', 'q8k'] as const) ?? 'per-token';
  const backend = oneOf(values, 'backend', ['reference', 'wasm', 'cuda'] as const);
  if (activations === 'q8k' && backend !== undefined && backend !== 'reference') {
    throw BitNetError.Config(
      'BAD_FLAG',
      `--activations q8k runs the reference forward pass only; --backend ${backend} cannot be combined with it`,
      { flag: 'backend', value: backend },
    );
  }
  const path = await resolveCliLocation(location, { quiet: values.json === true });
  let rows: Float32Array[];
  if (activations === 'q8k') {
    rows = await q8kLogits(path, ids);
  } else {
    const model = await openCliModel(path, { backend });
    const t = await model.engine.forward(ids);
    const v = t.shape[1];
    rows = Array.from({ length: t.shape[0] }, (_, i) => t.data.subarray(i * v, (i + 1) * v));
  }
  checkFinite(rows);
  // JSON's shortest round-trip formatting prints every f32 value exactly.
  process.stdout.write(`${JSON.stringify({ logits: rows.map((r) => Array.from(r)) })}\n`);
  return 0;
}
