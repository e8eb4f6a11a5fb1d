/** `bitnet logits --model PATH --prompt-ids 1,2,3 --json`: logits at every prompt position (no BOS added). */
import { parseArgs } from 'node:util';
import { BitNetModel } from '../api/bitnet-model.ts';
import { idList, oneOf, required, str } from './args.ts';

export async function logitsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      'prompt-ids': { type: 'string' },
      backend: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const ids = idList(required(str(values, 'prompt-ids'), 'prompt-ids'), 'prompt-ids');
  const backend = oneOf(values, 'backend', ['reference', 'wasm'] as const) ?? 'reference';
  const model = await BitNetModel.fromFile(required(str(values, 'model'), 'model'), { backend });
  const t = await model.engine.forward(ids);
  const [n, v] = t.shape;
  const rows: number[][] = [];
  for (let i = 0; i < n; i++) rows.push(Array.from(t.data.subarray(i * v, (i + 1) * v)));
  // Full float precision: f32 values print exactly with JSON's shortest round-trip formatting.
  process.stdout.write(`${JSON.stringify({ logits: rows })}\n`);
  return 0;
}
