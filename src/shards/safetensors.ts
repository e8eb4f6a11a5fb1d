/**
 * safetensors reader over a ByteSource: `u64 N` (little-endian), N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {…}}`, then the data; offsets
 * are relative to the end of the header. Only the header is read here; tensors are read one at a
 * time by range. Every offset and length is checked against the file before anything is allocated.
 */
import { BitNetError } from '../errors.ts';
import type { ByteSource, ReadOptions } from '../sources/byte-source.ts';

export const SAFETENSORS_DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** Largest header accepted (the format's own limit is 100 MB). */
const MAX_HEADER = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute file offset of the first byte. */
  offset: number;
  length: number;
}

export interface SafetensorsFile {
  source: ByteSource;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

function bad(src: ByteSource, message: string, details: Record<string, unknown> = {}): BitNetError {
  return BitNetError.Model('SAFETENSORS_INVALID', `${src.description}: ${message}`, details);
}

export async function readSafetensors(source: ByteSource, opts?: ReadOptions): Promise<SafetensorsFile> {
  if (source.size < 8) throw bad(source, 'too short for a safetensors header');
  const nb = await source.read(0, 8, opts);
  const n = new DataView(nb.buffer, nb.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(Math.min(MAX_HEADER, source.size - 8)))
    throw bad(source, `header length ${n} is impossible`, { headerLength: n.toString() });
  const headerLen = Number(n);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await source.read(8, headerLen, opts)));
  } catch (e) {
    throw bad(source, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(source, 'header is not an object');
  const dataStart = 8 + headerLen;
  const dataLen = source.size - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const size = SAFETENSORS_DTYPE_BYTES[String(e?.dtype)];
    if (size === undefined) throw bad(source, `tensor ${name}: unknown dtype ${String(e?.dtype)}`, { tensor: name });
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(source, `tensor ${name}: bad shape`, { tensor: name });
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(source, `tensor ${name}: bad data_offsets`, { tensor: name });
    const [b, end] = offs as number[];
    const count = (shape as number[]).reduce((a, d) => a * d, 1);
    if (b > end || end > dataLen || end - b !== count * size) {
      throw bad(source, `tensor ${name}: data_offsets [${b}, ${end}] do not fit its shape or the file`, {
        tensor: name,
        begin: b,
        end,
        dataLength: dataLen,
      });
    }
    entries.set(name, {
      name,
      dtype: String(e.dtype),
      shape: shape as number[],
      offset: dataStart + b,
      length: end - b,
    });
  }
  return { source, entries, metadata };
}

export function readSafetensorsTensor(
  f: SafetensorsFile,
  e: SafetensorsEntry,
  opts?: ReadOptions,
): Promise<Uint8Array> {
  return f.source.read(e.offset, e.length, opts);
}

/** Writes a safetensors file in memory (tests and tools). Tensors are stored in the given order. */
export function encodeSafetensors(
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let pos = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + t.data.byteLength] };
    pos += t.data.byteLength;
  }
  let text = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  while ((8 + new TextEncoder().encode(text).byteLength) % 8) text += ' ';
  const h = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + h.byteLength + pos);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.byteLength), true);
  out.set(h, 8);
  let o = 8 + h.byteLength;
  for (const t of tensors) {
    out.set(t.data, o);
    o += t.data.byteLength;
  }
  return out;
}
