/**
 * Deterministic PRNG for sampling: xoshiro128** seeded through splitmix32.
 *
 * Why our own: `Math.random` cannot be seeded, and the same seed must give the same tokens on
 * every backend (this JS path, a C++ or CUDA sampler). The algorithm below is therefore part of
 * the public contract; any change to it changes generated text for a given seed.
 *
 * Exact algorithm (all arithmetic on unsigned 32-bit integers, wrapping mod 2^32;
 * `rotl(x, r) = (x << r) | (x >> (32 - r))`):
 *
 *   Seed reduction: the seed is an integer, reduced mod 2^64 (two's complement, so -1 means
 *   2^64 - 1). lo = seed & 0xFFFFFFFF, hi = seed >> 32 (of the u64).
 *
 *   mix32(z):                       // murmur3 fmix32 finaliser; mix32(0) == 0
 *     z = (z ^ (z >> 16)) * 0x85EBCA6B
 *     z = (z ^ (z >> 13)) * 0xC2B2AE35
 *     return z ^ (z >> 16)
 *
 *   splitmix32 state x = lo ^ mix32(hi)  // seeds below 2^32 start from x = seed
 *   splitmix32_next(): x = x + 0x9E3779B9; return mix32(x)
 *
 *   xoshiro state s[0..3] = four successive splitmix32_next() outputs, in order.
 *   (They cannot all be zero: mix32 is a bijection and the four x values differ.)
 *
 *   nextU32():                      // xoshiro128** 1.1
 *     result = rotl(s[1] * 5, 7) * 9
 *     t = s[1] << 9
 *     s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
 *     s[2] ^= t
 *     s[3] = rotl(s[3], 11)
 *     return result
 *
 *   nextFloat() = (nextU32() >> 8) / 2^24  // 24 random bits, exact in f32, in [0, 1)
 *
 * Golden vector (seed 42): see test/unit/prng.test.ts.
 */
import { BitNetError } from '../errors.ts';

/** A source of uniform random numbers, as the sampler consumes it. */
export interface Rng {
  /** Next 32-bit unsigned integer in [0, 2^32). */
  nextU32(): number;
  /** Next float in [0, 1) with 24 random bits. */
  nextFloat(): number;
}

export type Seed = number | bigint;

/** mix32 of the contract above (murmur3 fmix32). */
function mix32(z: number): number {
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Reduces a seed to its u64 halves; throws on non-integers. */
function seedHalves(seed: Seed): [lo: number, hi: number] {
  let big: bigint;
  if (typeof seed === 'bigint') {
    big = seed;
  } else if (typeof seed === 'number' && Number.isSafeInteger(seed)) {
    big = BigInt(seed);
  } else {
    throw BitNetError.Config('INVALID_SEED', 'seed must be a safe integer number or a bigint', { seed: String(seed) });
  }
  const u = BigInt.asUintN(64, big);
  return [Number(u & 0xffffffffn), Number(u >> 32n)];
}

export class Xoshiro128 implements Rng {
  // Four words of state; kept as separate fields so V8 keeps them as small ints / doubles.
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: Seed) {
    const [lo, hi] = seedHalves(seed);
    let x = (lo ^ mix32(hi)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      return mix32(x);
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  nextU32(): number {
    const s1 = this.s1;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result;
  }

  nextFloat(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }

  /** An independent copy at the same point of the stream (for snapshots / speculative work). */
  clone(): Xoshiro128 {
    const c = Object.create(Xoshiro128.prototype) as Xoshiro128;
    c.s0 = this.s0;
    c.s1 = this.s1;
    c.s2 = this.s2;
    c.s3 = this.s3;
    return c;
  }

  /** The four state words as u32, s[0] first (for cross-backend hand-off and debugging). */
  state(): [number, number, number, number] {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }
}

/** Convenience constructor: `createRng(seed)`. */
export function createRng(seed: Seed): Xoshiro128 {
  return new Xoshiro128(seed);
}
