/**
 * Causal attention of one token over its sequence's KV mirror, exactly as the reference:
 *   q is rounded to f16; score_t = f32(f64(f32(Σ_d q_d·k_td)) · attnScale), the sum in f64 in d
 *   order (products of f16 values are exact); softmax: max, e_t = f32(exp(score_t − max)),
 *   sum = Σ e_t in f64 in t order, inv = f32(1/sum), p_t = f16Round(f32(e_t · inv));
 *   out_d = f32(out_d + p_t·v_td) in t order from 0 (products exact).
 *
 * KV mirror layout (f32 values of f16-rounded K and V). Positions live in blocks of KV_BT = 16;
 * a block holds all layers: for layer l at block + l·layerBytes,
 *   K: [kvHead][d][t % 16]   (positions contiguous, so 2 positions fill an f64x2)
 *   V: [t % 16][kvHead][d]   (dims contiguous)
 * `blocks` is an array of u32 block addresses for the sequence.
 */
import { f16Round, madd32, madd64 } from './common';
import { expF32 } from './ops';

export const KV_BT: i32 = 16;

/** Scratch bytes attend() needs for nPos positions: up to 4 heads' f64 queries and scores. */
export function attend_scratch_bytes(nPos: i32, headDim: i32): i32 {
  return 32 * headDim + 4 * scoreBytes(nPos) + 64;
}

@inline function scoreBytes(nPos: i32): usize {
  return (<usize>(4 * (nPos + KV_BT)) + 63) & ~(<usize>63);
}

/** f32(f64(f32(s)) · attnScale): a score from its f64 sum. */
@inline function scaled(s: f64, attnScale: f64): f32 {
  return <f32>(<f64>(<f32>s) * attnScale);
}

/**
 * Heads h0..h1 of one token. q and out: f32 [nHead·headDim] (q already rounded to f16).
 * nPos = positions 0..nPos−1 visible. scratch: attend_scratch_bytes(nPos, headDim).
 *
 * Heads that share a KV head (grouped-query attention: `group` query heads per KV head) run
 * together, up to 4 at once: each K and V vector is loaded (and widened) once for all of them.
 * Every head keeps the reference's order, so the grouping does not change any bit.
 */
export function attend(
  q: usize, out: usize, h0: i32, h1: i32, headDim: i32, group: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scratch: usize,
): void {
  for (let h = h0; h < h1; ) {
    const kvh = h / group;
    const nh = min(4, min(h1, (kvh + 1) * group) - h);
    if (nh == 1) attendOne(q, out, h, headDim, kvh, kvDim, nPos, blocks, layerOff, attnScale, scratch);
    else if (nh == 2) attendGroup2(q, out, h, headDim, kvh, kvDim, nPos, blocks, layerOff, attnScale, scratch);
    else attendGroup4(q, out, h, nh, headDim, kvh, kvDim, nPos, blocks, layerOff, attnScale, scratch);
    h += nh;
  }
}

/** Softmax of one head's scores in place: max, e_t = f32(exp(s_t − max)), Σ in f64, p_t = f16(f32(e_t·inv)). */
function softmax(sc: usize, nPos: i32): void {
  let max: f32 = -Infinity;
  for (let t = 0; t < nPos; t++) {
    const v = load<f32>(sc + (<usize>t << 2));
    if (v > max) max = v;
  }
  let sum: f64 = 0;
  const maxd = <f64>max;
  for (let t = 0; t < nPos; t++) {
    const e = expF32(<f64>load<f32>(sc + (<usize>t << 2)) - maxd);
    store<f32>(sc + (<usize>t << 2), e);
    sum += <f64>e;
  }
  const inv = <f32>(1.0 / sum);
  for (let t = 0; t < nPos; t++) {
    store<f32>(sc + (<usize>t << 2), f16Round(load<f32>(sc + (<usize>t << 2)) * inv));
  }
}

/**
 * Output dims d0..hd of one head (probabilities at sc): out_d = Σ_t p_t·v_td in t order, f32;
 * 16 dims at a time, then 4, then 1.
 */
