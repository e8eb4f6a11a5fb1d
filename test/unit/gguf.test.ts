import { describe, expect, it } from 'vitest';
import { BitNetError } from '../../src/errors.ts';
import { createRng } from '../../src/generate/prng.ts';
import { GGMLType, tensorByteSize } from '../../src/gguf/ggml-types.ts';
import { GGUFValueType } from '../../src/gguf/metadata.ts';
import { metaNumber, readGGUF } from '../../src/gguf/reader.ts';
import { encodeGGUF, meta } from '../../src/gguf/writer.ts';
import { loadModel } from '../../src/model/load.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes } from '../helpers/models.ts';

async function expectCode(p: Promise<unknown>, ...codes: string[]): Promise<void> {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof BitNetError && codes.includes(e.code));
}

describe('GGUF writer → reader round trip', () => {
  it('keeps every value type, array and tensor', async () => {
    const md = new Map([
      ['general.architecture', meta.str('bitnet')],
      ['a.u8', { type: GGUFValueType.UINT8, value: 200 }],
      ['a.i8', { type: GGUFValueType.INT8, value: -5 }],
      ['a.u16', { type: GGUFValueType.UINT16, value: 60000 }],
      ['a.i16', { type: GGUFValueType.INT16, value: -30000 }],
      ['a.u32', meta.u32(4000000000)],
      ['a.i32', meta.i32(-7)],
      ['a.f32', meta.f32(1.5)],
      ['a.bool', meta.bool(true)],
      ['a.u64', { type: GGUFValueType.UINT64, value: 2n ** 40n }],
      ['a.i64', { type: GGUFValueType.INT64, value: -(2n ** 40n) }],
      ['a.f64', { type: GGUFValueType.FLOAT64, value: Math.PI }],
      ['a.strs', meta.strs(['x', 'ÿ€😀', ''])],
      ['a.i32s', meta.i32s(new Int32Array([1, -2, 3]))],
    ] as const);
    const data = new Uint8Array(tensorByteSize(GGMLType.I2_S, [128, 2])).map((_, i) => i & 0x55);
    const bytes = await encodeGGUF(md, [
      { name: 'w', ne: [128, 2], type: GGMLType.I2_S, data },
      { name: 'v', ne: [3], type: GGMLType.F32, data: new Uint8Array(new Float32Array([1, 2, 3]).buffer) },
    ]);
    const f = await readGGUF(new MemorySource(bytes));
    expect(f.version).toBe(3);
    expect(f.metadata.get('a.u8')?.value).toBe(200);
    expect(f.metadata.get('a.i16')?.value).toBe(-30000);
    expect(f.metadata.get('a.u32')?.value).toBe(4000000000);
    expect(f.metadata.get('a.f32')?.value).toBe(1.5);
    expect(f.metadata.get('a.u64')?.value).toBe(2n ** 40n);
    expect(f.metadata.get('a.i64')?.value).toBe(-(2n ** 40n));
    expect(metaNumber(f.metadata, 'a.u64')).toBe(2 ** 40);
    expect(f.metadata.get('a.f64')?.value).toBe(Math.PI);
    expect(f.metadata.get('a.strs')?.value).toEqual(['x', 'ÿ€😀', '']);
    expect(Array.from(f.metadata.get('a.i32s')?.value as Int32Array)).toEqual([1, -2, 3]);
    const w = f.tensorsByName.get('w')!;
    expect(w.byteLength).toBe((128 * 2) / 4 + 32); // I2_S: n/4 + 32
    expect(w.offset % 32).toBe(0);
    expect(bytes.subarray(w.offset, w.offset + w.byteLength)).toEqual(data);
    const v = f.tensorsByName.get('v')!;
    expect(Array.from(new Float32Array(bytes.slice(v.offset, v.offset + 12).buffer))).toEqual([1, 2, 3]);
  });

  it('sizes every tensor type as ggml does', () => {
    expect(tensorByteSize(GGMLType.TQ2_0, [256, 3])).toBe(3 * 66);
    expect(tensorByteSize(GGMLType.TQ1_0, [512, 1])).toBe(2 * 54);
    expect(tensorByteSize(GGMLType.Q6_K, [256, 2])).toBe(2 * 210);
    expect(tensorByteSize(GGMLType.Q8_0, [64, 2])).toBe(4 * 34);
    expect(tensorByteSize(GGMLType.I2_S, [2560, 2560])).toBe(1638400 + 32);
    expect(() => tensorByteSize(GGMLType.TQ2_0, [100, 1])).toThrow(BitNetError);
  });
});

