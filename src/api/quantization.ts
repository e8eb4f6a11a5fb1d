/**
 * The seed's quantization surface: QuantizationType, QuantizationConfig, QuantizedTensor and the
 * Quantize contract, with working quantize/dequantize round trips for every type.
 *
 * Layouts (all row-major over the flattened tensor):
 * - None: f32 values.
 * - I2S: absmean ternarization (s = max(mean|W|, 1e-5); t = clamp(roundHalfEven(W/s), −1, 1)),
 *   packed exactly as a GGUF I2_S tensor (128/32 interleave, f32 scale after the codes).
 * - TL1: pairs of ternary values → index 3·w0 + w1 + 4 (0..8) in a nibble, two pairs per byte
 *   (first pair in the high nibble), then the f32 scale.
 * - TL2: triples → v = 9·w0 + 3·w1 + w2 (−13..13) as a 4-bit magnitude per nibble (first in the
 *   high nibble) plus a sign bit per triple (LSB-first bitmap), then the f32 scale.
 *   (TL1/TL2 here are the index encodings; the wasm kernels' tile layouts build on them.)
 * - Int8: per block of `blockSize`, f32 scale = absmax/127, int8 values.
 * - Int4: per block, f32 scale = absmax/7, values −8..7 two per byte (low nibble first).
 * I2S/TL1/TL2 need the element count to be a multiple of 128 / 2 / 3 respectively.
 */
import { BitNetError } from '../errors.ts';
import { roundHalfEven } from '../model/reference.ts';
import { I2S_BLOCK, packI2S, unpackI2S } from '../quant/i2s.ts';

export const QuantizationType = {
  None: 'None',
  I2S: 'I2S',
  TL1: 'TL1',
  TL2: 'TL2',
  Int8: 'Int8',
  Int4: 'Int4',
} as const;
export type QuantizationType = (typeof QuantizationType)[keyof typeof QuantizationType];

export interface QuantizationConfigInit {
  qtype?: QuantizationType;
  blockSize?: number;
  dynamic?: boolean;
  calibrationSize?: number;
}

export class QuantizationConfig {
  qtype: QuantizationType = QuantizationType.I2S;
  blockSize = 64;
  dynamic = false;
  calibrationSize: number | undefined = undefined;

  constructor(init: QuantizationConfigInit = {}) {
    if (init.qtype !== undefined) this.qtype = init.qtype;
    if (init.blockSize !== undefined) this.blockSize = init.blockSize;
    if (init.dynamic !== undefined) this.dynamic = init.dynamic;
    if (init.calibrationSize !== undefined) this.calibrationSize = init.calibrationSize;
  }

  validate(): this {
    if (!Object.values(QuantizationType).includes(this.qtype)) {
      throw BitNetError.Config('INVALID_QUANTIZATION_CONFIG', `unknown quantization type ${String(this.qtype)}`);
    }
    if (!Number.isInteger(this.blockSize) || this.blockSize < 1 || this.blockSize > 1 << 16) {
      throw BitNetError.Config(
        'INVALID_QUANTIZATION_CONFIG',
        `blockSize must be an integer in 1..65536, got ${this.blockSize}`,
      );
    }
    return this;
  }
}

export interface QuantizedTensor {
  qtype: QuantizationType;
  shape: number[];
  /** Packed bytes in the layout above. */
  data: Uint8Array;
  /** Int8/Int4 block size. */
  blockSize: number;
}

/** The Quantize contract. */
export interface Quantize {
  quantize(values: Float32Array, shape: number[], config?: QuantizationConfig): QuantizedTensor;
  dequantize(t: QuantizedTensor): Float32Array;
}

function fail(code: string, msg: string, details?: Record<string, unknown>): never {
  throw BitNetError.Quantization(code, msg, details);
}

/** Absmean ternarization (docs/bitnet-formats.md §5.1). */
export function ternarize(w: Float32Array): { ternary: Int8Array; scale: number } {
  let sum = 0;
  for (let i = 0; i < w.length; i++) sum += Math.abs(w[i]);
  const scale = Math.fround(Math.max(w.length ? sum / w.length : 0, 1e-5));
  const ternary = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) ternary[i] = Math.max(-1, Math.min(1, roundHalfEven(w[i] / scale)));
  return { ternary, scale };
}

function tail(data: Uint8Array, at: number): number {
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat32(at, true);
}

function withScale(bytes: number, scale: number): { out: Uint8Array } {
  const out = new Uint8Array(bytes + 4);
  new DataView(out.buffer).setFloat32(bytes, scale, true);
  return { out };
}

