import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { readGGUF } from '../../src/gguf/reader.ts';
import { encodeGGUF, meta } from '../../src/gguf/writer.ts';
import { loadModel } from '../../src/model/load.ts';
import { f16Round, type KVStore, ReferenceForward } from '../../src/model/reference.ts';
import { synthModel } from '../../src/model/synth.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes, TINY } from '../helpers/models.ts';

/** A minimal f16 KV store for driving the forward pass directly. */
function denseKV(): KVStore {
  const k = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  const round = (x: Float32Array) => Float32Array.from(x, f16Round);
  return {
    write: (l, p, kk, vv) => {
      k.set(`${l}:${p}`, round(kk));
      v.set(`${l}:${p}`, round(vv));
    },
    readK: (l, p, out) => out.set(k.get(`${l}:${p}`)!),
    readV: (l, p, out) => out.set(v.get(`${l}:${p}`)!),
  };
}

async function logitsOf(bytes: Uint8Array, ids: number[]): Promise<Float32Array[]> {
  const m = await loadModel(new MemorySource(bytes));
  const f = new ReferenceForward(m.hparams, m.weights);
  const kv = denseKV();
  return ids.map((id, pos) => Float32Array.from(f.logits(f.forwardToken(id, pos, kv))));
}

const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
const ids = Array.from({ length: 24 }, (_, i) => (i * 37 + 11) % 290);

describe('reference forward pass', () => {
  it('an I2_S file and a TQ2_0 file with the same weights agree', async () => {
    const i2s = await logitsOf(await synthBytes({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58' }), ids);
    const tq2 = await logitsOf(await synthBytes({ qtype: 'tq2_0', seed: 5, activation: 'relu2' }), ids);
    const tq1 = await logitsOf(await synthBytes({ qtype: 'tq1_0', seed: 5, activation: 'relu2' }), ids);
    let agree = 0;
    let maxDiff = 0;
    for (let p = 0; p < ids.length; p++) {
      if (argmax(i2s[p]) === argmax(tq2[p])) agree++;
      expect(tq1[p]).toEqual(tq2[p]); // same blocks, same f16 scales: identical maths
      for (let i = 0; i < i2s[p].length; i++) maxDiff = Math.max(maxDiff, Math.abs(i2s[p][i] - tq2[p][i]));
    }
    console.log(`I2_S vs TQ2_0 (same weights): top-1 ${agree}/${ids.length}, max |Δlogit| ${maxDiff.toExponential(2)}`);
    expect(agree / ids.length).toBeGreaterThanOrEqual(0.99);
  });

  it('relu² and SiLU models differ (the activation is wired)', async () => {
    const a = await logitsOf(await synthBytes({ qtype: 'tq2_0', seed: 5, activation: 'relu2' }), ids.slice(0, 6));
    const b = await logitsOf(await synthBytes({ qtype: 'tq2_0', seed: 5, activation: 'silu' }), ids.slice(0, 6));
    expect(a[5]).not.toEqual(b[5]);
  });

  it('is deterministic and position-dependent', async () => {
    const bytes = await synthBytes({ qtype: 'i2_s', seed: 9, arch: 'bitnet-b1.58' });
    const a = await logitsOf(bytes, [1, 2, 3, 1]);
    const b = await logitsOf(bytes, [1, 2, 3, 1]);
    expect(a).toEqual(b);
    expect(a[0]).not.toEqual(a[3]); // same token, different context
  });
});

describe('capability checks before any weight is read', () => {
  async function mutate(
    fn: (md: Map<string, ReturnType<typeof meta.str>>, tensors: ReturnType<typeof synthModel>['tensors']) => void,
  ) {
    const m = synthModel({ ...TINY, qtype: 'tq2_0', seed: 1 });
    const md = new Map(m.metadata);
    fn(md, m.tensors);
    return new MemorySource(await encodeGGUF(md, m.tensors));
  }
  const code = async (src: MemorySource, c: string, opts = {}) =>
    expect(loadModel(src, opts)).rejects.toSatisfy((e: unknown) => e instanceof BitNetError && e.code === c);

  it('unknown architecture', async () => {
    await code(await mutate((md) => md.set('general.architecture', meta.str('llama'))), 'UNSUPPORTED_ARCH');
  });
  it('missing and inconsistent hyper-parameters', async () => {
    await code(await mutate((md) => md.delete('bitnet.block_count')), 'MISSING_METADATA');
    await code(await mutate((md) => md.set('bitnet.attention.head_count_kv', meta.u32(3))), 'BAD_HPARAMS');
    await code(await mutate((md) => md.set('bitnet.hidden_activation', meta.str('gelu'))), 'BAD_HPARAMS');
  });
  it('missing tensors, wrong shapes, unsupported types', async () => {
    await code(
      await mutate((_, t) =>
        t.splice(
          t.findIndex((x) => x.name === 'blk.1.ffn_sub_norm.weight'),
          1,
        ),
      ),
      'MISSING_TENSOR',
    );
    await code(await mutate((md) => md.set('bitnet.feed_forward_length', meta.u32(256))), 'BAD_TENSOR_SHAPE');
    await code(
      await mutate((_, t) => {
        const i = t.findIndex((x) => x.name === 'output_norm.weight');
        t[i] = { ...t[i], type: 8, ne: [256], data: new Uint8Array(272) }; // Q8_0 norm
      }),
      'UNSUPPORTED_TENSOR_TYPE',
    );
  });
  it('a model over the memory budget is refused before reading weights', async () => {
    const src = await mutate(() => {});
    const f = await readGGUF(src);
    let tensorReads = 0; // reads that start inside the data section are tensor reads
    const counting = {
      size: src.size,
      description: 'counting',
      read: (o: number, l: number) => {
        if (o >= f.dataOffset) tensorReads++;
        return src.read(o, l);
      },
    };
    await code(counting as unknown as MemorySource, 'MODEL_TOO_LARGE', { maxMemoryBytes: 1000 });
    expect(tensorReads).toBe(0);
    await loadModel(counting);
    expect(tensorReads).toBeGreaterThan(0); // the counter does see weight reads
  });
});
