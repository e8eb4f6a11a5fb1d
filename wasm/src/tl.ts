/**
 * TL1 and TL2: lookup-table ternary kernels on i8x16.swizzle, over our own tile layouts (built at
 * load time from any ternary tensor, or read from a shard pack; src/quant/tl.ts documents the bytes).
 *
 * Exactness with int8 activations. A table of sums of 2 or 3 int8 activations needs 9-10 bits, but a
 * swizzle table holds bytes. So each activation is split q = 16·h + l (h = q >> 4 in −8..7,
 * l = q & 15 in 0..15) and two byte tables are kept per weight group: TH[p] = Σ w·h and
 * TL[p] = Σ w·l (|TH| ≤ 24, |TL| ≤ 45 for 3 weights). Σ w·q = 16·ΣTH + ΣTL, exactly.
 *
 * Orientation (T-MAC): one swizzle looks up 16 rows at once (rows in lanes) for one weight group.
 *   TL1: groups of 2 weights, pattern p = 3·(w0+1) + (w1+1) in 0..8, 4-bit indices.
 *   TL2: groups of 3 weights, v = 9·w0 + 3·w1 + w2 in −13..13, stored as |v| | (v<0) << 7; a swizzle
 *        returns 0 for indices ≥ 16, so swizzle(T, b) − swizzle(T, b ^ 0x80) = sign(v)·T[|v|].
 * Blocks of 256 elements (TL1: 128 groups, TL2: 86 groups, the last holding 1 element + 2 zero
 * pads) keep i16 accumulators in range and give the per-block sums the TQ epilogue needs.
 *
 * Image (u32 header words): 0 layout (1 | 2), 1 N, 2 K, 3 nb (blocks per row), 4 kind
 * (0: per-tensor, I2_S epilogue; 1: per-block f16 scales, TQ epilogue), 5 wscale (f32 bits),
 * 6 tiles, 7 groups per block, 8 byte offset of the indices, 9 byte offset of the scales.
 * Indices, tile-major: tile (16 rows) → block → TL1: 64 × 16 bytes (byte r = p(r, 2j) | p(r, 2j+1) << 4)
 * / TL2: 86 × 16 bytes (byte r of group j). Scales (kind 1): tile → block → 16 × f16.
 * Activation tables (tl_tables): token → block → group → 32 bytes (TH[16], TL[16]).
 */
import { f16ToF32 } from './common';

@inline function widenAdd(lo: v128, x: v128): v128 {
  return i16x8.add(lo, i16x8.extend_low_i8x16_s(x));
}
@inline function widenAddHi(hi: v128, x: v128): v128 {
  return i16x8.add(hi, i16x8.extend_high_i8x16_s(x));
}

/** Bytes of the activation tables of one token for a layout and width k. */
export function tl_table_bytes(layout: i32, k: i32): i32 {
  const nb = (k + 255) >> 8;
  return nb * (layout == 1 ? 128 : 86) * 32;
}

/** TH/TL tables of one token (q: int8[k], zero beyond k). */
export function tl_tables(layout: i32, q: usize, k: i32, out: usize): void {
  const nb = (k + 255) >> 8;
  const G = layout == 1 ? 2 : 3;
  const gpb = layout == 1 ? 128 : 86;
  for (let b = 0; b < nb; b++) {
    for (let j = 0; j < gpb; j++) {
      const t = out + (<usize>(b * gpb + j) << 5);
      let h0 = 0, h1 = 0, h2 = 0, l0 = 0, l1 = 0, l2 = 0;
      const e = b * 256 + G * j;
      if (G * j < 256 && e < k) { const v = <i32>load<i8>(q + <usize>e); h0 = v >> 4; l0 = v & 15; }
      if (G * j + 1 < 256 && e + 1 < k) { const v = <i32>load<i8>(q + <usize>e + 1); h1 = v >> 4; l1 = v & 15; }
      if (G == 3 && G * j + 2 < 256 && e + 2 < k) { const v = <i32>load<i8>(q + <usize>e + 2); h2 = v >> 4; l2 = v & 15; }
      for (let p = 0; p < 16; p++) {
        let wa = 0, wb = 0, wc = 0;
        if (G == 2) {
          if (p < 9) { wa = p / 3 - 1; wb = p % 3 - 1; }
        } else if (p < 14) {
          // balanced ternary digits of p (w0 ∈ {0, 1})
          wa = p >= 5 ? 1 : 0;
          let r = p - 9 * wa;
          wb = r >= 2 ? 1 : r <= -2 ? -1 : 0;
          wc = r - 3 * wb;
        }
        store<i8>(t + <usize>p, <i8>(wa * h0 + wb * h1 + wc * h2));
        store<i8>(t + 16 + <usize>p, <i8>(wa * l0 + wb * l1 + wc * l2));
      }
    }
  }
}

