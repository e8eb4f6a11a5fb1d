/**
 * The converter: a model (a GGUF, or an HF safetensors checkpoint via hf.ts) → a shard pack.
 *
 * 1. Plan, before any tensor byte is read: the output dtype and layout of every tensor
 *    (projections → I2_S, or TL images; the head as asked, everything else as it is), the model
 *    check (the runtime's own weight planner on the planned tensor table), groups by layer and
 *    their placement in shards.
 * 2. Write: tensor by tensor, in group order, into the sink, hashing each tensor; the manifest last.
 *
 * Projections, layout `i2s` (default): I2_S is copied byte for byte; TQ2_0/TQ1_0 are repacked only
 * when every block has the same scale, else `CONVERT_LOSSY`. The repack keeps the weights exactly,
 * not the logits: the pack computes with I2_S's numerics, not TQ's (docs/numerics.md), so its
 * logits differ from the source's by rounding (the result's `notes` say so); float weights
 * (bf16/f16/f32 master weights) are ternarized online with absmean (`ternarize`,
 * docs/bitnet-formats.md §5.1). Layouts `tl1` / `tl2`: every projection becomes a TL tile image
 * (src/quant/tl.ts) of the ternary tensor it is (or is ternarized to): I2_S (and ternarized floats)
 * as kind 0, dtype I2_S; TQ2_0/TQ1_0 as kind 1 with their per-block scales, dtype kept; always exact.
 * The head (`token_embd`, `output`): `keep`, or re-encoded as f16, q8_0, q6_k or int4 (ggml's
 * Q4_0, see src/model/integer-head.ts for its dot product).
 * Runtime-free: the sink decides where the bytes go (fs-sink.ts writes a directory).
 */
import { ternarize } from '../api/quantization.ts';
import { BitNetError } from '../errors.ts';
import { GGMLType, tensorByteSize, typeName } from '../gguf/ggml-types.ts';
import type { GGUFMetadata } from '../gguf/metadata.ts';
import { type GGUFFile, type GGUFTensorInfo, metaString, readGGUF, readTensorBytes } from '../gguf/reader.ts';
import { readHParams } from '../model/hparams.ts';
import { PROJ_NAMES, planWeights } from '../model/weights.ts';
import { dequantizeRow, quantizeF16, quantizeQ4_0, quantizeQ6_K, quantizeQ8_0 } from '../quant/float-codecs.ts';
import { i2sScale, packI2S } from '../quant/i2s.ts';
import { packTL, type TLLayout, ternaryOf, tlImageBytes, tlKindOf } from '../quant/tl.ts';
import { unpackTQ1_0, unpackTQ2_0 } from '../quant/tq.ts';
import type { ByteSource, ReadOptions } from '../sources/byte-source.ts';
import { throwIfAborted } from '../sources/retry.ts';
import {
  DEFAULT_ALIGNMENT,
  DEFAULT_SHARD_SIZE,
  type HeadType,
  MANIFEST_NAME,
  metadataFromJson,
  metadataToJson,
  neToShape,
  PACK_FORMAT,
  PACK_VERSION,
  type PackGroup,
  type PackManifest,
  type PackShard,
  type PackTensor,
  type TensorLayout,
  validateManifest,
} from './format.ts';
import { sha256Hex } from './hash.ts';

/** One tensor of the input model, in GGUF naming and ggml order. */
export interface InputTensor {
  name: string;
  ne: number[];
  /** GGML type of the bytes `read` returns. */
  type: number;
  read(opts?: ReadOptions): Promise<Uint8Array>;
}

export interface ConvertInput {
  kind: PackManifest['source']['kind'];
  name: string;
  metadata: GGUFMetadata;
  tensors: InputTensor[];
  close?(): Promise<void>;
}

/** Where the pack goes. Shards are written one after another; the manifest last. */
export interface PackSink {
  openShard(file: string): Promise<ShardWriter>;
  writeText(name: string, text: string): Promise<void>;
  /** Called once after the manifest is written (a directory sink moves the pack into place). */
  finish?(manifest: PackManifest): Promise<void>;
  /** Called when the conversion fails: release what is open and leave no partial output. */
  abort?(): Promise<void>;
}

export interface ShardWriter {
  write(bytes: Uint8Array): Promise<void>;
  /** Finishes the shard; returns its size and sha256. */
  close(): Promise<{ size: number; sha256: string }>;
}