describe('GGUF reader rejects bad input with typed errors', () => {
  const small = async () => synthBytes({ qtype: 'tq2_0', seed: 3, layers: 1 });

  it('bad magic, version, truncation', async () => {
    const b = await small();
    const m = b.slice();
    m[0] = 0;
    await expectCode(readGGUF(new MemorySource(m)), 'GGUF_BAD_MAGIC');
    const v = b.slice();
    v[4] = 9;
    await expectCode(readGGUF(new MemorySource(v)), 'GGUF_UNSUPPORTED_VERSION');
    // A cut inside an array can only be told apart from an absurd count by the bytes left.
    await expectCode(readGGUF(new MemorySource(b.subarray(0, 3000))), 'GGUF_TRUNCATED', 'GGUF_ABSURD_COUNT');
    await expectCode(readGGUF(new MemorySource(b.subarray(0, 10))), 'GGUF_TRUNCATED');
  });

  it('absurd counts fail before allocating', async () => {
    const b = (await small()).slice();
    new DataView(b.buffer).setBigUint64(16, 2n ** 50n, true); // n_kv
    await expectCode(readGGUF(new MemorySource(b)), 'GGUF_ABSURD_COUNT');
    new DataView(b.buffer).setBigUint64(16, 2n ** 63n, true);
    await expectCode(readGGUF(new MemorySource(b)), 'GGUF_ABSURD_VALUE');
  });

  it('tensors past EOF and unknown types', async () => {
    const b = await small();
    // Cut the last tensor's tail off: the table is intact, the data is not.
    await expectCode(readGGUF(new MemorySource(b.subarray(0, b.length - 10))), 'GGUF_OFFSET_PAST_EOF');
    const f = await readGGUF(new MemorySource(b));
    const last = f.tensors[f.tensors.length - 1];
    // Find the type field of the last tensor-info record: it sits 12 bytes before the data start padding.
    const enc = new TextEncoder().encode(last.name);
    let at = -1;
    for (let i = 0; i < f.dataOffset; i++) {
      if (b[i] === enc[0] && enc.every((c, j) => b[i + j] === c)) at = i;
    }
    const typeAt = at + enc.length + 4 + 8 * last.ne.length;
    const u = b.slice();
    new DataView(u.buffer).setUint32(typeAt, 99, true);
    await expectCode(readGGUF(new MemorySource(u)), 'GGUF_UNKNOWN_TYPE');
  });

  it('fuzz: mutated headers, counts, offsets and types give only typed errors', async () => {
    const b = await small();
    const f = await readGGUF(new MemorySource(b));
    const rng = createRng(1234);
    let typed = 0;
    let ok = 0;
    for (let iter = 0; iter < 400; iter++) {
      const m = b.slice();
      const flips = 1 + (rng.nextU32() % 4);
      for (let j = 0; j < flips; j++) {
        // Bias mutations into the header/metadata/tensor table where parsing decisions happen.
        const pos = rng.nextU32() % (iter % 2 ? f.dataOffset : Math.min(64, f.dataOffset));
        const kind = rng.nextU32() % 3;
        if (kind === 0) m[pos] ^= 1 << (rng.nextU32() % 8);
        else if (kind === 1) m[pos] = 0xff;
        else m[pos] = rng.nextU32() & 0xff;
      }
      const cut = iter % 7 === 0 ? rng.nextU32() % m.length : m.length;
      try {
        await readGGUF(new MemorySource(m.subarray(0, cut)));
        ok++;
      } catch (e) {
        if (!(e instanceof BitNetError)) throw e;
        typed++;
      }
    }
    expect(typed + ok).toBe(400);
    expect(typed).toBeGreaterThan(50);
    console.log(`gguf fuzz: 400 mutated files, ${typed} typed errors, ${ok} parsed (mutations in values/strings)`);
  });
});

describe('model loading on fuzzed files', () => {
  it('gives only typed errors (or a model) for mutated headers and tables', async () => {
    const b = await synthBytes({ qtype: 'i2_s', seed: 3, layers: 1, arch: 'bitnet-b1.58' });
    const f = await readGGUF(new MemorySource(b));
    const rng = createRng(99);
    const codes = new Map<string, number>();
    let loaded = 0;
    for (let iter = 0; iter < 200; iter++) {
      const m = b.slice();
      for (let j = 0; j < 1 + (rng.nextU32() % 3); j++) m[rng.nextU32() % f.dataOffset] = rng.nextU32() & 0xff;
      try {
        await loadModel(new MemorySource(m));
        loaded++;
      } catch (e) {
        if (!(e instanceof BitNetError)) throw e;
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    console.log(`model-load fuzz: 200 files, ${loaded} loaded, errors: ${JSON.stringify(Object.fromEntries(codes))}`);
    expect(loaded).toBeLessThan(200);
  });
});
