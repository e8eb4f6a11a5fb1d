/**
 * The shard-pack format (docs/shard-pack.md): a `manifest.json` next to a few shard files.
 *
 * The manifest carries the format version, the hyper-parameters, the GGUF-style metadata (general,
 * architecture and tokenizer keys, with their GGUF value types), and a tensor table: dtype, layout,
 * shape, shard file, offset, length and sha256 of every tensor. Tensors are grouped by layer
 * (`token_embd`, `output`, `blk.0` … `blk.N-1`, then `extra`); a group's tensors are contiguous in
 * one shard, each at an offset that is a multiple of `alignment`, so a runtime can fetch a layer
 * with one range request. This file holds the types and the validation; it reads no bytes.
 */
import { BitNetError } from '../errors.ts';
import { GGMLType, tensorByteSize, typeFromName, typeName } from '../gguf/ggml-types.ts';
import type { GGUFEntry, GGUFMetadata, GGUFValue } from '../gguf/metadata.ts';
import { GGUFValueType } from '../gguf/metadata.ts';
import type { HParams } from '../model/hparams.ts';
import { tlImageBytes, tlKindOf } from '../quant/tl.ts';
import { checkRelativeName } from '../sources/open.ts';

export const PACK_FORMAT = 'bitnet-shard-pack';
export const PACK_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';
export const DEFAULT_ALIGNMENT = 64;
export const DEFAULT_SHARD_SIZE = 64 * 1024 * 1024;

/**
 * How a tensor's bytes are arranged. `ggml`: exactly the GGML type's storage (as in a GGUF);
 * `i2s`: I2_S as in a GGUF; `tl1`/`tl2`: a TL tile image of the dtype's ternary tensor
 * (src/quant/tl.ts; the wasm lookup-table kernels' own layout).
 */
export type TensorLayout = 'i2s' | 'tl1' | 'tl2' | 'ggml';
/** Layouts this runtime reads (a tensor or manifest with another is PACK_UNSUPPORTED_LAYOUT). */
export const READABLE_LAYOUTS: readonly TensorLayout[] = ['i2s', 'tl1', 'tl2', 'ggml'];
/** The manifest's top-level `layout`: the projections' layout. */
export const PACK_LAYOUTS: readonly TensorLayout[] = ['i2s', 'tl1', 'tl2'];
export type HeadType = 'keep' | 'f16' | 'q8_0' | 'q6_k' | 'int4';

export interface PackTensor {
  name: string;
  /** GGML type name (I2_S, F16, F32, Q8_0, Q6_K, …). */
  dtype: string;
  layout: TensorLayout;
  /** Outermost dimension first (numpy / safetensors order): a [out, in] weight is [out, in]. */
  shape: number[];
  shard: string;
  offset: number;
  length: number;
  /** Lower-case hex SHA-256 of the tensor's `length` bytes. */
  sha256: string;
  group: string;
}

export interface PackGroup {
  name: string;
  shard: string;
  offset: number;
  length: number;
  tensors: string[];
}

export interface PackShard {
  file: string;
  size: number;
  sha256: string;
}

/** A metadata value in JSON: GGUF value type name + value (u64/i64 as decimal strings). */
export interface JsonEntry {
  type: string;
  /** For arrays: the element type. */
  of?: string;
  value: unknown;
}

export interface PackManifest {
  format: typeof PACK_FORMAT;
  version: number;
  name: string;
  architecture: string;
  hparams: HParams;
  layout: TensorLayout;
  head: string;
  alignment: number;
  shardSize: number;
  /** What the pack was converted from. */
  source: { kind: 'gguf' | 'hf-packed' | 'hf-bf16'; name: string };
  metadata: Record<string, JsonEntry>;
  shards: PackShard[];
  groups: PackGroup[];
  tensors: PackTensor[];
}

