// GGUF → shard pack: the format's invariants, bit-exact logits from the pack, the CLI, LoadConfig
// (checksums, progress), manifest validation, and the memory budget checked from the manifest alone.

import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ModelLoader, WORKERS_MEMORY_BYTES } from '../../src/api/model-loader.ts';
import { BitNetError } from '../../src/errors.ts';
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import { SYNTH_PRESETS, synthModel } from '../../src/model/synth.ts';
import { convertToPack, ggufInput, MemoryPackSink, planManifest } from '../../src/shards/convert.ts';
import { type PackManifest, validateManifest } from '../../src/shards/format.ts';
import { DirectoryPackSink } from '../../src/shards/fs-sink.ts';
import { sha256Hex } from '../../src/shards/hash.ts';
import { ShardPack } from '../../src/shards/reader.ts';
import { type ByteSource, MemorySource } from '../../src/sources/byte-source.ts';
import { bitnet } from '../helpers/cli.ts';
import { synthBytes } from '../helpers/models.ts';
import { type Fixture, IDS, isCode, logitsOf, makeFixture, sameBits, tempDir } from '../sources/util.ts';
import { manifestOf, memoryPack } from './memory-pack.ts';

let fx: Fixture;
let local: Float32Array;
beforeAll(async () => {
  fx = await makeFixture();
  local = await logitsOf(fx.ggufPath);
});
afterEach(() => vi.unstubAllGlobals());

