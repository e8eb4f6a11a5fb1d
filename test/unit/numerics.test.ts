// How far apart are bitnet.cpp's per-token activations and llama.cpp's per-256 Q8_K activations?
// Measured here on discriminating synthetic models with the reference alone (docs/numerics.md).
import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { createRng } from '../../src/generate/prng.ts';
import { KVCache } from '../../src/model/kv-cache.ts';
import { loadModel } from '../../src/model/load.ts';
import { ReferenceForward } from '../../src/model/reference.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { compare, softmax } from '../helpers/dist.ts';
import { synthBytes } from '../helpers/models.ts';

async function dists(bytes: Uint8Array, ids: number[], activations: 'per-token' | 'q8k') {
  const m = await loadModel(new MemorySource(bytes));
  const f = new ReferenceForward(m.hparams, m.weights, { activations });
  const kv = new KVCache({}, { nLayers: m.hparams.nLayer, nKvHeads: m.hparams.nHeadKv, headDim: m.hparams.headDim });
  const s = kv.forSequence('a');
  return ids.map((id, pos) => softmax(f.logits(f.forwardToken(id, pos, s))));
}

describe('per-token vs Q8_K activation rounding', () => {
  it('differ by rounding noise only', async () => {
    const rng = createRng(2024);
    const ids = Array.from({ length: 48 }, () => rng.nextU32() % 1000);
    const rows: string[] = [];
    for (const shape of [
      { hidden: 768, layers: 3, heads: 6, kvHeads: 2, ffn: 2048, vocab: 1000 },
      { hidden: 512, layers: 2, heads: 8, kvHeads: 8, ffn: 1024, vocab: 1000 },
    ]) {
      const bytes = await synthBytes({ ...shape, qtype: 'tq2_0', seed: 77, ctx: 256 });
      const a = await dists(bytes, ids, 'per-token');
      const b = await dists(bytes, ids, 'q8k');
      const r = compare(a, b);
      rows.push(
        `hidden ${shape.hidden} × ${shape.layers} layers: mean TVD ${r.meanTvd.toFixed(4)}, top-1 ${(r.top1 * 100).toFixed(1)}%`,
      );
      expect(r.meanTvd).toBeLessThan(0.1);
      expect(r.meanTvd).toBeGreaterThan(0); // the schemes do differ
    }
    console.log(`per-token vs Q8_K (reference):\n  ${rows.join('\n  ')}`);
  });

  it('q8k mode applies to TQ weights only', async () => {
    const m = await loadModel(new MemorySource(await synthBytes({ qtype: 'i2_s', seed: 1, arch: 'bitnet-b1.58' })));
    expect(() => new ReferenceForward(m.hparams, m.weights, { activations: 'q8k' })).toThrow(BitNetError);
  });
});
