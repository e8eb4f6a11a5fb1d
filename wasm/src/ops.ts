/**
 * Element-wise and reduction ops of the forward pass, each reproducing the reference's f32/f64
 * rounding sequence exactly (src/model/reference.ts, docs/numerics.md).
 *
 * exp: the reference calls V8's Math.exp (f64) and rounds its result. We evaluate our own f64
 * exp (relative error < 2^-50), bracket it by ±2^-40 (far beyond the error of any correct libm,
 * V8's included), push both ends through the same f64 operations and f32 rounding as the
 * reference, and accept when they agree. Only when they disagree (odds ~2^-15 per element) is the
 * host's Math.exp called through the import `env.exp`, so results equal the reference's always.
 */
import { f16Round, f16Round4 } from './common';

@external("env", "exp")
declare function hostExp(x: f64): f64;

const LN2_HI: f64 = 6.93147180369123816490e-01; // ln2 upper bits, k·LN2_HI exact for |k| < 2^11
const LN2_LO: f64 = 1.90821492927058770002e-10;
const INV_LN2: f64 = 1.44269504088896338700e+00;
const BRACKET: f64 = 9.094947017729282e-13; // 2^-40

/** exp(x) for |x| <= 700, relative error well below 2^-45 (Taylor to degree 12 on |r| <= ln2/2). */
@inline function expCore(x: f64): f64 {
  const kf = nearest<f64>(x * INV_LN2);
  const r = (x - kf * LN2_HI) - kf * LN2_LO;
  let p: f64 = 2.08767569878680989792e-9; // 1/12!
  p = p * r + 2.50521083854417187751e-8; // 1/11!
  p = p * r + 2.75573192239858906526e-7;
  p = p * r + 2.75573192239858906526e-6;
  p = p * r + 2.48015873015873015873e-5;
  p = p * r + 1.98412698412698412698e-4;
  p = p * r + 1.38888888888888888889e-3;
  p = p * r + 8.33333333333333333333e-3;
  p = p * r + 4.16666666666666666667e-2;
  p = p * r + 1.66666666666666666667e-1;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const scale = reinterpret<f64>(<u64>(<i64>kf + 1023) << 52);
  return p * scale;
}

/** expCore on two lanes (|x| <= 700 in both). */
@inline function expCore2(x: v128): v128 {
  const kf = f64x2.nearest(f64x2.mul(x, f64x2.splat(INV_LN2)));
  const r = f64x2.sub(f64x2.sub(x, f64x2.mul(kf, f64x2.splat(LN2_HI))), f64x2.mul(kf, f64x2.splat(LN2_LO)));
  let p = f64x2.splat(2.08767569878680989792e-9);
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(2.50521083854417187751e-8));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(2.75573192239858906526e-7));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(2.75573192239858906526e-6));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(2.48015873015873015873e-5));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.98412698412698412698e-4));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.38888888888888888889e-3));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(8.33333333333333333333e-3));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(4.16666666666666666667e-2));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.66666666666666666667e-1));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(0.5));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0));
  const ki = i64x2.extend_low_i32x4_s(i32x4.trunc_sat_f64x2_s_zero(kf));
  const scale = i64x2.shl(i64x2.add(ki, i64x2.splat(1023)), 52);
  return f64x2.mul(p, scale);
}

/**
 * SiLU of four f32 lanes: two f64x2 evaluations with the same bracket test as siluF32; a lane
 * whose bracket straddles an f32 boundary (or is out of range) takes the scalar path.
 */
@inline function silu4(g: v128): v128 {
  const lo = f64x2.promote_low_f32x4(g);
  const hi = f64x2.promote_low_f32x4(v128.shuffle<i32>(g, g, 2, 3, 2, 3));
  const r0 = silu2(lo);
  const r1 = silu2(hi);
  // r holds f32 results in lanes 0,1 (from r0) and 2,3 (from r1); NaN marks "take the scalar path"
  let r = v128.shuffle<i32>(r0, r1, 0, 1, 4, 5);
  if (!v128.any_true(f32x4.ne(r, r))) return r;
  for (let i = 0; i < 4; i++) {
    // rare: recompute the lane exactly (siluF32 brackets again and falls back to the host's exp)
    const x = f32x4.extract_lane(r, 0);
    r = v128.shuffle<i32>(r, r, 1, 2, 3, 0);
    if (x != x) r = f32x4.replace_lane(r, 3, siluF32(f32x4.extract_lane(g, 0)));
    g = v128.shuffle<i32>(g, g, 1, 2, 3, 0);
  }
  return r;
}

/** Two lanes: f32 results in lanes 0, 1 (NaN where undecided). */
@inline function silu2(g: v128): v128 {
  const x = f64x2.neg(g);
  const lim = f64x2.splat(700.0);
  const ok = v128.and(f64x2.le(x, lim), f64x2.ge(x, f64x2.neg(lim)));
  const xs = v128.bitselect(x, f64x2.splat(0), ok);
  const e = expCore2(xs);
  const one = f64x2.splat(1.0);
  const a = f32x4.demote_f64x2_zero(f64x2.div(g, f64x2.add(one, f64x2.mul(e, f64x2.splat(1.0 - BRACKET)))));
  const b = f32x4.demote_f64x2_zero(f64x2.div(g, f64x2.add(one, f64x2.mul(e, f64x2.splat(1.0 + BRACKET)))));
  // decided: both ends round to the same f32 bits, and in range
  const same = v128.and(i32x4.eq(a, b), v128.shuffle<i32>(ok, ok, 0, 2, 0, 2));
  return v128.bitselect(a, f32x4.splat(NaN), same);
}