describe('shard-pack format', () => {
  it('groups tensors by layer, aligns them, respects the shard size and hashes everything', async () => {
    const m = manifestOf(fx.pack);
    expect(m).toMatchObject({ format: 'bitnet-shard-pack', version: 1, layout: 'i2s', alignment: 64, head: 'F16' });
    expect(m.groups.map((g) => g.name)).toEqual(['token_embd', 'output', 'blk.0', 'blk.1']);
    for (const g of m.groups) {
      const ts = m.tensors.filter((t) => t.group === g.name);
      expect(ts.map((t) => t.name).sort()).toEqual([...g.tensors].sort());
      expect(ts.every((t) => t.shard === g.shard && t.offset % 64 === 0)).toBe(true);
      if (g.name.startsWith('blk.')) expect(ts.every((t) => t.name.startsWith(`${g.name}.`))).toBe(true);
    }
    for (const s of m.shards) {
      const bytes = fx.pack.get(s.file)!;
      expect(bytes.length).toBe(s.size);
      expect(await sha256Hex(bytes)).toBe(s.sha256);
      // A shard exceeds the chosen size only when it holds a single oversized group.
      if (s.size > m.shardSize) expect(m.groups.filter((g) => g.shard === s.file)).toHaveLength(1);
    }
    for (const t of m.tensors) {
      expect(await sha256Hex(fx.pack.get(t.shard)!.subarray(t.offset, t.offset + t.length))).toBe(t.sha256);
    }
    const q = m.tensors.find((t) => t.name === 'blk.0.attn_k.weight')!;
    expect(q).toMatchObject({ dtype: 'I2_S', layout: 'i2s', shape: [128, 256] });
    // The I2_S bytes are the GGUF's, byte for byte.
    const g = await ggufInput(new MemorySource(fx.gguf));
    const src = await g.tensors.find((t) => t.name === q.name)!.read();
    expect(Buffer.from(fx.pack.get(q.shard)!.subarray(q.offset, q.offset + q.length)).equals(Buffer.from(src))).toBe(
      true,
    );
  });

  it('gives logits identical to the GGUF from disk (directory or manifest path), any shard size', async () => {
    expect(sameBits(await logitsOf(fx.packDir), local)).toBe(true);
    expect(sameBits(await logitsOf(join(fx.packDir, 'manifest.json'), { validateChecksums: true }), local)).toBe(true);
    expect(sameBits(await logitsOf(`file://${fx.packDir}/manifest.json`), local)).toBe(true);
    for (const shardSize of [4096, 1 << 26]) {
      const sink = new MemoryPackSink();
      await convertToPack(await ggufInput(new MemorySource(fx.gguf)), sink, { shardSize, alignment: 256 });
      const m = manifestOf(sink.files);
      expect(m.shards.length).toBe(shardSize === 4096 ? 4 : 1);
      expect(sameBits(await logitsOf(memoryPack(sink.files)), local)).toBe(true);
    }
  });

  it('honours progressCallback and validateChecksums; reads whole layers with one read each', async () => {
    const files = new Map(fx.pack);
    const seen: string[] = [];
    const m = await new ModelLoader({ progressCallback: (p) => seen.push(p.tensor) }).load(memoryPack(files));
    expect(seen).toContain('blk.1.ffn_down.weight');
    expect(m.info.numLayers).toBe(2);

    const pack = await ShardPack.open(memoryPack(files), {
      openShard: async (f) => new MemorySource(files.get(f)!, f),
      validateChecksums: true,
    });
    const layer = await pack.readGroup('blk.1');
    expect([...layer.keys()]).toHaveLength(11);
    expect(pack.stats.groupReads).toBe(1);

    // A tampered tensor hash is caught when checksums are on, and only then.
    const man = manifestOf(files);
    const t = man.tensors.find((x) => x.name === 'blk.0.ffn_up.weight')!;
    t.sha256 = 'f'.repeat(64);
    files.set('manifest.json', new TextEncoder().encode(JSON.stringify(man)));
    await expect(new ModelLoader({ validateChecksums: true }).load(memoryPack(files))).rejects.toSatisfy(
      isCode('CHECKSUM_MISMATCH'),
    );
    await expect(new ModelLoader().load(memoryPack(files))).resolves.toBeDefined();
  });

  it('refuses bad manifests and bad shards with typed errors, before reading weights', async () => {
    const base = manifestOf(fx.pack);
    const variants: [string, (m: PackManifest) => void][] = [
      ['PACK_UNSUPPORTED_VERSION', (m) => void (m.version = 2)],
      ['PACK_BAD_FORMAT', (m) => void ((m as { format: string }).format = 'other')],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[3].offset += 8)],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[3].length += 64)],
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[4].offset = m.tensors[3].offset)],
      ['PACK_BAD_FILE_NAME', (m) => void (m.shards[0].file = '../escape.bin')],
      ['PACK_BAD_MANIFEST', (m) => void (m.hparams.nLayer = 3)],
      ['PACK_UNSUPPORTED_LAYOUT', (m) => void (m.tensors[3].layout = 'tl9' as 'tl2')],
      // a TL layout on an i2s pack's tensor (tl packs: test/shards/tl-layout.test.ts)
      ['PACK_BAD_MANIFEST', (m) => void (m.tensors[3].layout = 'tl2')],
    ];
    for (const [code, edit] of variants) {
      const m = structuredClone(base);
      edit(m);
      const files = new Map(fx.pack);
      files.set('manifest.json', new TextEncoder().encode(JSON.stringify(m)));
      const opened: string[] = [];
      await expect(new ModelLoader().load(memoryPack(files, opened)), code).rejects.toSatisfy(isCode(code));
      expect(opened).toEqual(['manifest.json']);
    }
    const files = new Map(fx.pack);
    files.set('manifest.json', new TextEncoder().encode('{"format": '));
    await expect(new ModelLoader().load(memoryPack(files))).rejects.toSatisfy(isCode('PACK_BAD_JSON'));
    const short = new Map(fx.pack);
    short.set('shard-00001.bin', fx.pack.get('shard-00001.bin')!.subarray(0, 1000));
    await expect(new ModelLoader().load(memoryPack(short))).rejects.toSatisfy(isCode('PACK_SHARD_SIZE_MISMATCH'));
    expect(() => validateManifest({ ...base, alignment: 48 })).toThrow(/power of two/);
    // two groups of one name (each with its own tensors): the reader looks groups up by name, so
    // one would be read from the other's place
    const twice = structuredClone(base);
    const [g0, g1] = [twice.groups[1], twice.groups[2]];
    for (const t of twice.tensors) if (t.group === g1.name) t.group = g0.name;
    g1.name = g0.name;
    expect(() => validateManifest(twice)).toThrow(/repeated group name/);
  });

  it('refuses an unknown layout and an unknown head; re-encodes the head as asked', async () => {
    const input = await ggufInput(new MemorySource(fx.gguf));
    await expect(convertToPack(input, new MemoryPackSink(), { layout: 'tl9' as 'tl2' })).rejects.toSatisfy(
      isCode('BAD_LAYOUT'),
    );
    await expect(convertToPack(input, new MemoryPackSink(), { head: 'int8' as 'int4' })).rejects.toSatisfy(
      isCode('PACK_HEAD_UNSUPPORTED'),
    );
    const want = { q8_0: GGMLType.Q8_0, q6_k: GGMLType.Q6_K, int4: GGMLType.Q4_0 };
    for (const head of ['q8_0', 'q6_k', 'int4'] as const) {
      const sink = new MemoryPackSink();
      await convertToPack(input, sink, { head });
      const m = await new ModelLoader().load(memoryPack(sink.files));
      expect(m.weights.tokenEmbd.type).toBe(want[head]);
      expect(manifestOf(sink.files).head).toBe(head === 'int4' ? 'Q4_0' : head.toUpperCase());
      // The ternary projections are untouched.
      const ref = await new ModelLoader().load(fx.ggufPath);
      expect(Buffer.from(m.weights.layers[1].wDown.bytes).equals(Buffer.from(ref.weights.layers[1].wDown.bytes))).toBe(
        true,
      );
    }
  });

  it('repacks TQ2_0/TQ1_0 into I2_S losslessly, and refuses when block scales differ', async () => {
    const i2 = new MemoryPackSink();
    await convertToPack(await ggufInput(new MemorySource(await synthBytes({ qtype: 'i2_s', seed: 21 }))), i2);
    for (const qtype of ['tq2_0', 'tq1_0'] as const) {
      const tq = new MemoryPackSink();
      await convertToPack(await ggufInput(new MemorySource(await synthBytes({ qtype, seed: 21 }))), tq);
      const a = manifestOf(i2.files).tensors.filter((t) => t.dtype === 'I2_S');
      const b = manifestOf(tq.files).tensors.filter((t) => t.dtype === 'I2_S');
      expect(b.map((t) => t.sha256)).toEqual(a.map((t) => t.sha256));
    }
    const bytes = await synthBytes({ qtype: 'tq2_0', seed: 21 });
    const input = await ggufInput(new MemorySource(bytes));
    const t = input.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
    const read = t.read;
    t.read = async () => {
      const b = (await read()).slice();
      b[65] ^= 0x3c; // the f16 scale of the first block
      return b;
    };
    await expect(convertToPack(input, new MemoryPackSink())).rejects.toSatisfy(isCode('CONVERT_LOSSY'));
  });

  it('refuses a 2B-4T-sized pack in a Worker (128 MB budget) from the manifest alone', async () => {
    const m = synthModel({
      ...SYNTH_PRESETS['2b-4t'],
      arch: 'bitnet-b1.58',
      qtype: 'i2_s',
      embdType: 'f16',
      seed: 1,
      vocab: 128256,
    });
    const input = {
      kind: 'gguf' as const,
      name: '2b-4t-sized',
      metadata: new Map(m.metadata.filter(([k]) => !k.startsWith('tokenizer.'))),
      tensors: m.tensors.map((t) => ({
        name: t.name,
        ne: t.ne,
        type: t.type,
        read: async (): Promise<Uint8Array> => {
          throw new Error('no tensor may be read');
        },
      })),
    };
    const manifest = planManifest(input);
    const files = new Map([['manifest.json', new TextEncoder().encode(JSON.stringify(manifest))]]);
    vi.stubGlobal('navigator', { userAgent: 'Cloudflare-Workers' });
    const loader = new ModelLoader();
    expect(loader.config.maxMemoryBytes).toBe(WORKERS_MEMORY_BYTES);
    const opened: string[] = [];
    const e = await loader.load(memoryPack(files, opened)).catch((x) => x);
    expect(e).toMatchObject({ kind: 'Memory', code: 'MODEL_TOO_LARGE', details: { budget: 128 * 1024 * 1024 } });
    expect(e.details.needed).toBeGreaterThan(1_000_000_000);
    expect(e.message).toContain('128.0 MiB');
    expect(opened).toEqual(['manifest.json']);
  });
});

