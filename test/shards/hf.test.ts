// HF safetensors checkpoints → shard pack: packed uint8 + weight_scale and bf16 master weights
// (online absmean) give the same ternary weights as the GGUF path; with exact floats, the same logits.

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Model, ModelLoader } from '../../src/api/model-loader.ts';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import { synthModel, synthScale, synthTernary } from '../../src/model/synth.ts';
import type { Linear } from '../../src/model/weights.ts';
import { i2sScale, unpackI2S } from '../../src/quant/i2s.ts';
import { convertToPack, MemoryPackSink } from '../../src/shards/convert.ts';
import { hfInput } from '../../src/shards/hf.ts';
import { encodeSafetensors, readSafetensors } from '../../src/shards/safetensors.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { openSource, siblingLocation } from '../../src/sources/open.ts';
import { createTokenizerFromGGUF } from '../../src/tokenizer/bpe.ts';
import { isCode, logitsOf, logitsOfModel, sameBits, tempDir } from '../sources/util.ts';
import { bf16Value, HF_SHAPE, type HfVariant, LLAMA_CONFIG, writeHfCheckpoint } from './hf-fixture.ts';

const SEED = 31;
let gguf: Model;
let ggufLogits: Float32Array;

const open = (dir: string) => (name: string) => openSource(siblingLocation(`${dir}/config.json`, name));

async function convertHf(dir: string): Promise<{ model: Model; kind: string; warnings: string[] }> {
  const input = await hfInput(open(dir), dir);
  const sink = new MemoryPackSink();
  await convertToPack(input, sink);
  await input.close?.();
  const mk = (name: string): MemorySource =>
    Object.assign(new MemorySource(sink.files.get(name)!, name), { sibling: async (n: string) => mk(n) });
  return { model: await new ModelLoader().load(mk('manifest.json')), kind: input.kind, warnings: input.warnings };
}

function projections(m: Model): [string, Linear][] {
  return m.weights.layers.flatMap((L, i) =>
    (
      [
        ['attn_q', L.wq],
        ['attn_k', L.wk],
        ['attn_v', L.wv],
        ['attn_output', L.wo],
        ['ffn_gate', L.wGate],
        ['ffn_up', L.wUp],
        ['ffn_down', L.wDown],
      ] as const
    ).map(([n, w]): [string, Linear] => [`blk.${i}.${n}.weight`, w]),
  );
}

beforeAll(async () => {
  const m = synthModel({ ...HF_SHAPE, seed: SEED });
  const bytes = await encodeGGUF(m.metadata, m.tensors);
  gguf = await new ModelLoader().load(new MemorySource(bytes));
  ggufLogits = await logitsOfModel(gguf);
});