function pvOne(oh: usize, sc: usize, d0: usize, hd: usize, vbase: usize, vstride: usize, nPos: i32, blocks: usize): void {
  const nBlk = (nPos + KV_BT - 1) / KV_BT;
  let d = d0;
  for (; d + 16 <= hd; d += 16) {
    let o0 = f32x4.splat(0), o1 = f32x4.splat(0), o2 = f32x4.splat(0), o3 = f32x4.splat(0);
    for (let bi = 0; bi < nBlk; bi++) {
      let v = <usize>load<u32>(blocks + (<usize>bi << 2)) + vbase + (d << 2);
      const sb = sc + (<usize>(bi * KV_BT) << 2);
      const n = <usize>min(KV_BT, nPos - bi * KV_BT);
      for (let t: usize = 0; t < n; t++, v += vstride) {
        const p = v128.load32_splat(sb + (t << 2));
        o0 = madd32(p, v128.load(v), o0);
        o1 = madd32(p, v128.load(v, 16), o1);
        o2 = madd32(p, v128.load(v, 32), o2);
        o3 = madd32(p, v128.load(v, 48), o3);
      }
    }
    v128.store(oh + (d << 2), o0);
    v128.store(oh + (d << 2), o1, 16);
    v128.store(oh + (d << 2), o2, 32);
    v128.store(oh + (d << 2), o3, 48);
  }
  for (; d + 4 <= hd; d += 4) {
    let o0 = f32x4.splat(0);
    for (let bi = 0; bi < nBlk; bi++) {
      let v = <usize>load<u32>(blocks + (<usize>bi << 2)) + vbase + (d << 2);
      const sb = sc + (<usize>(bi * KV_BT) << 2);
      const n = <usize>min(KV_BT, nPos - bi * KV_BT);
      for (let t: usize = 0; t < n; t++, v += vstride) o0 = madd32(v128.load32_splat(sb + (t << 2)), v128.load(v), o0);
    }
    v128.store(oh + (d << 2), o0);
  }
  for (; d < hd; d++) {
    let o: f32 = 0;
    for (let t = 0; t < nPos; t++) {
      const v = <usize>load<u32>(blocks + (<usize>(t / KV_BT) << 2)) + vbase + (<usize>(t % KV_BT) * vstride) + (d << 2);
      o = o + load<f32>(sc + (<usize>t << 2)) * load<f32>(v);
    }
    store<f32>(oh + (d << 2), o);
  }
}

/** One head alone: scores 16 positions at a time (two per f64x2), softmax, p·V. */
function attendOne(
  q: usize, out: usize, h: i32, headDim: i32, kvh: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scratch: usize,
): void {
  const hd = <usize>headDim;
  const kBytes = <usize>(KV_BT * kvDim) << 2; // size of the K part (= V part) of a layer in a block
  const nBlk = (nPos + KV_BT - 1) / KV_BT;
  const qh = q + ((<usize>h * hd) << 2);
  const sc = scratch + 32 * hd;
  for (let bi = 0; bi < nBlk; bi++) {
    const kb = <usize>load<u32>(blocks + (<usize>bi << 2)) + layerOff + ((<usize>kvh * hd * <usize>KV_BT) << 2);
    let a0 = f64x2.splat(0), a1 = f64x2.splat(0), a2 = f64x2.splat(0), a3 = f64x2.splat(0);
    let a4 = f64x2.splat(0), a5 = f64x2.splat(0), a6 = f64x2.splat(0), a7 = f64x2.splat(0);
    for (let d: usize = 0; d < hd; d++) {
      const qd = f64x2.splat(<f64>load<f32>(qh + (d << 2)));
      const p = kb + (d << 6); // 16 positions × 4 bytes per d
      const k0 = v128.load(p), k1 = v128.load(p, 16), k2 = v128.load(p, 32), k3 = v128.load(p, 48);
      a0 = madd64(qd, f64x2.promote_low_f32x4(k0), a0);
      a1 = madd64(qd, f64x2.promote_low_f32x4(v128.shuffle<i32>(k0, k0, 2, 3, 2, 3)), a1);
      a2 = madd64(qd, f64x2.promote_low_f32x4(k1), a2);
      a3 = madd64(qd, f64x2.promote_low_f32x4(v128.shuffle<i32>(k1, k1, 2, 3, 2, 3)), a3);
      a4 = madd64(qd, f64x2.promote_low_f32x4(k2), a4);
      a5 = madd64(qd, f64x2.promote_low_f32x4(v128.shuffle<i32>(k2, k2, 2, 3, 2, 3)), a5);
      a6 = madd64(qd, f64x2.promote_low_f32x4(k3), a6);
      a7 = madd64(qd, f64x2.promote_low_f32x4(v128.shuffle<i32>(k3, k3, 2, 3, 2, 3)), a7);
    }
    const sb = sc + (<usize>(bi * KV_BT) << 2);
    store2(sb, a0, attnScale);
    store2(sb + 8, a1, attnScale);
    store2(sb + 16, a2, attnScale);
    store2(sb + 24, a3, attnScale);
    store2(sb + 32, a4, attnScale);
    store2(sb + 40, a5, attnScale);
    store2(sb + 48, a6, attnScale);
    store2(sb + 56, a7, attnScale);
  }
  softmax(sc, nPos);
  pvOne(out + ((<usize>h * hd) << 2), sc, 0, hd, layerOff + kBytes + ((<usize>kvh * hd) << 2), <usize>kvDim << 2, nPos, blocks);
}