/** Σw·q of 16 rows for one 256-block: 4 × i32x4 written to d[0..16). */
@inline function tl1Block(ix: usize, tab: usize, d: usize): void {
  let h0 = i16x8.splat(0), h1 = i16x8.splat(0), l0 = i16x8.splat(0), l1 = i16x8.splat(0);
  const m15 = i8x16.splat(15);
  for (let j: usize = 0; j < 64; j += 2) {
    // 4 groups: TH sums stay within ±64, TL within ±120 in the i8 lanes
    let ah = i16x8.splat(0), al = i16x8.splat(0);
    let v = v128.load(ix + (j << 4));
    let i0 = v128.and(v, m15);
    let i1 = v128.and(i16x8.shr_u(v, 4), m15);
    let t = tab + (j << 6);
    ah = i8x16.add(i8x16.swizzle(v128.load(t), i0), i8x16.swizzle(v128.load(t, 32), i1));
    al = i8x16.add(i8x16.swizzle(v128.load(t, 16), i0), i8x16.swizzle(v128.load(t, 48), i1));
    v = v128.load(ix + (j << 4), 16);
    i0 = v128.and(v, m15);
    i1 = v128.and(i16x8.shr_u(v, 4), m15);
    t += 64;
    ah = i8x16.add(ah, i8x16.add(i8x16.swizzle(v128.load(t), i0), i8x16.swizzle(v128.load(t, 32), i1)));
    al = i8x16.add(al, i8x16.add(i8x16.swizzle(v128.load(t, 16), i0), i8x16.swizzle(v128.load(t, 48), i1)));
    h0 = widenAdd(h0, ah);
    h1 = widenAddHi(h1, ah);
    l0 = widenAdd(l0, al);
    l1 = widenAddHi(l1, al);
  }
  // 16·H + L in i32 (|H| ≤ 2048, |L| ≤ 3840 per block)
  const s16 = i32x4.splat(16);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_low_i16x8_s(h0), s16), i32x4.extend_low_i16x8_s(l0)));
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_high_i16x8_s(h0), s16), i32x4.extend_high_i16x8_s(l0)), 16);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_low_i16x8_s(h1), s16), i32x4.extend_low_i16x8_s(l1)), 32);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_high_i16x8_s(h1), s16), i32x4.extend_high_i16x8_s(l1)), 48);
}

@inline function tl2Block(ix: usize, tab: usize, d: usize): void {
  let h0 = i16x8.splat(0), h1 = i16x8.splat(0), l0 = i16x8.splat(0), l1 = i16x8.splat(0);
  const flip = i8x16.splat(-128);
  for (let j: usize = 0; j < 86; j += 2) {
    // 2 groups: TH contributions within ±48, TL within ±90 in the i8 lanes
    let v = v128.load(ix + (j << 4));
    let x = v128.xor(v, flip);
    let t = tab + (j << 5);
    let th = v128.load(t);
    let tl = v128.load(t, 16);
    let ah = i8x16.sub(i8x16.swizzle(th, v), i8x16.swizzle(th, x));
    let al = i8x16.sub(i8x16.swizzle(tl, v), i8x16.swizzle(tl, x));
    v = v128.load(ix + (j << 4), 16);
    x = v128.xor(v, flip);
    th = v128.load(t, 32);
    tl = v128.load(t, 48);
    ah = i8x16.add(ah, i8x16.sub(i8x16.swizzle(th, v), i8x16.swizzle(th, x)));
    al = i8x16.add(al, i8x16.sub(i8x16.swizzle(tl, v), i8x16.swizzle(tl, x)));
    h0 = widenAdd(h0, ah);
    h1 = widenAddHi(h1, ah);
    l0 = widenAdd(l0, al);
    l1 = widenAddHi(l1, al);
  }
  const s16 = i32x4.splat(16);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_low_i16x8_s(h0), s16), i32x4.extend_low_i16x8_s(l0)));
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_high_i16x8_s(h0), s16), i32x4.extend_high_i16x8_s(l0)), 16);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_low_i16x8_s(h1), s16), i32x4.extend_low_i16x8_s(l1)), 32);
  v128.store(d, i32x4.add(i32x4.mul(i32x4.extend_high_i16x8_s(h1), s16), i32x4.extend_high_i16x8_s(l1)), 48);
}