export interface ConvertOptions extends ReadOptions {
  layout?: TensorLayout;
  head?: HeadType;
  shardSize?: number;
  alignment?: number;
  onProgress?: (p: { doneBytes: number; totalBytes: number; tensor: string }) => void;
}

export interface ConvertResult {
  manifest: PackManifest;
  totalBytes: number;
  /** What the user should know about the conversion (for example a TQ → I2_S repack's numerics). */
  notes: string[];
}

const PROJ = new RegExp(`^blk\\.\\d+\\.(${PROJ_NAMES.join('|')})\\.weight$`);
const HEAD = new Set(['token_embd.weight', 'output.weight']);
/** `int4` is ggml's Q4_0: 32-element blocks of 4-bit values with one f16 scale (4.5 bits/weight). */
const HEAD_TYPES: Record<Exclude<HeadType, 'keep'>, number> = {
  f16: GGMLType.F16,
  q8_0: GGMLType.Q8_0,
  q6_k: GGMLType.Q6_K,
  int4: GGMLType.Q4_0,
};

/** A GGUF file as converter input (any ByteSource: local, HTTP, S3, R2). */
export async function ggufInput(source: ByteSource, opts?: ReadOptions): Promise<ConvertInput> {
  const file = await readGGUF(source, opts);
  return {
    kind: 'gguf',
    name: metaString(file.metadata, 'general.name') ?? source.description,
    metadata: file.metadata,
    tensors: file.tensors.map((t) => ({
      name: t.name,
      ne: t.ne,
      type: t.type,
      read: (o) => readTensorBytes(file, t, o),
    })),
  };
}

function groupOf(name: string): string {
  const m = /^blk\.(\d+)\./.exec(name);
  if (m) return `blk.${m[1]}`;
  if (name === 'token_embd.weight') return 'token_embd';
  if (name === 'output_norm.weight' || name === 'output.weight') return 'output';
  return 'extra';
}

function groupRank(g: string): number {
  if (g === 'token_embd') return -2;
  if (g === 'output') return -1;
  if (g === 'extra') return Number.MAX_SAFE_INTEGER;
  return Number(g.slice(4));
}

function toF32(t: InputTensor, bytes: Uint8Array): Float32Array {
  const k = t.ne[0];
  const rows = t.ne.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(k * rows);
  const view = { name: t.name, type: t.type, ne: [k, rows], bytes };
  const row = new Float32Array(k);
  for (let r = 0; r < rows; r++) {
    dequantizeRow(view, r, row);
    out.set(row, r * k);
  }
  return out;
}

function outputType(t: InputTensor, o: Required<Pick<ConvertOptions, 'layout' | 'head'>>): number {
  if (PROJ.test(t.name)) {
    const tl = o.layout === 'tl1' || o.layout === 'tl2';
    // TL images keep TQ2_0/TQ1_0 as they are (kind 1: per-block scales); I2_S holds one scale
    if (tl && (t.type === GGMLType.TQ2_0 || t.type === GGMLType.TQ1_0)) return t.type;
    if (
      t.type === GGMLType.I2_S ||
      t.type === GGMLType.TQ2_0 ||
      t.type === GGMLType.TQ1_0 ||
      t.type === GGMLType.F32 ||
      t.type === GGMLType.F16 ||
      t.type === GGMLType.BF16
    )
      return GGMLType.I2_S;
    throw BitNetError.Model(
      'CONVERT_UNSUPPORTED_TYPE',
      `cannot convert projection ${t.name} of type ${typeName(t.type)}`,
      {
        tensor: t.name,
        type: typeName(t.type),
      },
    );
  }
  if (HEAD.has(t.name) && o.head !== 'keep') return HEAD_TYPES[o.head];
  return t.type;
}

/** The TL image of a projection (its ternary values as they are, or ternarized from floats). */
function tlImage(t: InputTensor, bytes: Uint8Array, layout: TLLayout): Uint8Array {
  const [k, n] = t.ne;
  let src: ReturnType<typeof ternaryOf>;
  if (tlKindOf(t.type) !== undefined) {
    src = ternaryOf({ type: t.type, bytes, k, n, scale: t.type === GGMLType.I2_S ? i2sScale(bytes, k * n) : 1 });
  } else {
    const { ternary, scale } = ternarize(toF32(t, bytes));
    src = { t: ternary, kind: 0, wscale: scale };
  }
  const out = new Uint8Array(tlImageBytes(layout, n, k, src.kind));
  packTL(layout, src.t, n, k, src.kind, src.wscale, src.blockScales, out);
  return out;
}