describe('HF checkpoint → pack', () => {
  it('packed uint8 + f32 weight_scale: identical weights and logits to the GGUF, and the same tokenizer', async () => {
    const { model, kind, warnings } = await convertHf(
      await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' }),
    );
    expect(kind).toBe('hf-packed');
    expect(warnings).toEqual([]);
    expect(model.hparams).toEqual(gguf.hparams);
    for (const [name, w] of projections(model)) {
      const ref = projections(gguf).find(([n]) => n === name)![1];
      expect(Buffer.from(w.bytes).equals(Buffer.from(ref.bytes)), name).toBe(true);
    }
    expect(sameBits(await logitsOfModel(model), ggufLogits)).toBe(true);
    const text = 'the function returns 42 apples';
    expect(model.tokenizer!.encode(text)).toEqual(gguf.tokenizer!.encode(text));
    // A lone GPT-2 ByteLevel pre_tokenizer is recorded as such.
    expect(model.file.metadata.get('tokenizer.ggml.pre')?.value).toBe('gpt-2');
    expect(model.tokenizer!.preTokenizer).toBe('gpt-2');
  });

  it("records tokenizer.json's LLaMA-3 pre_tokenizer as tokenizer.ggml.pre = llama-bpe (HF parity)", async () => {
    const { model, warnings } = await convertHf(
      await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact', preTokenizer: 'llama3' }),
    );
    expect(warnings).toEqual([]);
    expect(model.file.metadata.get('tokenizer.ggml.pre')?.value).toBe('llama-bpe');
    expect(model.tokenizer!.preTokenizer).toBe('llama-bpe');
    const ref = createTokenizerFromGGUF(gguf.file.metadata, { preTokenizer: 'llama-bpe' });
    for (const text of ['the function returns 12345 apples', "they're   here\n\n  ok", 'x = [1, 22, 333];']) {
      expect(model.tokenizer!.encode(text)).toEqual(ref.encode(text));
    }
  });

  const variants: [string, HfVariant][] = [
    ['packed, bf16 scales and floats', { weights: 'packed', floats: 'bf16' }],
    ['packed, bitlinear (divides by weight_scale)', { weights: 'packed', floats: 'exact', linearClass: 'bitlinear' }],
    ['packed, sharded with an index', { weights: 'packed', floats: 'bf16', sharded: true }],
    ['bf16 master weights (online absmean)', { weights: 'master', floats: 'bf16' }],
  ];
  it.each(variants)('%s: the same ternary weights as the GGUF path', async (_n, v) => {
    const { model, kind } = await convertHf(await writeHfCheckpoint(SEED, v));
    expect(kind).toBe(v.weights === 'packed' ? 'hf-packed' : 'hf-bf16');
    for (const [name, w] of projections(model)) {
      const n = w.k * w.n;
      const ref = projections(gguf).find(([x]) => x === name)![1];
      const bytesOf = (t: Int8Array) => Buffer.from(t.buffer, t.byteOffset, t.byteLength);
      const mine = bytesOf(unpackI2S(w.bytes, n));
      expect(mine.equals(bytesOf(unpackI2S(ref.bytes, n))), name).toBe(true);
      expect(mine.equals(bytesOf(synthTernary(SEED, name, n))), name).toBe(true);
      const s = synthScale(SEED, name, w.k);
      const got = i2sScale(w.bytes, n);
      if (v.weights === 'master') {
        // absmean of the bf16 weights: |W| = bf16(1.5·s) on the non-zero entries.
        const t = synthTernary(SEED, name, n);
        let nnz = 0;
        for (const x of t) nnz += x !== 0 ? 1 : 0;
        expect(got).toBe(Math.fround((bf16Value(1.5 * s) * nnz) / n));
      } else if (v.linearClass === 'bitlinear') {
        expect(got).toBe(Math.fround(1 / Math.fround(1 / s)));
      } else {
        expect(got).toBe(v.floats === 'bf16' ? bf16Value(s) : s);
      }
    }
    // bf16 norms/embedding round the floats, so only finite, well-formed logits are expected here.
    const l = await logitsOfModel(model);
    expect(l.every(Number.isFinite)).toBe(true);
  });

  it('refuses what it cannot convert, with typed errors', async () => {
    const dir = await tempDir();
    await expect(hfInput(open(dir), dir)).rejects.toSatisfy(isCode('HF_NO_CONFIG'));
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'config.json'), JSON.stringify(LLAMA_CONFIG));
    await expect(hfInput(open(dir), dir)).rejects.toSatisfy(isCode('HF_UNSUPPORTED_MODEL'));
    const ok = await writeHfCheckpoint(SEED, { weights: 'packed', floats: 'exact' });
    const st = join(ok, 'model.safetensors');
    const bytes = new Uint8Array(await (await import('node:fs/promises')).readFile(st));
    await writeFile(st, bytes.subarray(0, bytes.length - 10)); // the last tensor now runs past the end
    await expect(hfInput(open(ok), ok)).rejects.toSatisfy(isCode('SAFETENSORS_INVALID'));
  });

  it('reads and writes safetensors headers', async () => {
    const data = new Uint8Array([1, 2, 3, 4, 5, 6]);
    const f = await readSafetensors(
      new MemorySource(encodeSafetensors([{ name: 'a', dtype: 'U8', shape: [2, 3], data }], { format: 'pt' })),
    );
    const e = f.entries.get('a')!;
    expect(e).toMatchObject({ dtype: 'U8', shape: [2, 3], length: 6 });
    expect(e.offset % 8).toBe(0);
    expect(f.metadata).toEqual({ format: 'pt' });
  });
});

describe('bitnet convert on an HF directory (CLI)', () => {
  it('converts bf16 master weights and the pack runs', async () => {
    const dir = await writeHfCheckpoint(SEED, { weights: 'master', floats: 'bf16' });
    const out = join(await tempDir('bitnet-hfconv-'), 'pack');
    const r = await promisify(execFile)(process.execPath, [
      'bin/bitnet.js',
      'convert',
      '--model',
      dir,
      '--out',
      out,
      '--json',
      '--quiet',
    ]);
    expect(JSON.parse(r.stdout)).toMatchObject({ source: { kind: 'hf-bf16' }, layout: 'i2s', warnings: [] });
    const l = await logitsOf(out);
    expect(l.length).toBe(5 * HF_SHAPE.vocab);
  });
});
