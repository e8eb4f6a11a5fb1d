import { describe, expect, it } from 'vitest';
import { QuantizationConfig, QuantizationType, Quantizer, ternarize } from '../../src/api/quantization.ts';
import { BitNetError } from '../../src/errors.ts';
import { createRng } from '../../src/generate/prng.ts';
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import { dotI2S, dotTQ1_0, dotTQ2_0, quantizeActivations, roundHalfEven } from '../../src/model/reference.ts';
import { dequantizeRow, quantizeQ6_K, quantizeQ8_0 } from '../../src/quant/float-codecs.ts';
import { i2sScale, packI2S, unpackI2S } from '../../src/quant/i2s.ts';
import { packTQ1_0, packTQ2_0, unpackTQ1_0, unpackTQ2_0 } from '../../src/quant/tq.ts';

const rng = createRng(7);
const ternary = (n: number) => Int8Array.from({ length: n }, () => (rng.nextU32() % 3) - 1);
const int8 = (n: number) => Int8Array.from({ length: n }, () => (rng.nextU32() % 256) - 128);

describe('I2_S layout (128/32 interleave, MSB-first planes)', () => {
  it('places element j of a block at byte j%32, shift 6-2*floor(j/32)', () => {
    const t = new Int8Array(128);
    t[0] = 1; // code 2 at byte 0 bits 7:6
    t[33] = -1; // code 0 at byte 1 bits 5:4 -> others 1
    t[127] = 1; // code 2 at byte 31 bits 1:0
    const b = packI2S(t, 0.5);
    expect(b.length).toBe(128 / 4 + 32);
    expect(b[0]).toBe((2 << 6) | (1 << 4) | (1 << 2) | 1);
    expect(b[1]).toBe((1 << 6) | (0 << 4) | (1 << 2) | 1);
    expect(b[31]).toBe((1 << 6) | (1 << 4) | (1 << 2) | 2);
    expect(i2sScale(b, 128)).toBe(0.5);
  });
  it('round-trips', () => {
    const t = ternary(128 * 12);
    const b = packI2S(t, 0.25);
    expect(unpackI2S(b, t.length)).toEqual(t);
    const row = new Float32Array(256);
    dequantizeRow({ name: 'w', type: GGMLType.I2_S, ne: [256, 6], bytes: b }, 2, row);
    for (let i = 0; i < 256; i++) expect(row[i]).toBe(t[512 + i] * 0.25);
  });
  it('rejects bad lengths and non-ternary values', () => {
    expect(() => packI2S(new Int8Array(100), 1)).toThrow(BitNetError);
    expect(() => packI2S(new Int8Array(128).fill(2), 1)).toThrow(BitNetError);
  });
});

describe('TQ2_0 and TQ1_0', () => {
  it('TQ2_0 uses LSB-first planes in two 128-element halves', () => {
    const t = new Int8Array(256);
    t[0] = 1; // qs[0] bits 1:0 = 2
    t[32] = -1; // qs[0] bits 3:2 = 0
    t[128] = 1; // qs[32] bits 1:0 = 2
    const b = packTQ2_0(t, 1);
    expect(b.length).toBe(66);
    expect(b[0]).toBe(2 | (0 << 2) | (1 << 4) | (1 << 6));
    expect(b[32] & 3).toBe(2);
    expect(b[64] | (b[65] << 8)).toBe(0x3c00); // f16 1.0
  });
  it('TQ1_0 encodes base-3 digits as ceil(v*256/243), first element most significant', () => {
    const t = new Int8Array(256); // all zeros -> digit 1 everywhere
    const b = packTQ1_0(t, 1);
    expect(b.length).toBe(54);
    const v5 = 1 * 81 + 1 * 27 + 1 * 9 + 1 * 3 + 1; // 121
    expect(b[0]).toBe(Math.ceil((v5 * 256) / 243));
    const v4 = (1 * 27 + 1 * 9 + 1 * 3 + 1) * 3; // qh: 4 digits then x3
    expect(b[48]).toBe(Math.ceil((v4 * 256) / 243));
  });
  it('both round-trip and dequantize rows', () => {
    const t = ternary(256 * 6);
    for (const [pack, unpack, type] of [
      [packTQ2_0, unpackTQ2_0, GGMLType.TQ2_0],
      [packTQ1_0, unpackTQ1_0, GGMLType.TQ1_0],
    ] as const) {
      const b = pack(t, 0.5);
      const u = unpack(b, t.length);
      expect(u.ternary).toEqual(t);
      expect(Array.from(u.scales)).toEqual(new Array(6).fill(0.5));
      const row = new Float32Array(512);
      dequantizeRow({ name: 'w', type, ne: [512, 3], bytes: b }, 1, row);
      for (let i = 0; i < 512; i++) expect(row[i]).toBe(t[512 + i] * 0.5);
    }
  });
});

