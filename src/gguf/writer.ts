/**
 * GGUF v3 writer. `planGGUF` lays out the header and tensor offsets; `writeGGUF` streams the file
 * to a sink, asking for each tensor's bytes only when it is written (so a 1.2 GB synthetic model
 * never sits in memory twice). `encodeGGUF` builds a whole file in memory for small models and tests.
 */
import { BitNetError } from '../errors.ts';
import { tensorByteSize } from './ggml-types.ts';
import { type GGUFEntry, type GGUFValue, GGUFValueType } from './metadata.ts';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC } from './reader.ts';

export interface TensorToWrite {
  name: string;
  ne: number[];
  type: number;
  /** The bytes, or a function producing them at write time. */
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

export interface GGUFPlan {
  header: Uint8Array;
  dataOffset: number;
  offsets: number[];
  sizes: number[];
  totalSize: number;
  alignment: number;
}

const enc = new TextEncoder();

class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  len = 0;

  private grow(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.len));
    this.buf = nb;
    this.view = new DataView(nb.buffer);
  }
  u8(v: number): void {
    this.grow(1);
    this.view.setUint8(this.len, v);
    this.len += 1;
  }
  u32(v: number): void {
    this.grow(4);
    this.view.setUint32(this.len, v, true);
    this.len += 4;
  }
  u64(v: number | bigint): void {
    this.grow(8);
    this.view.setBigUint64(this.len, BigInt(v), true);
    this.len += 8;
  }
  raw(b: Uint8Array): void {
    this.grow(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  str(s: string): void {
    const b = enc.encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  scalar(type: number, v: GGUFValue): void {
    this.grow(8);
    const d = this.view;
    const o = this.len;
    switch (type) {
      case GGUFValueType.UINT8:
        d.setUint8(o, Number(v));
        this.len += 1;
        return;
      case GGUFValueType.INT8:
        d.setInt8(o, Number(v));
        this.len += 1;
        return;
      case GGUFValueType.UINT16:
        d.setUint16(o, Number(v), true);
        this.len += 2;
        return;
      case GGUFValueType.INT16:
        d.setInt16(o, Number(v), true);
        this.len += 2;
        return;
      case GGUFValueType.UINT32:
        d.setUint32(o, Number(v), true);
        this.len += 4;
        return;
      case GGUFValueType.INT32:
        d.setInt32(o, Number(v), true);
        this.len += 4;
        return;
      case GGUFValueType.FLOAT32:
        d.setFloat32(o, Number(v), true);
        this.len += 4;
        return;
      case GGUFValueType.BOOL:
        d.setUint8(o, v ? 1 : 0);
        this.len += 1;
        return;
      case GGUFValueType.UINT64:
        d.setBigUint64(o, BigInt(v as number | bigint), true);
        this.len += 8;
        return;
      case GGUFValueType.INT64:
        d.setBigInt64(o, BigInt(v as number | bigint), true);
        this.len += 8;
        return;
      case GGUFValueType.FLOAT64:
        d.setFloat64(o, Number(v), true);
        this.len += 8;
        return;
      case GGUFValueType.STRING:
        this.str(String(v));
        return;
      default:
        throw BitNetError.Config('GGUF_BAD_VALUE_TYPE', `cannot write value type ${type}`, { type });
    }
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function writeEntry(w: ByteWriter, key: string, e: GGUFEntry): void {
  w.str(key);
  w.u32(e.type);
  if (e.type !== GGUFValueType.ARRAY) {
    w.scalar(e.type, e.value);
    return;
  }
  const at = e.arrayType;
  if (at === undefined || at === GGUFValueType.ARRAY) {
    throw BitNetError.Config('GGUF_BAD_VALUE_TYPE', `array entry ${key} needs a scalar element type`, { key });
  }
  const arr = e.value as ArrayLike<unknown>;
  w.u32(at);
  w.u64(arr.length);
  for (let i = 0; i < arr.length; i++) w.scalar(at, arr[i] as GGUFValue);
}

/** Shorthands for building metadata entries. */
export const meta = {
  str: (value: string): GGUFEntry => ({ type: GGUFValueType.STRING, value }),
  u32: (value: number): GGUFEntry => ({ type: GGUFValueType.UINT32, value }),
  i32: (value: number): GGUFEntry => ({ type: GGUFValueType.INT32, value }),
  f32: (value: number): GGUFEntry => ({ type: GGUFValueType.FLOAT32, value }),
  bool: (value: boolean): GGUFEntry => ({ type: GGUFValueType.BOOL, value }),
  strs: (value: string[]): GGUFEntry => ({ type: GGUFValueType.ARRAY, arrayType: GGUFValueType.STRING, value }),
  i32s: (value: Int32Array): GGUFEntry => ({ type: GGUFValueType.ARRAY, arrayType: GGUFValueType.INT32, value }),
  f32s: (value: Float32Array): GGUFEntry => ({ type: GGUFValueType.ARRAY, arrayType: GGUFValueType.FLOAT32, value }),
};

export function planGGUF(
  metadata: Iterable<[string, GGUFEntry]>,
  tensors: readonly Omit<TensorToWrite, 'data'>[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): GGUFPlan {
  const entries = [...metadata];
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(entries.length);
  for (const [k, e] of entries) writeEntry(w, k, e);
  const offsets: number[] = [];
  const sizes: number[] = [];
  let rel = 0;
  for (const t of tensors) {
    const size = tensorByteSize(t.type, t.ne);
    w.str(t.name);
    w.u32(t.ne.length);
    for (const d of t.ne) w.u64(d);
    w.u32(t.type);
    w.u64(rel);
    offsets.push(rel);
    sizes.push(size);
    rel = Math.ceil((rel + size) / alignment) * alignment;
  }
  const headerLen = w.len;
  const dataOffset = Math.ceil(headerLen / alignment) * alignment;
  const header = new Uint8Array(dataOffset);
  header.set(w.bytes());
  const last = tensors.length ? offsets[offsets.length - 1] + sizes[sizes.length - 1] : 0;
  return { header, dataOffset, offsets, sizes, totalSize: dataOffset + last, alignment };
}

/** Streams a GGUF file to `sink`, in order, padding between tensors. Returns the byte count. */
export async function writeGGUF(
  metadata: Iterable<[string, GGUFEntry]>,
  tensors: readonly TensorToWrite[],
  sink: (chunk: Uint8Array) => void | Promise<void>,
  alignment = GGUF_DEFAULT_ALIGNMENT,
): Promise<number> {
  const plan = planGGUF(metadata, tensors, alignment);
  await sink(plan.header);
  let pos = plan.dataOffset;
  for (let i = 0; i < tensors.length; i++) {
    const target = plan.dataOffset + plan.offsets[i];
    if (target > pos) {
      await sink(new Uint8Array(target - pos));
      pos = target;
    }
    const t = tensors[i];
    const data = typeof t.data === 'function' ? await t.data() : t.data;
    if (data.byteLength !== plan.sizes[i]) {
      throw BitNetError.Config(
        'GGUF_TENSOR_SIZE_MISMATCH',
        `tensor ${t.name}: ${data.byteLength} bytes given, ${plan.sizes[i]} expected for its type and shape`,
        { name: t.name, given: data.byteLength, expected: plan.sizes[i] },
      );
    }
    await sink(data);
    pos += data.byteLength;
  }
  return pos;
}

/** Builds a whole GGUF file in memory. */
export async function encodeGGUF(
  metadata: Iterable<[string, GGUFEntry]>,
  tensors: readonly TensorToWrite[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const total = await writeGGUF(metadata, tensors, (c) => void chunks.push(c), alignment);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}
