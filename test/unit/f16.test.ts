import { describe, expect, it } from 'vitest';
import { decodeF16, encodeF16, f16Table, f16ToF32, f32BitsToF16, f32ToF16 } from '../../src/util/f16.ts';

// f32 helpers for the reference (bit-level neighbours of a float).
const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
const bitsOf = (x: number): number => {
  f[0] = x;
  return u[0];
};
const fromBits = (b: number): number => {
  u[0] = b >>> 0;
  return f[0];
};
/** Next f32 above / below a positive finite f32. */
const up = (x: number): number => fromBits(bitsOf(x) + 1);
const down = (x: number): number => fromBits(bitsOf(x) - 1);

// Independent decode of the 31744 non-negative finite f16 values, from the format definition.
const POS: number[] = [];
for (let h = 0; h < 0x7c00; h++) {
  const e = h >> 10;
  const m = h & 0x3ff;
  POS.push(e === 0 ? m / 2 ** 24 : (1 + m / 1024) * 2 ** (e - 15));
}

/** Reference: nearest f16 by search over the sorted table, ties to even, >= 65520 -> inf. */
function refRound(x: number): number {
  x = Math.fround(x);
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = POS.length - 1; // find largest index with POS[i] <= a
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (POS[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  if (lo === POS.length - 1) return sign | lo; // a in [65504, 65520)
  const dLo = a - POS[lo];
  const dHi = POS[lo + 1] - a;
  if (dLo < dHi) return sign | lo;
  if (dHi < dLo) return sign | (lo + 1);
  return sign | (lo % 2 === 0 ? lo : lo + 1);
}

describe('f16 conversion', () => {
  it('decodes every f16 pattern as the format defines it, and re-encodes it exactly', () => {
    const t = f16Table();
    const bad: string[] = []; // collected, so 65536 cases cost one expect
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      if (e === 0x1f && m !== 0) {
        const back = f32ToF16(v);
        const ok = Number.isNaN(v) && Number.isNaN(t[h]) && (back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0;
        if (!ok) bad.push(`NaN ${h.toString(16)}`);
        continue;
      }
      const mag = e === 0x1f ? Number.POSITIVE_INFINITY : POS[h & 0x7fff];
      const ok = Object.is(v, h & 0x8000 ? -mag : mag) && Object.is(t[h], v) && f32ToF16(v) === h;
      if (!ok) bad.push(h.toString(16));
    }
    expect(bad).toEqual([]);
  });

  it('rounds every midpoint between neighbouring f16 values to even, and its f32 neighbours to the nearer side', () => {
    const bad: string[] = [];
    for (let h = 0; h < 0x7c00; h++) {
      const a = POS[h];
      const b = h + 1 < 0x7c00 ? POS[h + 1] : 65536; // 65536: where the next binade would start
      const mid = (a + b) / 2;
      if (Math.fround(mid) !== mid) bad.push(`mid not f32 ${h}`); // 12 significant bits: exact in f32
      const even = h % 2 === 0 ? h : h + 1;
      for (const s of [0, 0x8000]) {
        const sg = s ? -1 : 1;
        if (f32ToF16(sg * mid) !== (s | even)) bad.push(`tie ${s | h}`);
        if (f32ToF16(sg * up(mid)) !== (s | (h + 1))) bad.push(`above ${s | h}`);
        if (f32ToF16(sg * down(mid)) !== (s | h)) bad.push(`below ${s | h}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('agrees with the table-search reference on random f32 bit patterns', () => {
    let seed = 0x12345678;
    const rnd = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    for (let i = 0; i < 200_000; i++) {
      // Bias half the samples towards the f16 range (f32 exponents 100..143).
      let bits = rnd();
      if (i & 1) bits = (bits & 0x807fffff) | ((100 + (rnd() % 44)) << 23);
      const x = fromBits(bits);
      const want = refRound(x);
      const got = f32BitsToF16(bits >>> 0);
      if (want === -1) expect((got & 0x7c00) === 0x7c00 && (got & 0x3ff) !== 0).toBe(true);
      else if (got !== want)
        expect.fail(`x=${x} bits=${bits.toString(16)} got ${got.toString(16)} want ${want.toString(16)}`);
    }
  });

  it('handles the special cases', () => {
    expect(f32ToF16(0)).toBe(0);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(Number.POSITIVE_INFINITY)).toBe(0x7c00);
    expect(f32ToF16(Number.NEGATIVE_INFINITY)).toBe(0xfc00);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519.99)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00);
    expect(f32ToF16(1e10)).toBe(0x7c00);
    expect(f32ToF16(2 ** -24)).toBe(1);
    expect(f32ToF16(2 ** -25)).toBe(0); // tie to even
    expect(f32ToF16(up(2 ** -25))).toBe(1);
    expect(f32ToF16(1e-10)).toBe(0);
    expect(f32ToF16(1.401298464324817e-45)).toBe(0); // f32 subnormal
    expect(f32ToF16(2 ** -14 - 2 ** -25)).toBe(0x400); // subnormal rounding carries into min normal
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, rounds up to even
    expect(Number.isNaN(f16ToF32(f32ToF16(Number.NaN)))).toBe(true);
  });

  it('bulk encode/decode round-trips with offsets', () => {
    const src = new Float32Array([1, -2.5, 3.3333, 65504, 1e-5, 0]);
    const dst = new Uint16Array(8);
    encodeF16(src, dst, 2, 1, 4);
    expect(dst[0]).toBe(0);
    expect(dst[2]).toBe(f32ToF16(-2.5));
    const out = new Float32Array(6);
    decodeF16(dst, out, 1, 2, 4);
    expect(Array.from(out.subarray(1, 5))).toEqual([-2.5, f16ToF32(f32ToF16(3.3333)), 65504, f16ToF32(f32ToF16(1e-5))]);
  });
});
