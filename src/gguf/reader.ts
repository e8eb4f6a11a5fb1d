/**
 * GGUF v3 reader over a ByteSource. Reads the header, the metadata and the tensor table, and
 * nothing else: weights are read later, tensor by tensor, by whoever needs them.
 *
 * Layout (docs/bitnet-formats.md §1): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * n_kv × (string key, u32 type, value), n_tensors × (string name, u32 n_dims, u64 ne[n_dims],
 * u32 type, u64 offset), padding to `general.alignment` (default 32), then the data section.
 *
 * Every count and length is checked against the bytes left in the file BEFORE anything is
 * allocated, so a corrupt or hostile header gives a typed error, never a huge allocation or a hang.
 */
import { BitNetError } from '../errors.ts';
import type { ByteSource, ReadOptions } from '../sources/byte-source.ts';
import { isKnownType, tensorByteSize, typeName } from './ggml-types.ts';
import { type GGUFEntry, type GGUFMetadata, type GGUFValue, GGUFValueType } from './metadata.ts';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_DEFAULT_ALIGNMENT = 32;
const MAX_DIMS = 4;
/**
 * Header counts beyond these are taken for corruption, not a cut file (a real GGUF has a few dozen
 * metadata keys, the tokenizer's arrays being single entries, and at most tens of thousands of tensors).
 */
const MAX_PLAUSIBLE_KV = 1 << 16;
const MAX_PLAUSIBLE_TENSORS = 1 << 20;
/** Likewise for a metadata array (the largest real ones: vocabularies and merges, a few 10^5 entries). */
const MAX_PLAUSIBLE_ARRAY = 1 << 26;
const CHUNK = 1 << 20;

export interface GGUFTensorInfo {
  name: string;
  /** ne[0] is innermost: a PyTorch [out, in] weight has ne = [in, out]. */
  ne: number[];
  type: number;
  typeName: string;
  /** Offset relative to the data section, as stored. */
  relOffset: number;
  /** Absolute file offset of the first byte. */
  offset: number;
  byteLength: number;
  nElements: number;
  /**
   * Shard packs only: the bytes are a TL1/TL2 tile image (src/quant/tl.ts) of a `type` tensor,
   * `byteLength` long, not `type`'s storage. Absent for GGUF tensors.
   */
  layout?: 'tl1' | 'tl2';
}

export interface GGUFFile {
  version: number;
  metadata: GGUFMetadata;
  tensors: GGUFTensorInfo[];
  tensorsByName: Map<string, GGUFTensorInfo>;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  source: ByteSource;
}

function corrupt(code: string, message: string, details: Record<string, unknown> = {}): BitNetError {
  return BitNetError.Model(code, message, details);
}

