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

/**
 * Heads h0..h1 of one token. q and out: f32 [nHead·headDim] (q already rounded to f16).
 * nPos = positions 0..nPos−1 visible. scores: scratch of at least nPos + 16 f32.
 */
export function attend(
  q: usize, out: usize, h0: i32, h1: i32, headDim: i32, group: i32, kvDim: i32,
  nPos: i32, blocks: usize, layerOff: usize, attnScale: f64, scores: usize,
): void {
  const hd = <usize>headDim;
  const kBytes = <usize>(KV_BT * kvDim) << 2; // size of the K part (= V part) of a layer in a block
  const nBlk = (nPos + KV_BT - 1) / KV_BT;
  for (let h = h0; h < h1; h++) {
    const kvh = h / group;
    const qh = q + ((<usize>h * hd) << 2);
    // ---- scores
    let max: f32 = -Infinity;
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
      const sb = scores + (<usize>(bi * KV_BT) << 2);
      const n = min(KV_BT, nPos - bi * KV_BT);
      // f32(f64(f32(s)) · attnScale)
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a0, 0)) * attnScale));
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a0, 1)) * attnScale), 4);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a1, 0)) * attnScale), 8);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a1, 1)) * attnScale), 12);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a2, 0)) * attnScale), 16);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a2, 1)) * attnScale), 20);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a3, 0)) * attnScale), 24);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a3, 1)) * attnScale), 28);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a4, 0)) * attnScale), 32);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a4, 1)) * attnScale), 36);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a5, 0)) * attnScale), 40);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a5, 1)) * attnScale), 44);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a6, 0)) * attnScale), 48);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a6, 1)) * attnScale), 52);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a7, 0)) * attnScale), 56);
      store<f32>(sb, <f32>(<f64>(<f32>f64x2.extract_lane(a7, 1)) * attnScale), 60);
      for (let t = 0; t < n; t++) {
        const sc = load<f32>(sb + (<usize>t << 2));
        if (sc > max) max = sc;
      }
    }
    // ---- softmax
    let sum: f64 = 0;
    const maxd = <f64>max;
    for (let t = 0; t < nPos; t++) {
      const e = expF32(<f64>load<f32>(scores + (<usize>t << 2)) - maxd);
      store<f32>(scores + (<usize>t << 2), e);
      sum += <f64>e;
    }
    const inv = <f32>(1.0 / sum);
    for (let t = 0; t < nPos; t++) {
      store<f32>(scores + (<usize>t << 2), f16Round(load<f32>(scores + (<usize>t << 2)) * inv));
    }
    // ---- p · V, sequential in t: 16 dims at a time, then 4, then 1; positions block by block
    // (one block address per 16 positions), each product p_t·v_td exact (f16 values)
    const oh = out + ((<usize>h * hd) << 2);
    const vbase = layerOff + kBytes + ((<usize>kvh * hd) << 2);
    const vstride = <usize>kvDim << 2;
    let d: usize = 0;
    for (; d + 16 <= hd; d += 16) {
      let o0 = f32x4.splat(0), o1 = f32x4.splat(0), o2 = f32x4.splat(0), o3 = f32x4.splat(0);
      for (let bi = 0; bi < nBlk; bi++) {
        let v = <usize>load<u32>(blocks + (<usize>bi << 2)) + vbase + (d << 2);
        const sb = scores + (<usize>(bi * KV_BT) << 2);
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
        const sb = scores + (<usize>(bi * KV_BT) << 2);
        const n = <usize>min(KV_BT, nPos - bi * KV_BT);
        for (let t: usize = 0; t < n; t++, v += vstride) o0 = madd32(v128.load32_splat(sb + (t << 2)), v128.load(v), o0);
      }
      v128.store(oh + (d << 2), o0);
    }
    for (; d < hd; d++) {
      let o: f32 = 0;
      for (let t = 0; t < nPos; t++) {
        const v = <usize>load<u32>(blocks + (<usize>(t / KV_BT) << 2)) + vbase + ((<usize>((t % KV_BT) * kvDim) + d) << 2);
        o = o + load<f32>(scores + (<usize>t << 2)) * load<f32>(v);
      }
      store<f32>(oh + (d << 2), o);
    }
  }
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