describe('bitnet convert (CLI)', () => {
  it('converts a GGUF with a progress bar, and `bitnet logits` on the pack equals the GGUF', async () => {
    const out = join(await tempDir('bitnet-conv-'), 'pack');
    const c = await bitnet('convert', '--model', fx.ggufPath, '--out', out, '--shard-size', '400KiB', '--json');
    expect(c.code).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ out, layout: 'i2s', shards: 2, source: { kind: 'gguf' } });
    expect(c.stderr).toMatch(/convert \[#+\] 100%/);
    expect((await readdir(out)).sort()).toEqual(['manifest.json', 'shard-00000.bin', 'shard-00001.bin']);
    const ids = IDS.join(',');
    const [a, b] = await Promise.all([
      bitnet('logits', '--model', fx.ggufPath, '--prompt-ids', ids, '--json'),
      bitnet('logits', '--model', out, '--prompt-ids', ids, '--json'),
    ]);
    expect(a.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);

    const bad = await bitnet('convert', '--model', fx.ggufPath, '--out', out, '--layout', 'tl9');
    expect(bad.code).toBe(2); // a bad flag value is a usage error
    expect(bad.stderr).toContain('tl9');
    const junk = join(await tempDir(), 'junk.bin');
    await writeFile(junk, 'not a model at all');
    expect((await bitnet('convert', '--model', junk, '--out', out)).stderr).toContain('CONVERT_UNKNOWN_INPUT');
    expect(JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')).format).toBe('bitnet-shard-pack');
  });

  it('bad --alignment / --shard-size values are usage errors before the model is opened', async () => {
    const out = join(await tempDir('bitnet-conv-'), 'pack');
    const nowhere = join(out, 'no-such-model.gguf'); // never opened: the flags fail first
    const a = await bitnet('convert', '--model', nowhere, '--out', out, '--alignment', '48');
    expect([a.code, a.stderr]).toEqual([2, expect.stringContaining('--alignment must be a power of two, got 48')]);
    const s = await bitnet('convert', '--model', nowhere, '--out', out, '--shard-size', '10');
    expect([s.code, s.stderr]).toEqual([
      2,
      expect.stringContaining('--shard-size must be at least the alignment (64 bytes)'),
    ]);
  });
});

describe('a failed conversion leaves the output as it was', () => {
  /** The fixture's GGUF, whose reads fail once `failAfter` bytes of tensor data have been read. */
  const failing = (failAfter: number): ByteSource => {
    const src = new MemorySource(fx.gguf, 'failing.gguf');
    let given = 0;
    return {
      size: src.size,
      description: src.description,
      read: async (offset, length, o) => {
        if (length > 4096 && (given += length) > failAfter)
          throw BitNetError.Io('ACCESS_DENIED', 'failing.gguf: access denied (403)', {});
        return src.read(offset, length, o);
      },
    };
  };

  it('an earlier pack in --out survives whole, and nothing of the failed run stays behind', async () => {
    const out = join(await tempDir('bitnet-conv-'), 'pack');
    await convertToPack(await ggufInput(new MemorySource(fx.gguf, 'm.gguf')), new DirectoryPackSink(out), {
      shardSize: 400 << 10,
    });
    const before = new Map<string, string>();
    for (const f of await readdir(out)) before.set(f, await sha256Hex(await readFile(join(out, f))));
    expect(before.size).toBe(3);

    const err = await convertToPack(await ggufInput(failing(500_000)), new DirectoryPackSink(out), {
      shardSize: 200 << 10, // more, smaller shards: some written before the failure
    }).catch((e) => e);
    expect(err.code).toBe('ACCESS_DENIED');
    const after = new Map<string, string>();
    for (const f of await readdir(out)) after.set(f, await sha256Hex(await readFile(join(out, f))));
    expect(after).toEqual(before); // the same files, byte for byte: no staging directory, no .partial
    const pack = await logitsOf(out);
    expect(sameBits(pack, local)).toBe(true);
  });

  it('a manifest.json in --out that is not a shard pack’s is never replaced', async () => {
    const out = await tempDir('bitnet-conv-');
    await writeFile(join(out, 'manifest.json'), '{"name":"my web app"}');
    const err = await convertToPack(
      await ggufInput(new MemorySource(fx.gguf, 'm.gguf')),
      new DirectoryPackSink(out),
    ).catch((e) => e);
    expect([err.code, err.message]).toEqual(['OUTPUT_WRITE_FAILED', expect.stringMatching(/is not a shard pack's/)]);
    expect(await readdir(out)).toEqual(['manifest.json']);
    expect(await readFile(join(out, 'manifest.json'), 'utf8')).toBe('{"name":"my web app"}');
  });
});