/** The two scores of an f64x2 sum, scaled, at sb and sb + 4. */
@inline function store2(sb: usize, a: v128, attnScale: f64): void {
  store<f32>(sb, scaled(f64x2.extract_lane(a, 0), attnScale));
  store<f32>(sb, scaled(f64x2.extract_lane(a, 1), attnScale), 4);
}

/** attendGroup for 2 heads. */
function attendGroup2(
  q: usize, out: usize, h: i32, headDim: i32, kvh: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scratch: usize,
): void {
  attendGroup(2, q, out, h, 2, headDim, kvh, kvDim, nPos, blocks, layerOff, attnScale, scratch);
}

/** attendGroup for 3 or 4 heads (a fourth slot repeats the third when nh = 3). */
function attendGroup4(
  q: usize, out: usize, h: i32, nh: i32, headDim: i32, kvh: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scratch: usize,
): void {
  attendGroup(4, q, out, h, nh, headDim, kvh, kvDim, nPos, blocks, layerOff, attnScale, scratch);
}

/**
 * nh heads h..h+nh (2 ≤ nh ≤ T, T = 2 or 4 slots, a constant) that share KV head kvh. Scores: 4
 * positions at a time, each K vector widened once and met by every slot's f64 query (q64, written
 * here); p·V: 8 dims at a time, each V vector loaded once for every slot; the dims past the last 8
 * per head (pvOne).
 */