const TYPE_NAMES: Record<number, string> = {
  [GGUFValueType.UINT8]: 'u8',
  [GGUFValueType.INT8]: 'i8',
  [GGUFValueType.UINT16]: 'u16',
  [GGUFValueType.INT16]: 'i16',
  [GGUFValueType.UINT32]: 'u32',
  [GGUFValueType.INT32]: 'i32',
  [GGUFValueType.FLOAT32]: 'f32',
  [GGUFValueType.BOOL]: 'bool',
  [GGUFValueType.STRING]: 'str',
  [GGUFValueType.ARRAY]: 'array',
  [GGUFValueType.UINT64]: 'u64',
  [GGUFValueType.INT64]: 'i64',
  [GGUFValueType.FLOAT64]: 'f64',
};
const TYPE_IDS: Record<string, GGUFValueType> = Object.fromEntries(
  Object.entries(TYPE_NAMES).map(([id, n]) => [n, Number(id) as GGUFValueType]),
);

function bad(message: string, details: Record<string, unknown> = {}): BitNetError {
  return BitNetError.Model('PACK_BAD_MANIFEST', message, details);
}

function scalarToJson(v: GGUFValue | boolean | number | bigint | string, type?: GGUFValueType): unknown {
  if (typeof v === 'bigint') return v.toString();
  // An f32 entry holds the f32 value (metadata built in JS may carry a double such as 1e-5).
  return type === GGUFValueType.FLOAT32 && typeof v === 'number' ? Math.fround(v) : v;
}

/** GGUF metadata → the manifest's JSON form (exact: f32 values print as their shortest double). */
export function metadataToJson(meta: GGUFMetadata): Record<string, JsonEntry> {
  const out: Record<string, JsonEntry> = {};
  for (const [k, e] of meta) {
    if (e.type === GGUFValueType.ARRAY) {
      const arr = e.value as ArrayLike<unknown>;
      out[k] = {
        type: 'array',
        of: TYPE_NAMES[e.arrayType ?? GGUFValueType.STRING],
        value: Array.from(arr, (x) => scalarToJson(x as GGUFValue, e.arrayType)),
      };
    } else {
      out[k] = { type: TYPE_NAMES[e.type], value: scalarToJson(e.value, e.type) };
    }
  }
  return out;
}

function scalarFromJson(type: GGUFValueType, v: unknown, key: string): number | bigint | boolean | string {
  switch (type) {
    case GGUFValueType.STRING:
      if (typeof v !== 'string') throw bad(`metadata ${key}: expected a string`, { key });
      return v;
    case GGUFValueType.BOOL:
      if (typeof v !== 'boolean') throw bad(`metadata ${key}: expected a bool`, { key });
      return v;
    case GGUFValueType.UINT64:
    case GGUFValueType.INT64:
      if (typeof v !== 'string' && typeof v !== 'number') throw bad(`metadata ${key}: expected an integer`, { key });
      return BigInt(v);
    case GGUFValueType.FLOAT32:
      if (typeof v !== 'number') throw bad(`metadata ${key}: expected a number`, { key });
      return Math.fround(v);
    default:
      if (typeof v !== 'number') throw bad(`metadata ${key}: expected a number`, { key });
      return v;
  }
}

function typedArray(of: GGUFValueType, values: unknown[], key: string): GGUFValue {
  const nums = () => values.map((v) => scalarFromJson(of, v, key) as number);
  switch (of) {
    case GGUFValueType.UINT8:
      return Uint8Array.from(nums());
    case GGUFValueType.INT8:
      return Int8Array.from(nums());
    case GGUFValueType.UINT16:
      return Uint16Array.from(nums());
    case GGUFValueType.INT16:
      return Int16Array.from(nums());
    case GGUFValueType.UINT32:
      return Uint32Array.from(nums());
    case GGUFValueType.INT32:
      return Int32Array.from(nums());
    case GGUFValueType.FLOAT32:
      return Float32Array.from(nums());
    case GGUFValueType.FLOAT64:
      return Float64Array.from(nums());
    case GGUFValueType.UINT64:
      return BigUint64Array.from(values.map((v) => scalarFromJson(of, v, key) as bigint));
    case GGUFValueType.INT64:
      return BigInt64Array.from(values.map((v) => scalarFromJson(of, v, key) as bigint));
    case GGUFValueType.BOOL:
      return values.map((v) => scalarFromJson(of, v, key) as boolean);
    case GGUFValueType.STRING:
      return values.map((v) => scalarFromJson(of, v, key) as string);
    default:
      throw bad(`metadata ${key}: bad array element type`, { key });
  }
}