describe('float codecs', () => {
  it('Q8_0 and Q6_K dequantize within their step', () => {
    const x = Float32Array.from({ length: 512 }, () => (rng.nextFloat() - 0.5) * 2);
    const row = new Float32Array(512);
    dequantizeRow({ name: 'e', type: GGMLType.Q8_0, ne: [512, 1], bytes: quantizeQ8_0(x) }, 0, row);
    for (let i = 0; i < 512; i++) expect(Math.abs(row[i] - x[i])).toBeLessThan(1 / 127 + 1e-3);
    dequantizeRow({ name: 'e', type: GGMLType.Q6_K, ne: [512, 1], bytes: quantizeQ6_K(x) }, 0, row);
    let maxErr = 0;
    for (let i = 0; i < 512; i++) maxErr = Math.max(maxErr, Math.abs(row[i] - x[i]));
    expect(maxErr).toBeLessThan(0.04);
  });
});

describe('reference integer kernels', () => {
  it('round half to even like nearest_int', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 3.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, 4]);
  });
  it('per-token activation quantization: 1e-5 floor, f32 scale, clamp', () => {
    const q = new Int8Array(4);
    const r = quantizeActivations(new Float32Array([1, -0.5, 0.25, 0]), q);
    expect(r.scale).toBe(Math.fround(127));
    expect(Array.from(q)).toEqual([127, -64, 32, 0]); // -63.5 -> -64 (even), 31.75 -> 32
    expect(r.sum).toBe(95);
    const z = quantizeActivations(new Float32Array(4), q);
    expect(z.scale).toBe(Math.fround(127 / 1e-5));
    expect(Array.from(q)).toEqual([0, 0, 0, 0]);
  });
  it('dot products equal the naive ternary sum exactly', () => {
    for (const k of [256, 512, 2560]) {
      const t = ternary(k * 3);
      const q = int8(k);
      const naive = (r: number) => {
        let s = 0;
        for (let i = 0; i < k; i++) s += t[r * k + i] * q[i];
        return s;
      };
      const i2 = packI2S(t, 1);
      for (let r = 0; r < 3; r++) expect(dotI2S(i2, (r * k) / 4, q, k)).toBe(naive(r));
      // TQ types carry a per-block f16 scale of 1: the f32 block sum is exact here.
      const tq2 = packTQ2_0(t, 1);
      const tq1 = packTQ1_0(t, 1);
      for (let r = 0; r < 3; r++) {
        expect(dotTQ2_0(tq2, r * (k / 256) * 66, q, k)).toBe(naive(r));
        expect(dotTQ1_0(tq1, r * (k / 256) * 54, q, k)).toBe(naive(r));
      }
    }
  });
});

describe('Quantize contract round trips', () => {
  const w = Float32Array.from({ length: 384 }, () => (rng.nextFloat() - 0.5) * 0.2);
  it('I2S/TL1/TL2 give back the absmean-ternarized weights exactly', () => {
    const { ternary: t, scale } = ternarize(w);
    for (const qtype of [QuantizationType.I2S, QuantizationType.TL1, QuantizationType.TL2]) {
      const q = Quantizer.quantize(w, [3, 128], new QuantizationConfig({ qtype }));
      const d = Quantizer.dequantize(q);
      for (let i = 0; i < w.length; i++) expect(d[i] === Math.fround(t[i] * scale)).toBe(true); // -0 == 0
    }
  });
  it('Int8/Int4/None stay within their step', () => {
    expect(Quantizer.dequantize(Quantizer.quantize(w, [384], new QuantizationConfig({ qtype: 'None' })))).toEqual(w);
    for (const [qtype, step] of [
      ['Int8', 0.1 / 127],
      ['Int4', 0.1 / 7],
    ] as const) {
      const d = Quantizer.dequantize(Quantizer.quantize(w, [384], new QuantizationConfig({ qtype, blockSize: 64 })));
      for (let i = 0; i < w.length; i++) expect(Math.abs(d[i] - w[i])).toBeLessThanOrEqual(step / 2 + 1e-6);
    }
  });
  it('rejects bad input with typed errors', () => {
    expect(() => Quantizer.quantize(w, [5], new QuantizationConfig())).toThrow(BitNetError);
    expect(() => Quantizer.quantize(new Float32Array(100), [100], new QuantizationConfig({ qtype: 'I2S' }))).toThrow(
      BitNetError,
    );
    expect(() =>
      Quantizer.quantize(new Float32Array([Number.NaN, 0]), [2], new QuantizationConfig({ qtype: 'TL1' })),
    ).toThrow(BitNetError);
    expect(() => new QuantizationConfig({ blockSize: 0 }).validate()).toThrow(BitNetError);
  });
});