/** Sequential reader with a 1 MiB read-ahead window over the source. */
class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private view = new DataView(this.buf.buffer);
  private bufStart = 0;
  private readonly src: ByteSource;
  private readonly opts: ReadOptions | undefined;
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  constructor(src: ByteSource, opts?: ReadOptions) {
    this.src = src;
    this.opts = opts;
  }

  get remaining(): number {
    return this.src.size - this.pos;
  }

  /** Makes bytes [pos, pos+n) available in the window, reading ahead. */
  private async ensure(n: number, what: string): Promise<number> {
    if (n > this.remaining) {
      throw corrupt('GGUF_TRUNCATED', `file ends inside ${what} at offset ${this.pos} (needs ${n} bytes)`, {
        offset: this.pos,
        needed: n,
        size: this.src.size,
      });
    }
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel + n <= this.buf.byteLength) return rel;
    const len = Math.min(Math.max(n, CHUNK), this.remaining);
    const bytes = await this.src.read(this.pos, len, this.opts);
    // Copy so the window owns its memory (a source may hand out views of a larger buffer).
    this.buf = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.bufStart = this.pos;
    return 0;
  }

  async u8(what: string): Promise<number> {
    const r = await this.ensure(1, what);
    this.pos += 1;
    return this.view.getUint8(r);
  }
  async u32(what: string): Promise<number> {
    const r = await this.ensure(4, what);
    this.pos += 4;
    return this.view.getUint32(r, true);
  }
  async u64(what: string): Promise<bigint> {
    const r = await this.ensure(8, what);
    this.pos += 8;
    return this.view.getBigUint64(r, true);
  }
  /** A u64 that must fit a JS safe integer (counts, lengths, offsets). */
  async size64(what: string): Promise<number> {
    const v = await this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw corrupt('GGUF_ABSURD_VALUE', `${what} is absurdly large (${v})`, { what, value: v.toString() });
    }
    return Number(v);
  }

  async string(what: string): Promise<string> {
    const len = await this.size64(`${what} length`);
    if (len > this.remaining) {
      throw corrupt('GGUF_TRUNCATED', `${what}: string of ${len} bytes runs past the end of the file`, {
        offset: this.pos,
        length: len,
        size: this.src.size,
      });
    }
    const r = await this.ensure(len, what);
    this.pos += len;
    return this.decoder.decode(this.buf.subarray(r, r + len));
  }

  /** Raw little-endian bytes of a numeric array, copied into a fresh aligned buffer. */
  async bytes(n: number, what: string): Promise<Uint8Array> {
    if (n <= CHUNK) {
      const r = await this.ensure(n, what);
      this.pos += n;
      return this.buf.slice(r, r + n);
    }
    if (n > this.remaining) await this.ensure(n, what); // throws GGUF_TRUNCATED
    const out = await this.src.read(this.pos, n, this.opts);
    this.pos += n;
    return out.slice();
  }

  async scalar(type: number, what: string): Promise<number | bigint | boolean> {
    const r0 = this.pos;
    switch (type) {
      case GGUFValueType.UINT8:
        return this.u8(what);
      case GGUFValueType.INT8: {
        const r = await this.ensure(1, what);
        this.pos = r0 + 1;
        return this.view.getInt8(r);
      }
      case GGUFValueType.UINT16: {
        const r = await this.ensure(2, what);
        this.pos = r0 + 2;
        return this.view.getUint16(r, true);
      }
      case GGUFValueType.INT16: {
        const r = await this.ensure(2, what);
        this.pos = r0 + 2;
        return this.view.getInt16(r, true);
      }
      case GGUFValueType.UINT32:
        return this.u32(what);
      case GGUFValueType.INT32: {
        const r = await this.ensure(4, what);
        this.pos = r0 + 4;
        return this.view.getInt32(r, true);
      }
      case GGUFValueType.FLOAT32: {
        const r = await this.ensure(4, what);
        this.pos = r0 + 4;
        return this.view.getFloat32(r, true);
      }
      case GGUFValueType.BOOL: {
        const v = await this.u8(what);
        if (v > 1) throw corrupt('GGUF_BAD_VALUE', `${what}: bool byte is ${v}`, { offset: r0 });
        return v === 1;
      }
      case GGUFValueType.UINT64:
        return this.u64(what);
      case GGUFValueType.INT64: {
        const r = await this.ensure(8, what);
        this.pos = r0 + 8;
        return this.view.getBigInt64(r, true);
      }
      case GGUFValueType.FLOAT64: {
        const r = await this.ensure(8, what);
        this.pos = r0 + 8;
        return this.view.getFloat64(r, true);
      }
      default:
        throw corrupt('GGUF_BAD_VALUE_TYPE', `${what}: unknown value type ${type}`, { type, offset: r0 });
    }
  }
}

const ELEMENT_BYTES: Record<number, number> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

function typedArrayOf(type: number, raw: Uint8Array, count: number): GGUFValue {
  const b = raw.buffer as ArrayBuffer;
  switch (type) {
    case GGUFValueType.UINT8:
      return new Uint8Array(b, 0, count);
    case GGUFValueType.INT8:
      return new Int8Array(b, 0, count);
    case GGUFValueType.UINT16:
      return new Uint16Array(b, 0, count);
    case GGUFValueType.INT16:
      return new Int16Array(b, 0, count);
    case GGUFValueType.UINT32:
      return new Uint32Array(b, 0, count);
    case GGUFValueType.INT32:
      return new Int32Array(b, 0, count);
    case GGUFValueType.FLOAT32:
      return new Float32Array(b, 0, count);
    case GGUFValueType.UINT64:
      return new BigUint64Array(b, 0, count);
    case GGUFValueType.INT64:
      return new BigInt64Array(b, 0, count);
    case GGUFValueType.FLOAT64:
      return new Float64Array(b, 0, count);
    case GGUFValueType.BOOL:
      return Array.from(new Uint8Array(b, 0, count), (v) => v !== 0);
    default:
      throw corrupt('GGUF_BAD_VALUE_TYPE', `unknown array element type ${type}`, { type });
  }
}

/**
 * An array longer than the bytes left: a plausible length (a vocabulary, its merges) in a file that
 * ends early is a cut file; a length no real model has is a corrupt header.
 */