@inline function attendGroup(
  T: i32, q: usize, out: usize, h: i32, nh: i32, headDim: i32, kvh: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scratch: usize,
): void {
  const hd = <usize>headDim;
  const kBytes = <usize>(KV_BT * kvDim) << 2;
  const nBlk = (nPos + KV_BT - 1) / KV_BT;
  const SB = scoreBytes(nPos);
  const q64 = scratch; // [4][hd] f64
  const sc = scratch + 32 * hd; // [4] score rows of SB bytes
  // unused head slots (nh < T) repeat the last head: the same work, results overwritten
  for (let j = 0; j < T; j++) {
    const qh = q + ((<usize>(h + min(j, nh - 1)) * hd) << 2);
    for (let d: usize = 0; d < hd; d++) store<f64>(q64 + ((<usize>j * hd + d) << 3), <f64>load<f32>(qh + (d << 2)));
  }
  const qA = q64;
  const qB = q64 + (hd << 3);
  const qC = q64 + 2 * (hd << 3);
  const qD = q64 + 3 * (hd << 3);
  const sA = sc;
  const sB = sc + (nh > 1 ? SB : 0);
  const sC = sc + (nh > 2 ? 2 * SB : 0);
  const sD = sc + (nh > 3 ? 3 * SB : 0);
  // ---- scores: for each 4 positions, every d; lanes (t, t + 1) then (t + 2, t + 3)
  for (let bi = 0; bi < nBlk; bi++) {
    const kb = <usize>load<u32>(blocks + (<usize>bi << 2)) + layerOff + ((<usize>kvh * hd * <usize>KV_BT) << 2);
    for (let p4: usize = 0; p4 < <usize>KV_BT; p4 += 4) {
      let a0 = f64x2.splat(0), a1 = f64x2.splat(0), b0 = f64x2.splat(0), b1 = f64x2.splat(0);
      let c0 = f64x2.splat(0), c1 = f64x2.splat(0), e0 = f64x2.splat(0), e1 = f64x2.splat(0);
      for (let d: usize = 0; d < hd; d++) {
        const k = v128.load(kb + (d << 6) + (p4 << 2));
        const lo = f64x2.promote_low_f32x4(k);
        const hi = f64x2.promote_low_f32x4(v128.shuffle<i32>(k, k, 2, 3, 2, 3));
        const o = d << 3;
        let x = v128.load64_splat(qA + o);
        a0 = madd64(x, lo, a0);
        a1 = madd64(x, hi, a1);
        x = v128.load64_splat(qB + o);
        b0 = madd64(x, lo, b0);
        b1 = madd64(x, hi, b1);
        if (T == 4) {
          x = v128.load64_splat(qC + o);
          c0 = madd64(x, lo, c0);
          c1 = madd64(x, hi, c1);
          x = v128.load64_splat(qD + o);
          e0 = madd64(x, lo, e0);
          e1 = madd64(x, hi, e1);
        }
      }
      // stored in reverse so that a head slot aliased to an earlier one (nh < 4) ends with its own
      const off = (<usize>(bi * KV_BT) + p4) << 2;
      if (T == 4) {
        store2(sD + off, e0, attnScale);
        store2(sD + off + 8, e1, attnScale);
        store2(sC + off, c0, attnScale);
        store2(sC + off + 8, c1, attnScale);
      }
      store2(sB + off, b0, attnScale);
      store2(sB + off + 8, b1, attnScale);
      store2(sA + off, a0, attnScale);
      store2(sA + off + 8, a1, attnScale);
    }
  }
  for (let j = 0; j < nh; j++) softmax(sc + <usize>j * SB, nPos);
  // ---- p·V: 8 dims at a time for every head, positions block by block
  const vbase = layerOff + kBytes + ((<usize>kvh * hd) << 2);
  const vstride = <usize>kvDim << 2;
  const oA = out + ((<usize>h * hd) << 2);
  const oB = oA + (nh > 1 ? hd << 2 : 0);
  const oC = oA + (nh > 2 ? 2 * (hd << 2) : 0);
  const oD = oA + (nh > 3 ? 3 * (hd << 2) : 0);
  let d: usize = 0;
  for (; d + 8 <= hd; d += 8) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), b0 = f32x4.splat(0), b1 = f32x4.splat(0);
    let c0 = f32x4.splat(0), c1 = f32x4.splat(0), e0 = f32x4.splat(0), e1 = f32x4.splat(0);
    for (let bi = 0; bi < nBlk; bi++) {
      let v = <usize>load<u32>(blocks + (<usize>bi << 2)) + vbase + (d << 2);
      const t0 = <usize>(bi * KV_BT) << 2;
      const n = <usize>min(KV_BT, nPos - bi * KV_BT);
      for (let t: usize = 0; t < n; t++, v += vstride) {
        const v0 = v128.load(v);
        const v1 = v128.load(v, 16);
        const o = t0 + (t << 2);
        let p = v128.load32_splat(sA + o);
        a0 = madd32(p, v0, a0);
        a1 = madd32(p, v1, a1);
        p = v128.load32_splat(sB + o);
        b0 = madd32(p, v0, b0);
        b1 = madd32(p, v1, b1);
        if (T == 4) {
          p = v128.load32_splat(sC + o);
          c0 = madd32(p, v0, c0);
          c1 = madd32(p, v1, c1);
          p = v128.load32_splat(sD + o);
          e0 = madd32(p, v0, e0);
          e1 = madd32(p, v1, e1);
        }
      }
    }
    // reverse order, as above
    if (T == 4) {
      v128.store(oD + (d << 2), e0);
      v128.store(oD + (d << 2), e1, 16);
      v128.store(oC + (d << 2), c0);
      v128.store(oC + (d << 2), c1, 16);
    }
    v128.store(oB + (d << 2), b0);
    v128.store(oB + (d << 2), b1, 16);
    v128.store(oA + (d << 2), a0);
    v128.store(oA + (d << 2), a1, 16);
  }
  if (d < hd) for (let j = 0; j < nh; j++) pvOne(oA + <usize>j * (hd << 2), sc + <usize>j * SB, d, hd, vbase, vstride, nPos, blocks);
}

/**
 * Writes one token's K and V (f32 [kvDim] each, rounded to f16 here) into the mirror at position
 * pos (block pointer already resolved).
 */
export function kv_store(k: usize, v: usize, kvDim: i32, headDim: i32, block: usize, layerOff: usize, pos: i32): void {
  const t = <usize>(pos % KV_BT);
  const base = block + layerOff;
  const kBytes = <usize>(KV_BT * kvDim) << 2;
  for (let i = 0; i < kvDim; i++) {
    const kvh = i / headDim;
    const d = i % headDim;
    store<f32>(base + ((<usize>(kvh * headDim + d) * <usize>KV_BT + t) << 2), f16Round(load<f32>(k + (<usize>i << 2))));
    store<f32>(base + kBytes + ((t * <usize>kvDim + <usize>i) << 2), f16Round(load<f32>(v + (<usize>i << 2))));
  }
}