/** The output bytes of one tensor. */
async function convertTensor(
  t: InputTensor,
  outType: number,
  layout: TLLayout | undefined,
  opts?: ReadOptions,
): Promise<Uint8Array> {
  const bytes = await t.read(opts);
  if (layout) return tlImage(t, bytes, layout);
  if (outType === t.type) return bytes;
  if (outType === GGMLType.I2_S) {
    if (t.type === GGMLType.TQ2_0 || t.type === GGMLType.TQ1_0) {
      const n = t.ne.reduce((a, b) => a * b, 1);
      const { ternary, scales } = t.type === GGMLType.TQ2_0 ? unpackTQ2_0(bytes, n) : unpackTQ1_0(bytes, n);
      if (!scales.every((s) => s === scales[0])) {
        throw BitNetError.Quantization(
          'CONVERT_LOSSY',
          `${t.name}: ${typeName(t.type)} blocks have different scales; I2_S has one scale per tensor, so the conversion would change the weights`,
          { tensor: t.name },
        );
      }
      return packI2S(ternary, scales[0]);
    }
    const { ternary, scale } = ternarize(toF32(t, bytes));
    return packI2S(ternary, scale);
  }
  const x = toF32(t, bytes);
  if (outType === GGMLType.F16) return quantizeF16(x);
  if (outType === GGMLType.Q8_0) return quantizeQ8_0(x);
  if (outType === GGMLType.Q6_K) return quantizeQ6_K(x);
  if (outType === GGMLType.Q4_0) return quantizeQ4_0(x);
  throw BitNetError.Model('CONVERT_UNSUPPORTED_TYPE', `cannot write ${t.name} as ${typeName(outType)}`, {
    tensor: t.name,
  });
}

interface Planned {
  input: InputTensor;
  outType: number;
  /** Set for projections written as TL images. */
  tl?: TLLayout;
  length: number;
  group: string;
  shard: string;
  offset: number;
}

/** Places groups into shards: a group never spans two shards; an oversized group gets a shard of its own. */
function placeGroups(
  planned: Planned[],
  shardSize: number,
  align: number,
): { groups: PackGroup[]; sizes: Map<string, number> } {
  const byGroup = new Map<string, Planned[]>();
  for (const p of planned) {
    if (!byGroup.has(p.group)) byGroup.set(p.group, []);
    byGroup.get(p.group)!.push(p);
  }
  const names = [...byGroup.keys()].sort((a, b) => groupRank(a) - groupRank(b));
  const groups: PackGroup[] = [];
  const sizes = new Map<string, number>();
  let shardIdx = 0;
  let used = 0;
  const shardName = (i: number) => `shard-${String(i).padStart(5, '0')}.bin`;
  for (const g of names) {
    const ts = byGroup.get(g)!;
    let len = 0;
    for (const t of ts) len = Math.ceil(len / align) * align + t.length;
    const start = Math.ceil(used / align) * align;
    if (used > 0 && start + len > shardSize) {
      sizes.set(shardName(shardIdx), used);
      shardIdx++;
      used = 0;
    }
    const gStart = Math.ceil(used / align) * align;
    let pos = gStart;
    for (const t of ts) {
      pos = Math.ceil(pos / align) * align;
      t.shard = shardName(shardIdx);
      t.offset = pos;
      pos += t.length;
    }
    groups.push({
      name: g,
      shard: shardName(shardIdx),
      offset: gStart,
      length: pos - gStart,
      tensors: ts.map((t) => t.input.name),
    });
    used = pos;
  }
  if (used > 0 || sizes.size === 0) sizes.set(shardName(shardIdx), used);
  return { groups, sizes };
}

interface PackPlan {
  layout: TensorLayout;
  head: HeadType;
  align: number;
  shardSize: number;
  hparams: ReturnType<typeof readHParams>;
  groups: PackGroup[];
  sizes: Map<string, number>;
  order: Planned[];
  totalBytes: number;
}