function arrayTooLong(c: Cursor, key: string, count: number, what: string): BitNetError {
  const details = { key, count, offset: c.pos, size: c.pos + c.remaining };
  return count <= MAX_PLAUSIBLE_ARRAY
    ? corrupt(
        'GGUF_TRUNCATED',
        `file is truncated: ${key} holds ${count} ${what}, which cannot fit in the ${c.remaining} bytes left`,
        details,
      )
    : corrupt('GGUF_ABSURD_COUNT', `${key}: ${count} ${what} cannot fit in the ${c.remaining} bytes left`, details);
}

async function readValue(c: Cursor, type: number, key: string): Promise<GGUFEntry> {
  if (type === GGUFValueType.STRING) return { type, value: await c.string(`value of ${key}`) };
  if (type !== GGUFValueType.ARRAY)
    return { type: type as GGUFValueType, value: (await c.scalar(type, `value of ${key}`)) as GGUFValue };

  const elemType = await c.u32(`array type of ${key}`);
  const count = await c.size64(`array length of ${key}`);
  if (elemType === GGUFValueType.ARRAY) {
    throw corrupt('GGUF_NESTED_ARRAY', `${key}: nested arrays are not supported`, { key });
  }
  if (elemType === GGUFValueType.STRING) {
    // Each string needs at least its 8-byte length: reject impossible counts before allocating.
    if (count * 8 > c.remaining) throw arrayTooLong(c, key, count, 'strings');
    const out: string[] = new Array(count);
    for (let i = 0; i < count; i++) out[i] = await c.string(`${key}[${i}]`);
    return { type, arrayType: elemType, value: out };
  }
  const eb = ELEMENT_BYTES[elemType];
  if (eb === undefined) {
    throw corrupt('GGUF_BAD_VALUE_TYPE', `${key}: unknown array element type ${elemType}`, { key, type: elemType });
  }
  if (count * eb > c.remaining) throw arrayTooLong(c, key, count, 'elements');
  const raw = await c.bytes(count * eb, key);
  return { type, arrayType: elemType as GGUFValueType, value: typedArrayOf(elemType, raw, count) };
}