/** f32(exp(x)) exactly as fround(Math.exp(x)). */
export function expF32(x: f64): f32 {
  if (!(x >= -700.0 && x <= 700.0)) return <f32>hostExp(x); // tails, inf, NaN: rare
  const e = expCore(x);
  const lo = <f32>(e * (1.0 - BRACKET));
  const hi = <f32>(e * (1.0 + BRACKET));
  if (lo == hi) return lo;
  return <f32>hostExp(x);
}

/** f32(g / (1 + exp(−g))) exactly as the reference's SiLU. */
export function siluF32(g: f32): f32 {
  const gd = <f64>g;
  const x = -gd;
  if (x >= -700.0 && x <= 700.0) {
    const e = expCore(x);
    const a = <f32>(gd / (1.0 + e * (1.0 - BRACKET)));
    const b = <f32>(gd / (1.0 + e * (1.0 + BRACKET)));
    if (a == b) return a;
  }
  return <f32>(gd / (1.0 + hostExp(x)));
}

/**
 * RMSNorm of the reference: Σ f32(x²) in f64 in order, mean = f32(sum/n),
 * scale = f32(1/f32(sqrt(f32(mean + eps)))), out = f32(f32(x·scale)·w).
 */
export function rmsnorm(x: usize, w: usize, n: i32, eps: f64, out: usize): void {
  let sum: f64 = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const sq = f32x4.mul(v128.load(x + (<usize>i << 2)), v128.load(x + (<usize>i << 2)));
    sum += <f64>f32x4.extract_lane(sq, 0);
    sum += <f64>f32x4.extract_lane(sq, 1);
    sum += <f64>f32x4.extract_lane(sq, 2);
    sum += <f64>f32x4.extract_lane(sq, 3);
  }
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    sum += <f64>(v * v);
  }
  const mean = <f32>(sum / <f64>n);
  const scale = <f32>(1.0 / <f64>(<f32>sqrt<f64>(<f64>(<f32>(<f64>mean + eps)))));
  const sv = f32x4.splat(scale);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(x + o), sv), v128.load(w + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, (load<f32>(x + o) * scale) * load<f32>(w + o));
  }
}

/**
 * NEOX RoPE on one head in place: pairs (i, i + nRot/2); cs holds cos[0..half) then sin[0..half)
 * for this position (computed by the host with the reference's f32 angle recurrence).
 */
export function rope_head(x: usize, nRot: i32, cs: usize): void {
  const half = nRot >> 1;
  const hb = <usize>half << 2;
  let i = 0;
  for (; i + 4 <= half; i += 4) {
    const o = <usize>i << 2;
    const c = v128.load(cs + o);
    const s = v128.load(cs + hb + o);
    const x0 = v128.load(x + o);
    const x1 = v128.load(x + hb + o);
    v128.store(x + o, f32x4.sub(f32x4.mul(x0, c), f32x4.mul(x1, s)));
    v128.store(x + hb + o, f32x4.add(f32x4.mul(x0, s), f32x4.mul(x1, c)));
  }
  for (; i < half; i++) {
    const o = <usize>i << 2;
    const c = load<f32>(cs + o);
    const s = load<f32>(cs + hb + o);
    const x0 = load<f32>(x + o);
    const x1 = load<f32>(x + hb + o);
    store<f32>(x + o, x0 * c - x1 * s);
    store<f32>(x + hb + o, x0 * s + x1 * c);
  }
}

/** x[i] = f16Round(x[i]) in place (dst may equal src). */
export function f16_round_vec(src: usize, dst: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(dst + (<usize>i << 2), f16Round4(v128.load(src + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(dst + (<usize>i << 2), f16Round(load<f32>(src + (<usize>i << 2))));
}

/** f[i] = f32(act(gate[i]) · up[i]); act = relu² (0) or SiLU (1). */
export function gate_act(gate: usize, up: usize, out: usize, n: i32, silu: i32): void {
  if (silu) {
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(out + o, f32x4.mul(silu4(v128.load(gate + o)), v128.load(up + o)));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      store<f32>(out + o, siluF32(load<f32>(gate + o)) * load<f32>(up + o));
    }
  } else {
    const zero = f32x4.splat(0);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      const g = v128.load(gate + o);
      // g > 0 ? g·g : 0 (NaN -> 0)
      const a = v128.and(f32x4.mul(g, g), f32x4.gt(g, zero));
      v128.store(out + o, f32x4.mul(a, v128.load(up + o)));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      const g = load<f32>(gate + o);
      const a: f32 = g > 0 ? g * g : 0;
      store<f32>(out + o, a * load<f32>(up + o));
    }
  }
}

/** out[i] = f32(out[i] + y[i]) */
export function add_vec(out: usize, y: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.add(v128.load(out + o), v128.load(y + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, load<f32>(out + o) + load<f32>(y + o));
  }
}