/** Step 1: output types and sizes, the model check, placement. Reads no tensor byte. */
function planPack(input: ConvertInput, opts: ConvertOptions): PackPlan {
  const layout = opts.layout ?? 'i2s';
  const head = opts.head ?? 'keep';
  const align = opts.alignment ?? DEFAULT_ALIGNMENT;
  const shardSize = opts.shardSize ?? DEFAULT_SHARD_SIZE;
  if (layout !== 'i2s' && layout !== 'tl1' && layout !== 'tl2')
    throw BitNetError.Config('BAD_LAYOUT', `unknown layout ${layout} (i2s, tl1, tl2)`, { layout });
  if (!(head === 'keep' || head in HEAD_TYPES))
    throw BitNetError.Config('PACK_HEAD_UNSUPPORTED', `unknown head type ${head} (keep, f16, q8_0, q6_k, int4)`, {
      head,
    });
  if (!Number.isSafeInteger(align) || align < 8 || (align & (align - 1)) !== 0)
    throw BitNetError.Config('BAD_ALIGNMENT', `alignment must be a power of two >= 8, got ${align}`, {
      alignment: align,
    });
  if (!Number.isSafeInteger(shardSize) || shardSize < align)
    throw BitNetError.Config('BAD_SHARD_SIZE', `shard size must be at least ${align} bytes`, { shardSize });

  const planned: Planned[] = input.tensors.map((t) => {
    const outType = outputType(t, { layout, head });
    const group = groupOf(t.name);
    if (layout !== 'i2s' && PROJ.test(t.name)) {
      if (t.ne.length !== 2)
        throw BitNetError.Model('CONVERT_UNSUPPORTED_TYPE', `projection ${t.name} is not 2-D`, { tensor: t.name });
      const length = tlImageBytes(layout, t.ne[1], t.ne[0], tlKindOf(outType)!);
      return { input: t, outType, tl: layout, length, group, shard: '', offset: 0 };
    }
    return { input: t, outType, length: tensorByteSize(outType, t.ne), group, shard: '', offset: 0 };
  });
  const fakeInfos: GGUFTensorInfo[] = planned.map((p) => ({
    name: p.input.name,
    ne: p.input.ne,
    type: p.outType,
    typeName: typeName(p.outType),
    relOffset: 0,
    offset: 0,
    byteLength: p.length,
    nElements: p.input.ne.reduce((a, b) => a * b, 1),
    ...(p.tl ? { layout: p.tl } : {}),
  }));
  // The metadata as the manifest will hold it (f32 values rounded to f32), so hparams agree with it.
  const metadata = metadataFromJson(metadataToJson(input.metadata));
  const fake = { metadata, tensorsByName: new Map(fakeInfos.map((t) => [t.name, t])) } as GGUFFile;
  const hparams = readHParams(metadata, fake.tensorsByName.get('token_embd.weight')?.ne[1]);
  planWeights(fake, hparams);
  const { groups, sizes } = placeGroups(planned, shardSize, align);
  const byName = new Map(planned.map((p) => [p.input.name, p]));
  const order = groups.flatMap((g) => g.tensors.map((n) => byName.get(n)!));
  const totalBytes = order.reduce((a, p) => a + p.length, 0);
  return { layout, head, align, shardSize, hparams, groups, sizes, order, totalBytes };
}

function manifestOf(input: ConvertInput, plan: PackPlan, shards: PackShard[], tensors: PackTensor[]): PackManifest {
  const headType = plan.order.find((p) => p.input.name === 'token_embd.weight')?.outType;
  return {
    format: PACK_FORMAT,
    version: PACK_VERSION,
    name: input.name,
    architecture: plan.hparams.arch,
    hparams: plan.hparams,
    layout: plan.layout,
    head: headType === undefined ? 'none' : typeName(headType),
    alignment: plan.align,
    shardSize: plan.shardSize,
    source: { kind: input.kind, name: input.name },
    metadata: metadataToJson(input.metadata),
    shards,
    groups: plan.groups,
    tensors,
  };
}

function tableEntry(p: Planned, sha256: string): PackTensor {
  return {
    name: p.input.name,
    dtype: typeName(p.outType),
    layout: p.tl ?? (p.outType === GGMLType.I2_S ? 'i2s' : 'ggml'),
    shape: neToShape(p.input.ne),
    shard: p.shard,
    offset: p.offset,
    length: p.length,
    sha256,
    group: p.group,
  };
}

const NO_HASH = '0'.repeat(64);

/**
 * The manifest a conversion would write, with placeholder (all-zero) hashes, computed without
 * reading any tensor: shows the layout, and checks a model against a memory budget from its table.
 */
export function planManifest(input: ConvertInput, opts: ConvertOptions = {}): PackManifest {
  const plan = planPack(input, opts);
  const shards = [...plan.sizes].map(([file, size]) => ({ file, size, sha256: NO_HASH }));
  return manifestOf(
    input,
    plan,
    shards,
    plan.order.map((p) => tableEntry(p, NO_HASH)),
  );
}