/** The manifest's JSON metadata → GGUF metadata, as the GGUF reader would hand it out. */
export function metadataFromJson(json: Record<string, JsonEntry>): GGUFMetadata {
  const meta: GGUFMetadata = new Map();
  if (typeof json !== 'object' || json === null) throw bad('metadata must be an object');
  for (const [key, e] of Object.entries(json)) {
    const type = TYPE_IDS[e?.type];
    if (type === undefined) throw bad(`metadata ${key}: unknown type ${String(e?.type)}`, { key });
    if (type === GGUFValueType.ARRAY) {
      const of = TYPE_IDS[e.of ?? ''];
      if (of === undefined || of === GGUFValueType.ARRAY || !Array.isArray(e.value))
        throw bad(`metadata ${key}: bad array`, { key });
      const entry: GGUFEntry = { type, arrayType: of, value: typedArray(of, e.value, key) };
      meta.set(key, entry);
    } else {
      meta.set(key, { type, value: scalarFromJson(type, e.value, key) as GGUFValue });
    }
  }
  return meta;
}

/** PyTorch-order shape → ggml `ne` (innermost first). */
export function shapeToNe(shape: readonly number[]): number[] {
  return [...shape].reverse();
}

export function neToShape(ne: readonly number[]): number[] {
  return [...ne].reverse();
}

function unsupportedLayout(layout: unknown, tensor?: string): BitNetError {
  const what = tensor === undefined ? 'the pack' : `tensor ${tensor}`;
  return BitNetError.Model(
    'PACK_UNSUPPORTED_LAYOUT',
    `${what} has layout ${String(layout)}, which this runtime cannot read`,
    {
      ...(tensor === undefined ? {} : { tensor }),
      layout,
      readable: READABLE_LAYOUTS,
    },
  );
}

const HEX64 = /^[0-9a-f]{64}$/;
const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Checks a parsed manifest before anything else is read: format and version, every tensor inside
 * its shard, aligned, of the length its dtype and shape need, no overlaps, groups consistent.
 */