export const Quantizer: Quantize = {
  quantize(values, shape, config = new QuantizationConfig()) {
    config.validate();
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== values.length) fail('SHAPE_MISMATCH', `shape [${shape}] has ${n} elements, values have ${values.length}`);
    for (let i = 0; i < n; i++)
      if (!Number.isFinite(values[i])) fail('NON_FINITE', `value at ${i} is not finite`, { index: i });
    const bs = config.blockSize;
    const t: QuantizedTensor = { qtype: config.qtype, shape: [...shape], data: new Uint8Array(0), blockSize: bs };
    switch (config.qtype) {
      case 'None':
        t.data = new Uint8Array(Float32Array.from(values).buffer);
        return t;
      case 'I2S': {
        if (n % I2S_BLOCK) fail('BAD_LENGTH', `I2S needs a multiple of ${I2S_BLOCK} elements, got ${n}`);
        const { ternary, scale } = ternarize(values);
        t.data = packI2S(ternary, scale);
        return t;
      }
      case 'TL1': {
        if (n % 2) fail('BAD_LENGTH', `TL1 needs an even number of elements, got ${n}`);
        const { ternary, scale } = ternarize(values);
        const { out } = withScale(Math.ceil(n / 4), scale);
        for (let p = 0; p < n / 2; p++) {
          const idx = 3 * ternary[2 * p] + ternary[2 * p + 1] + 4;
          out[p >> 1] |= (p & 1) === 0 ? idx << 4 : idx;
        }
        t.data = out;
        return t;
      }
      case 'TL2': {
        if (n % 3) fail('BAD_LENGTH', `TL2 needs a multiple of 3 elements, got ${n}`);
        const g = n / 3;
        const nib = Math.ceil(g / 2);
        const { ternary, scale } = ternarize(values);
        const { out } = withScale(nib + Math.ceil(g / 8), scale);
        for (let i = 0; i < g; i++) {
          const v = 9 * ternary[3 * i] + 3 * ternary[3 * i + 1] + ternary[3 * i + 2];
          out[i >> 1] |= (i & 1) === 0 ? Math.abs(v) << 4 : Math.abs(v);
          if (v < 0) out[nib + (i >> 3)] |= 1 << (i & 7);
        }
        t.data = out;
        return t;
      }
      case 'Int8':
      case 'Int4': {
        const nb = Math.ceil(n / bs);
        const int4 = config.qtype === 'Int4';
        const qmax = int4 ? 7 : 127;
        const payload = int4 ? Math.ceil(n / 2) : n;
        const out = new Uint8Array(nb * 4 + payload);
        const dv = new DataView(out.buffer);
        for (let b = 0; b < nb; b++) {
          let amax = 0;
          for (let i = b * bs; i < Math.min(n, (b + 1) * bs); i++) amax = Math.max(amax, Math.abs(values[i]));
          const d = Math.fround(amax / qmax);
          dv.setFloat32(4 * b, d, true);
          for (let i = b * bs; i < Math.min(n, (b + 1) * bs); i++) {
            const q = d ? Math.max(-qmax - 1, Math.min(qmax, Math.round(values[i] / d))) : 0;
            if (int4) out[nb * 4 + (i >> 1)] |= (q & 15) << ((i & 1) * 4);
            else dv.setInt8(nb * 4 + i, q);
          }
        }
        t.data = out;
        return t;
      }
      default:
        return fail('UNKNOWN_QTYPE', `unknown quantization type ${String(config.qtype)}`);
    }
  },

  dequantize(t) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    const d = t.data;
    switch (t.qtype) {
      case 'None':
        out.set(new Float32Array(d.buffer.slice(d.byteOffset, d.byteOffset + 4 * n)));
        return out;
      case 'I2S': {
        const tern = unpackI2S(d, n);
        const s = tail(d, n / 4);
        for (let i = 0; i < n; i++) out[i] = tern[i] * s;
        return out;
      }
      case 'TL1': {
        const s = tail(d, Math.ceil(n / 4));
        for (let p = 0; p < n / 2; p++) {
          const idx = ((p & 1) === 0 ? d[p >> 1] >> 4 : d[p >> 1] & 15) - 4;
          const w0 = Math.round(idx / 3);
          out[2 * p] = w0 * s;
          out[2 * p + 1] = (idx - 3 * w0) * s;
        }
        return out;
      }
      case 'TL2': {
        const g = n / 3;
        const nib = Math.ceil(g / 2);
        const s = tail(d, nib + Math.ceil(g / 8));
        for (let i = 0; i < g; i++) {
          let v = (i & 1) === 0 ? d[i >> 1] >> 4 : d[i >> 1] & 15;
          if (d[nib + (i >> 3)] & (1 << (i & 7))) v = -v;
          const w0 = Math.round(v / 9);
          const r = v - 9 * w0;
          const w1 = Math.round(r / 3);
          out[3 * i] = w0 * s;
          out[3 * i + 1] = w1 * s;
          out[3 * i + 2] = (r - 3 * w1) * s;
        }
        return out;
      }
      case 'Int8':
      case 'Int4': {
        const bs = t.blockSize;
        const nb = Math.ceil(n / bs);
        const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
        for (let i = 0; i < n; i++) {
          const sc = dv.getFloat32(4 * Math.floor(i / bs), true);
          const q =
            t.qtype === 'Int4' ? (((d[nb * 4 + (i >> 1)] >> ((i & 1) * 4)) & 15) << 28) >> 28 : dv.getInt8(nb * 4 + i);
          out[i] = q * sc;
        }
        return out;
      }
      default:
        return fail('UNKNOWN_QTYPE', `unknown quantization type ${String(t.qtype)}`);
    }
  },
};