export async function readGGUF(source: ByteSource, opts?: ReadOptions): Promise<GGUFFile> {
  const c = new Cursor(source, opts);
  const magic = await c.u32('magic');
  if (magic !== GGUF_MAGIC) {
    throw corrupt('GGUF_BAD_MAGIC', `${source.description} is not a GGUF file (magic 0x${magic.toString(16)})`, {
      magic,
    });
  }
  const version = await c.u32('version');
  if (version !== 3 && version !== 2) {
    throw corrupt('GGUF_UNSUPPORTED_VERSION', `GGUF version ${version} is not supported (2 or 3)`, { version });
  }
  const nTensors = await c.size64('tensor count');
  const nKv = await c.size64('metadata count');
  // Minimal record sizes: a KV is at least 8 (key len) + 4 (type) + 1 bytes; a tensor-info 8+4+8+4+8.
  const minBytes = nKv * 13 + nTensors * 32;
  if (minBytes > c.remaining) {
    // Counts no real model comes near are a corrupt header; plausible ones in a file too short to
    // hold them mean the file was cut (a partial download), and the error should say that.
    const plausible = nKv <= MAX_PLAUSIBLE_KV && nTensors <= MAX_PLAUSIBLE_TENSORS;
    throw plausible
      ? corrupt(
          'GGUF_TRUNCATED',
          `file is truncated: it ends at ${source.size} bytes, but its header's ${nKv} metadata entries and ${nTensors} tensors need at least ${c.pos + minBytes}`,
          // needed: the least file size that holds them (as the message says); records: their bytes alone
          { nKv, nTensors, size: source.size, offset: c.pos, needed: c.pos + minBytes, records: minBytes },
        )
      : corrupt('GGUF_ABSURD_COUNT', `header claims ${nKv} metadata entries and ${nTensors} tensors`, {
          nKv,
          nTensors,
          size: source.size,
        });
  }

  const metadata: GGUFMetadata = new Map();
  for (let i = 0; i < nKv; i++) {
    const key = await c.string(`metadata key #${i}`);
    const type = await c.u32(`type of ${key}`);
    if (metadata.has(key)) throw corrupt('GGUF_DUPLICATE_KEY', `metadata key ${key} appears twice`, { key });
    metadata.set(key, await readValue(c, type, key));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al !== undefined) {
    const v = al.value;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || (v & (v - 1)) !== 0 || v > 1 << 20) {
      throw corrupt('GGUF_BAD_ALIGNMENT', `general.alignment must be a power of two, got ${String(v)}`, {
        alignment: String(v),
      });
    }
    alignment = v;
  }

  const infos: Omit<GGUFTensorInfo, 'offset'>[] = [];
  const tensorsByName = new Map<string, GGUFTensorInfo>();
  for (let i = 0; i < nTensors; i++) {
    const name = await c.string(`tensor name #${i}`);
    const nDims = await c.u32(`n_dims of ${name}`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw corrupt('GGUF_BAD_DIMS', `tensor ${name} has ${nDims} dimensions (1..${MAX_DIMS})`, { name, nDims });
    }
    const ne: number[] = [];
    let nElements = 1;
    for (let d = 0; d < nDims; d++) {
      const v = await c.size64(`ne[${d}] of ${name}`);
      if (v === 0) throw corrupt('GGUF_BAD_SHAPE', `tensor ${name} has a zero dimension`, { name });
      nElements *= v;
      if (!Number.isSafeInteger(nElements) || nElements > source.size * 64) {
        throw corrupt('GGUF_ABSURD_VALUE', `tensor ${name} claims ${nElements} elements`, { name });
      }
      ne.push(v);
    }
    const type = await c.u32(`type of ${name}`);
    if (!isKnownType(type)) {
      throw corrupt('GGUF_UNKNOWN_TYPE', `tensor ${name} has unknown ggml type ${type}`, { name, type });
    }
    const relOffset = await c.size64(`offset of ${name}`);
    if (relOffset % alignment !== 0) {
      throw corrupt('GGUF_MISALIGNED', `tensor ${name} offset ${relOffset} is not aligned to ${alignment}`, {
        name,
        relOffset,
      });
    }
    const byteLength = tensorByteSize(type, ne);
    infos.push({ name, ne, type, typeName: typeName(type), relOffset, byteLength, nElements });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors: GGUFTensorInfo[] = infos.map((t) => ({ ...t, offset: dataOffset + t.relOffset }));
  // Every tensor must lie inside the file, and no two may overlap.
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  let end = dataOffset;
  for (const t of byOffset) {
    if (t.offset < end) {
      throw corrupt('GGUF_OVERLAP', `tensor ${t.name} overlaps the previous tensor`, {
        name: t.name,
        offset: t.offset,
      });
    }
    end = t.offset + t.byteLength;
    if (end > source.size) {
      throw corrupt(
        'GGUF_OFFSET_PAST_EOF',
        `tensor ${t.name} ends at ${end}, past the end of the file (${source.size} bytes): the file is truncated or corrupt`,
        {
          name: t.name,
          end,
          size: source.size,
        },
      );
    }
  }
  for (const t of tensors) {
    if (tensorsByName.has(t.name))
      throw corrupt('GGUF_DUPLICATE_TENSOR', `tensor ${t.name} appears twice`, { name: t.name });
    tensorsByName.set(t.name, t);
  }
  return { version, metadata, tensors, tensorsByName, alignment, dataOffset, fileSize: source.size, source };
}

/** Reads one tensor's bytes. */
export async function readTensorBytes(file: GGUFFile, t: GGUFTensorInfo, opts?: ReadOptions): Promise<Uint8Array> {
  return file.source.read(t.offset, t.byteLength, opts);
}

/** Convenience accessors with typed errors. */
export function metaValue(meta: GGUFMetadata, key: string): GGUFValue | undefined {
  return meta.get(key)?.value;
}

export function metaNumber(meta: GGUFMetadata, key: string): number | undefined {
  const v = meta.get(key)?.value;
  if (v === undefined) return undefined;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw BitNetError.Model('GGUF_BAD_VALUE', `${key} is out of range (${v})`, { key });
    }
    return Number(v);
  }
  throw BitNetError.Model('GGUF_BAD_VALUE', `${key} should be a number, found ${typeof v}`, { key });
}

export function metaString(meta: GGUFMetadata, key: string): string | undefined {
  const v = meta.get(key)?.value;
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw BitNetError.Model('GGUF_BAD_VALUE', `${key} should be a string`, { key });
  return v;
}

export function metaBool(meta: GGUFMetadata, key: string): boolean | undefined {
  const v = meta.get(key)?.value;
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw BitNetError.Model('GGUF_BAD_VALUE', `${key} should be a bool`, { key });
  return v;
}