/**
 * y[t][r] for the rows of tiles tile0..tile1 (rows ≥ N skipped) and tokens 0..m of a TL image.
 * tables: token t at tables + t·tableStride; scales[t]: the token's activation scale.
 * scratch: 64 bytes + 64·nb bytes. Epilogues are the I2_S / TQ ones of ternary.ts.
 */
export function mm_tl(
  img: usize, tile0: i32, tile1: i32, m: i32, tables: usize, tableStride: i32, scales: usize,
  oscale: f32, out: usize, outStride: i32, mode: i32, scratch: usize,
): void {
  const layout = load<i32>(img);
  const N = load<i32>(img, 4);
  const nb = load<i32>(img, 12);
  const kind = load<i32>(img, 16);
  const wscale = load<f32>(img, 20);
  const gpb = load<i32>(img, 28);
  const idx = img + <usize>load<u32>(img, 32);
  const sc = img + <usize>load<u32>(img, 36);
  const blockBytes = <usize>(layout == 1 ? 64 * 16 : 86 * 16);
  const tabBlock = <usize>(gpb * 32);
  const d = scratch;
  for (let tile = tile0; tile < tile1; tile++) {
    const tix = idx + <usize>tile * <usize>nb * blockBytes;
    for (let t = 0; t < m; t++) {
      const tab = tables + <usize>t * <usize>tableStride;
      const s = load<f32>(scales + (<usize>t << 2));
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        if (layout == 1) tl1Block(tix + <usize>b * blockBytes, tab + <usize>b * tabBlock, d);
        else tl2Block(tix + <usize>b * blockBytes, tab + <usize>b * tabBlock, d);
        if (kind == 0) {
          i0 = i32x4.add(i0, v128.load(d));
          i1 = i32x4.add(i1, v128.load(d, 16));
          i2 = i32x4.add(i2, v128.load(d, 32));
          i3 = i32x4.add(i3, v128.load(d, 48));
        } else {
          // acc = f32(acc + f32(f32(D_b)·d_b)), rows in lanes
          const sp = sc + ((<usize>tile * <usize>nb + <usize>b) << 5);
          a0 = f32x4.add(a0, f32x4.mul(f32x4.convert_i32x4_s(v128.load(d)), f16x4(sp)));
          a1 = f32x4.add(a1, f32x4.mul(f32x4.convert_i32x4_s(v128.load(d, 16)), f16x4(sp + 8)));
          a2 = f32x4.add(a2, f32x4.mul(f32x4.convert_i32x4_s(v128.load(d, 32)), f16x4(sp + 16)));
          a3 = f32x4.add(a3, f32x4.mul(f32x4.convert_i32x4_s(v128.load(d, 48)), f16x4(sp + 24)));
        }
      }
      const sv = f32x4.splat(s);
      const ov = f32x4.splat(oscale);
      let y0: v128, y1: v128, y2: v128, y3: v128;
      if (kind == 0) {
        const ws = f32x4.splat(wscale);
        y0 = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(i0), sv), ws), ov);
        y1 = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(i1), sv), ws), ov);
        y2 = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(i2), sv), ws), ov);
        y3 = f32x4.mul(f32x4.mul(f32x4.div(f32x4.convert_i32x4_s(i3), sv), ws), ov);
      } else {
        y0 = f32x4.mul(f32x4.div(a0, sv), ov);
        y1 = f32x4.mul(f32x4.div(a1, sv), ov);
        y2 = f32x4.mul(f32x4.div(a2, sv), ov);
        y3 = f32x4.mul(f32x4.div(a3, sv), ov);
      }
      v128.store(d, y0);
      v128.store(d, y1, 16);
      v128.store(d, y2, 32);
      v128.store(d, y3, 48);
      const ot = out + ((<usize>t * <usize>outStride) << 2);
      for (let r = 0; r < 16; r++) {
        const row = tile * 16 + r;
        if (row >= N) break;
        const o = ot + (<usize>row << 2);
        let y = load<f32>(d + (<usize>r << 2));
        if (mode == 1) y = load<f32>(o) + y;
        store<f32>(o, y);
      }
    }
  }
}

@inline function f16x4(p: usize): v128 {
  let v = f32x4.splat(f16ToF32(load<u16>(p)));
  v = f32x4.replace_lane(v, 1, f16ToF32(load<u16>(p, 2)));
  v = f32x4.replace_lane(v, 2, f16ToF32(load<u16>(p, 4)));
  v = f32x4.replace_lane(v, 3, f16ToF32(load<u16>(p, 6)));
  return v;
}