/**
 * TQ2_0/TQ1_0 projections repacked to I2_S: the ternary values and the (common) scale are exact,
 * but the pack then runs the I2_S numerics (docs/numerics.md: one integer dot per row, then one
 * division and one scale) instead of TQ's (each 256-block's dot times its f16 scale, summed in f32),
 * so its logits differ from the source file's by float rounding, amplified layer by layer.
 */
function conversionNotes(plan: PackPlan): string[] {
  const repacked = new Set<string>();
  for (const p of plan.order) {
    const t = p.input.type;
    if (!p.tl && p.outType === GGMLType.I2_S && (t === GGMLType.TQ2_0 || t === GGMLType.TQ1_0))
      repacked.add(typeName(t));
  }
  return [...repacked].map(
    (t) =>
      `${t} projections were repacked to I2_S: the weights are exact, but the pack computes with I2_S numerics, so its logits differ slightly from the ${t} file's (--layout tl1|tl2 keeps ${t}'s numerics)`,
  );
}

export async function convertToPack(
  input: ConvertInput,
  sink: PackSink,
  opts: ConvertOptions = {},
): Promise<ConvertResult> {
  // 1. Plan: output types and sizes, the model check, placement. No tensor byte read yet.
  const plan = planPack(input, opts);
  const { sizes, order, totalBytes } = plan;

  const notes = conversionNotes(plan);

  try {
    // 2. Write shards in order, hashing each tensor.
    const tensors: PackTensor[] = [];
    const shards: PackShard[] = [];
    let done = 0;
    let writer: ShardWriter | undefined;
    let current = '';
    let pos = 0;
    const finish = async () => {
      if (!writer) return;
      const r = await writer.close();
      if (r.size !== sizes.get(current)) {
        throw BitNetError.Io(
          'CONVERT_WRITE_FAILED',
          `shard ${current}: wrote ${r.size} bytes, planned ${sizes.get(current)}`,
          {},
        );
      }
      shards.push({ file: current, size: r.size, sha256: r.sha256 });
      writer = undefined;
    };
    for (const p of order) {
      throwIfAborted(opts.signal);
      if (p.shard !== current) {
        await finish();
        current = p.shard;
        writer = await sink.openShard(current);
        pos = 0;
      }
      const bytes = await convertTensor(p.input, p.outType, p.tl, opts);
      if (bytes.byteLength !== p.length) {
        throw BitNetError.Model(
          'CONVERT_SIZE_MISMATCH',
          `${p.input.name}: ${bytes.byteLength} bytes, expected ${p.length}`,
          {
            tensor: p.input.name,
          },
        );
      }
      if (p.offset > pos) await writer!.write(new Uint8Array(p.offset - pos));
      await writer!.write(bytes);
      pos = p.offset + p.length;
      tensors.push(tableEntry(p, await sha256Hex(bytes)));
      done += p.length;
      opts.onProgress?.({ doneBytes: done, totalBytes, tensor: p.input.name });
    }
    await finish();

    const manifest = manifestOf(input, plan, shards, tensors);
    validateManifest(JSON.parse(JSON.stringify(manifest)));
    await sink.writeText(MANIFEST_NAME, `${JSON.stringify(manifest)}\n`);
    await sink.finish?.(manifest);
    return { manifest, totalBytes, notes };
  } catch (e) {
    // the sink drops what was written (a directory keeps its earlier pack); the error is the news
    await sink.abort?.().catch(() => {});
    throw e;
  }
}

/** A sink that keeps the pack in memory (tests; uploads to R2 or S3 from memory). */
export class MemoryPackSink implements PackSink {
  readonly files = new Map<string, Uint8Array>();

  async openShard(file: string): Promise<ShardWriter> {
    const chunks: Uint8Array[] = [];
    return {
      write: async (b) => {
        chunks.push(b.slice());
      },
      close: async () => {
        const size = chunks.reduce((a, c) => a + c.byteLength, 0);
        const out = new Uint8Array(size);
        let o = 0;
        for (const c of chunks) {
          out.set(c, o);
          o += c.byteLength;
        }
        this.files.set(file, out);
        return { size, sha256: await sha256Hex(out) };
      },
    };
  }

  async writeText(name: string, text: string): Promise<void> {
    this.files.set(name, new TextEncoder().encode(text));
  }
}
