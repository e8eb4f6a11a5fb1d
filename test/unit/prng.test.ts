import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { createRng, Xoshiro128 } from '../../src/generate/prng.ts';

// Golden vector: first 8 nextU32() outputs for seed 42. Other backends must reproduce these.
const GOLDEN_42 = [0xa91e1cac, 0x207b36e9, 0x1c987ffa, 0xd09fde9e, 0x14404494, 0x06bee32a, 0x03e4c0b2, 0x424bc820];

// Independent reference written with BigInt arithmetic straight from the documented contract.
const M32 = 0xffffffffn;
const mul = (a: bigint, b: bigint): bigint => (a * b) & M32;
const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (32n - r))) & M32;
function refMix(z: bigint): bigint {
  z = mul(z ^ (z >> 16n), 0x85ebca6bn);
  z = mul(z ^ (z >> 13n), 0xc2b2ae35n);
  return z ^ (z >> 16n);
}
function refStream(seed: bigint, n: number): number[] {
  const u = BigInt.asUintN(64, seed);
  let x = (u & M32) ^ refMix(u >> 32n);
  const s: bigint[] = [];
  for (let i = 0; i < 4; i++) {
    x = (x + 0x9e3779b9n) & M32;
    s.push(refMix(x));
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(Number(mul(rotl(mul(s[1], 5n), 7n), 9n)));
    const t = (s[1] << 9n) & M32;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11n);
  }
  return out;
}

describe('Xoshiro128 (xoshiro128** via splitmix32)', () => {
  it('matches the golden vector for seed 42', () => {
    const r = new Xoshiro128(42);
    expect(Array.from({ length: 8 }, () => r.nextU32())).toEqual(GOLDEN_42);
    expect(refStream(42n, 8)).toEqual(GOLDEN_42);
  });

  it('matches the BigInt reference for many seeds, including u64 and negative ones', () => {
    const seeds: bigint[] = [0n, 1n, 42n, 0xffffffffn, 0x100000000n, 0xdeadbeefcafebaben, 2n ** 64n - 1n, -1n, -12345n];
    for (const seed of seeds) {
      const r = new Xoshiro128(seed);
      const got = Array.from({ length: 64 }, () => r.nextU32());
      expect(got).toEqual(refStream(seed, 64));
    }
  });

  it('treats number and bigint seeds alike, and -1 as 2^64-1', () => {
    const a = createRng(123456789);
    const b = createRng(123456789n);
    const c = createRng(-1);
    const d = createRng(2n ** 64n - 1n);
    for (let i = 0; i < 16; i++) {
      expect(a.nextU32()).toBe(b.nextU32());
      expect(c.nextU32()).toBe(d.nextU32());
    }
  });

  it('mixes the high half of a u64 seed', () => {
    const a = createRng(7n).nextU32();
    const b = createRng(7n + (1n << 32n)).nextU32();
    expect(a).not.toBe(b);
  });

  it('nextFloat is (u32 >>> 8) / 2^24 and lies in [0, 1)', () => {
    const a = createRng(99);
    const b = createRng(99);
    for (let i = 0; i < 1000; i++) {
      const f = a.nextFloat();
      expect(f).toBe((b.nextU32() >>> 8) / 2 ** 24);
      expect(f).toBeGreaterThanOrEqual(0);
      expect(f).toBeLessThan(1);
    }
  });

  it('clone continues the same stream independently', () => {
    const a = createRng(5);
    a.nextU32();
    const b = a.clone();
    expect(b.state()).toEqual(a.state());
    expect([a.nextU32(), a.nextU32()]).toEqual([b.nextU32(), b.nextU32()]);
  });

  it('rejects non-integer seeds with a Config error', () => {
    for (const bad of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      try {
        createRng(bad);
        expect.unreachable();
      } catch (e) {
        expect(isBitNetError(e) && e.kind === 'Config' && e.code === 'INVALID_SEED').toBe(true);
      }
    }
  });
});