export function validateManifest(m: unknown): PackManifest {
  const x = m as Partial<PackManifest>;
  if (typeof x !== 'object' || x === null || x.format !== PACK_FORMAT) {
    throw BitNetError.Model('PACK_BAD_FORMAT', `not a ${PACK_FORMAT} manifest`, {
      format: (x as { format?: unknown })?.format,
    });
  }
  if (x.version !== PACK_VERSION) {
    throw BitNetError.Model(
      'PACK_UNSUPPORTED_VERSION',
      `shard-pack version ${x.version} is not supported (${PACK_VERSION})`,
      {
        version: x.version,
      },
    );
  }
  const align = x.alignment;
  if (!isUint(align) || align === 0 || (align & (align - 1)) !== 0)
    throw bad(`alignment must be a power of two, got ${align}`);
  if (!Array.isArray(x.shards) || !Array.isArray(x.tensors) || !Array.isArray(x.groups))
    throw bad('shards, groups and tensors must be arrays');
  if (typeof x.metadata !== 'object' || x.metadata === null) throw bad('metadata is missing');
  if (!(PACK_LAYOUTS as readonly unknown[]).includes(x.layout)) throw unsupportedLayout(x.layout);
  const shards = new Map<string, PackShard>();
  for (const s of x.shards) {
    checkRelativeName(String(s?.file));
    if (!isUint(s.size) || typeof s.sha256 !== 'string' || !HEX64.test(s.sha256))
      throw bad(`bad shard entry ${s.file}`, { shard: s.file });
    if (shards.has(s.file)) throw bad(`shard ${s.file} is listed twice`, { shard: s.file });
    shards.set(s.file, s);
  }
  const names = new Set<string>();
  const byShard = new Map<string, PackTensor[]>();
  for (const t of x.tensors) {
    const where = { tensor: t?.name };
    if (typeof t?.name !== 'string' || names.has(t.name)) throw bad(`bad or repeated tensor name ${t?.name}`, where);
    names.add(t.name);
    if (!(READABLE_LAYOUTS as readonly unknown[]).includes(t.layout)) throw unsupportedLayout(t.layout, t.name);
    const type = typeFromName(String(t.dtype));
    if (type === undefined) throw bad(`tensor ${t.name}: unknown dtype ${t.dtype}`, where);
    if (
      !Array.isArray(t.shape) ||
      t.shape.length < 1 ||
      t.shape.length > 4 ||
      !t.shape.every((d) => isUint(d) && d > 0)
    )
      throw bad(`tensor ${t.name}: bad shape`, where);
    const shard = shards.get(t.shard);
    if (!shard) throw bad(`tensor ${t.name}: unknown shard ${t.shard}`, where);
    if (!isUint(t.offset) || !isUint(t.length) || t.offset % align !== 0)
      throw bad(`tensor ${t.name}: offset ${t.offset} is not a multiple of ${align}`, where);
    if (t.offset + t.length > shard.size) throw bad(`tensor ${t.name} ends past the end of ${t.shard}`, where);
    if (t.layout === 'i2s' || t.layout === 'ggml') {
      const want = tensorByteSize(type, shapeToNe(t.shape));
      if (want !== t.length)
        throw bad(`tensor ${t.name}: ${t.length} bytes, ${typeName(type)} [${t.shape}] needs ${want}`, where);
    } else {
      // a TL image: a 2-D ternary tensor [N, K] of the pack's layout, exactly its image's length
      const kind = tlKindOf(type);
      if (kind === undefined || t.shape.length !== 2)
        throw bad(`tensor ${t.name}: layout ${t.layout} needs a 2-D I2_S, TQ2_0 or TQ1_0 tensor`, where);
      if (t.layout !== x.layout) throw bad(`tensor ${t.name} has layout ${t.layout}, the pack's is ${x.layout}`, where);
      const [n, k] = t.shape;
      if (k % (type === GGMLType.I2_S ? 128 : 256) !== 0)
        throw bad(`tensor ${t.name}: ${typeName(type)} needs K % ${type === GGMLType.I2_S ? 128 : 256} == 0`, where);
      const want = tlImageBytes(t.layout, n, k, kind);
      if (want !== t.length)
        throw bad(
          `tensor ${t.name}: ${t.length} bytes, a ${t.layout} image of ${typeName(type)} [${t.shape}] is ${want}`,
          where,
        );
    }
    if (typeof t.sha256 !== 'string' || !HEX64.test(t.sha256)) throw bad(`tensor ${t.name}: bad sha256`, where);
    if (!byShard.has(t.shard)) byShard.set(t.shard, []);
    byShard.get(t.shard)!.push(t);
  }
  for (const [shard, ts] of byShard) {
    ts.sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < ts.length; i++) {
      if (ts[i].offset < ts[i - 1].offset + ts[i - 1].length)
        throw bad(`tensors ${ts[i - 1].name} and ${ts[i].name} overlap in ${shard}`, { shard });
    }
  }
  const byName = new Map(x.tensors.map((t) => [t.name, t]));
  const grouped = new Set<string>();
  const groupNames = new Set<string>();
  for (const g of x.groups) {
    if (!shards.has(g?.shard) || !isUint(g.offset) || !isUint(g.length) || !Array.isArray(g.tensors))
      throw bad(`bad group ${g?.name}`, { group: g?.name });
    // groups are looked up by name (the reader's map): a repeated name would hide one of them
    if (typeof g.name !== 'string' || groupNames.has(g.name))
      throw bad(`bad or repeated group name ${g.name}`, { group: g.name });
    groupNames.add(g.name);
    for (const n of g.tensors) {
      const t = byName.get(n);
      if (
        !t ||
        t.group !== g.name ||
        t.shard !== g.shard ||
        t.offset < g.offset ||
        t.offset + t.length > g.offset + g.length
      )
        throw bad(`group ${g.name}: tensor ${n} is not inside it`, { group: g.name, tensor: n });
      grouped.add(n);
    }
  }
  for (const n of names) if (!grouped.has(n)) throw bad(`tensor ${n} belongs to no group`, { tensor: n });
  return x as PackManifest;
}
