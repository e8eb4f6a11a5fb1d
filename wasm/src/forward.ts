/**
 * The whole forward pass of a chunk of m tokens, run SPMD by every thread: each thread calls
 * forward(rc, tid) on the same shared memory; row-parallel phases share out chunks of rows (see
 * Work sharing), token-parallel phases split tokens, and a barrier separates phases. The numerics
 * of every phase are those of ReferenceForward.forwardToken (src/model/reference.ts); tokens are
 * independent, so a chunk of m tokens gives the same results as m single-token calls.
 *
 * Descriptors (written by src/kernels/wasm/model-image.ts; offsets in bytes, i32 unless noted):
 *
 * Model (MD):
 *   0 nEmbd  4 nFF  8 nHead  12 nHeadKv  16 headDim  20 nRot  24 nLayer  28 nVocab  32 silu(0/1)
 *   36 embdType  40 embdPtr  44 headType  48 headPtr  52 outputNormPtr  56 layersPtr
 *   60 headAbsSums (f64[nVocab], F16 head)  64 rmsEps (f64)  72 attnScale (f64)
 *   80 kvLayerBytes (bytes of one layer in a KV block)  84 projFloat (1 if projections are float)
 *   88 projType  92 tlLayout (0: file bytes; 1, 2: TL1/TL2 images in each linear's aux, tl.ts)
 * Layer (LAYER_BYTES each): 0 attnNorm 4 attnSubNorm 8 ffnNorm 12 ffnSubNorm, then 7 linears
 *   (q, k, v, o, gate, up, down) of LIN_BYTES at 16 + 32·j: 0 type 4 ptr 8 k 12 n 16 wscale(f32)
 *   20 oscale(f32) 24 aux
 * Run context (RC):
 *   0 m  4 tokens(i32[m])  8 pos0  12 rope (f32[m][nRot]: cos half, sin half)  16 kvBlocks (u32[])
 *   20 logitsMode (0 none, 1 last, 2 all, 3 hidden states of all tokens, no logits)  24 logits (f32[rows][nVocab])  28 nThreads
 *   32 shared scratch  36 mCap  40 thread scratch base  44 thread scratch bytes  48 md
 *   52 hidden out (f32[rows][nEmbd], optional, 0 = none)
 *   56 seqs (optional, 0 = none): a batch of tokens from different sequences (batched decode).
 *      Per token t, 8 bytes at seqs + 8t: i32 position, u32 address of that sequence's kvBlocks
 *      table. Without it token t is at pos0 + t of the one table kvBlocks. With it pos0 is only
 *      the largest position in the batch (it sizes the attention scores' scratch).
 *   60 work chunk bytes (0: CHUNK_BYTES; see Work sharing)
 *   64 barrier count  68 barrier sleepers  128 barrier generation  192 job sequence  256 exit flag
 *   260 barrier spins before sleeping (0: BARRIER_SPINS)
 *   320 work ticket counter (zeroed by run() before each job)
 */
import { attend, attend_scratch_bytes, kv_store } from './attention';
import { head_f16_2, head_f16m_prep, head_f16m_stride } from './headf16m';
import { f16Round } from './common';
import { dequant_row, head_f16, head_prep_bytes, mv_exact, round_act, row_bytes, T_F16, T_Q4_0, T_Q6_K, T_Q8_0 } from './floatdot';
import { head_prep_q8_0, head_prep_q8k, head_q4_0, head_q4_0_4, head_q6_k, head_q6_k_2, head_q6_k_4, head_q8_0, head_q8_0_4 } from './inthead';
import { f16_round_vec, gate_act, rmsnorm, rope_head } from './ops';
import { quantize_act } from './quant';
import { mm_i2s, mm_tq1, mm_tq2, TILE_BYTES } from './ternary';
import { mm_tl, tl_table_bytes, tl_tables } from './tl';

export const LAYER_BYTES: i32 = 256;
export const LIN_BYTES: i32 = 32;
const T_TQ1: i32 = 34;
const T_TQ2: i32 = 35;
const T_I2S: i32 = 36;
/** Spins of a worker waiting for the next job before it sleeps (between tokens the host runs JS). */
const SPINS: i32 = 1 << 14;
/**
 * Spins at a barrier before sleeping, unless RC 260 gives a count: ~0.2 ms on a 2.3 GHz Xeon
 * (~1.7 ns a spin). Within a forward the others arrive within a work chunk or a short one-thread
 * phase, and a sleeper costs its wake-up (tens of µs in a VM) on the critical path: at 1 << 14
 * (~28 µs) a 2B-4T decode step at 2 threads slept 35-55 times in its 305 barriers, at 1 << 17
 * 1-2 times. With more threads than cores a spinner holds the core the others need, so the
 * backend then asks for a short spin (RC 260).
 */
const BARRIER_SPINS: i32 = 1 << 17;
/** This forward's barrier spins (a per-instance, hence per-thread, global; set by forward()). */
let barrierSpins: i32 = BARRIER_SPINS;
/** Weight bytes of one work chunk of a row-parallel phase with several threads (RC 60 overrides). */
const CHUNK_BYTES: i32 = 65536;
const RC_TICKET: usize = 320;
/** Tokens whose head activations are prepared at once (the multi-token heads, headsMulti). */
const HEAD_GROUP: usize = 16;
/** Head rows per tile of headsMulti: 64 rows of 2560 are 67 KB of Q6_K (328 KB of F16), reread from L2 by each token group. */
const HEAD_TILE: i32 = 64;

// ---------------------------------------------------------------------------------------------
// Barrier and job hand-off (shared memory atomics)
// ---------------------------------------------------------------------------------------------

export function barrier(rc: usize): void {
  const n = load<i32>(rc, 28);
  if (n <= 1) return;
  const gen = atomic.load<i32>(rc + 128);
  if (atomic.add<i32>(rc + 64, 1) == n - 1) {
    atomic.store<i32>(rc + 64, 0);
    atomic.store<i32>(rc + 128, gen + 1);
    if (atomic.load<i32>(rc + 68) > 0) atomic.notify(rc + 128, n);
  } else {
    let spins = 0;
    while (atomic.load<i32>(rc + 128) == gen) {
      if (++spins > barrierSpins) {
        atomic.add<i32>(rc + 68, 1);
        atomic.wait<i32>(rc + 128, gen, -1);
        atomic.sub<i32>(rc + 68, 1);
      }
    }
  }
}

/** Main thread: publish a job and take part as thread 0. */
export function run(rc: usize): void {
  if (load<i32>(rc, 28) > 1) {
    // the workers read the counter only after they see the job (sequentially consistent atomics)
    atomic.store<i32>(rc + RC_TICKET, 0);
    atomic.add<i32>(rc + 192, 1);
    atomic.notify(rc + 192, 1 << 30);
  }
  forward(rc, 0);
}

/** Worker threads: wait for jobs (job sequence past `seen`) until the exit flag is set. */
export function worker_loop(rc: usize, tid: i32, seen: i32): void {
  while (true) {
    let spins = 0;
    while (atomic.load<i32>(rc + 192) == seen) {
      if (++spins > SPINS) atomic.wait<i32>(rc + 192, seen, -1);
    }
    seen = atomic.load<i32>(rc + 192);
    if (atomic.load<i32>(rc + 256) != 0) return;
    forward(rc, tid);
  }
}

/** Asks the workers to leave worker_loop. */
export function stop_workers(rc: usize): void {
  atomic.store<i32>(rc + 256, 1);
  atomic.add<i32>(rc + 192, 1);
  atomic.notify(rc + 192, 1 << 30);
}

// ---------------------------------------------------------------------------------------------
// Work sharing
// ---------------------------------------------------------------------------------------------
//
// With several threads, the row-parallel phases (projections, the LM head, attention's (token,
// head) pairs) hand out their work in chunks from one shared counter instead of splitting it
// evenly ahead of time. On a shared machine one thread is often held up (another process, V8's
// GC or compiler threads, a descheduled vCPU), and with a fixed split every other thread then
// waits for it at the barrier (a CPU profile of 2B-4T decode at 2 threads put 15-22 % of each
// thread's samples there). A chunk is about CHUNK_BYTES of weights (prefill: the kernels' L2
// tile), so the counter is touched a few dozen times per matrix.
//
// The counter never goes back within a forward: a thread takes tickets until it draws one past
// the phase's chunks, so every thread overshoots exactly once and a phase of `count` chunks moves
// the counter by count + nT. Each thread tracks where the next phase starts on its own (a
// per-instance, hence per-thread, global), so no phase resets the counter; run() zeroes it before
// each job. Every thread must therefore run every phase's take loop, with the same count.
// Which thread computes a row never changes its bits: every output is one kernel call's own.
// One thread takes each phase as a single chunk, the same calls as without work sharing.

/** Ticket of this phase's chunk 0, its chunk count, and the first ticket of the next phase. */
let phaseBase: i32 = 0;
let phaseCount: i32 = 0;
let phaseEnd: i32 = 0;
/** One thread: the next chunk, without atomics. */
let localNext: i32 = 0;

@inline function beginPhase(count: i32, nT: i32): void {
  phaseBase = phaseEnd;
  phaseCount = count;
  phaseEnd += count + nT;
  localNext = 0;
}

/** The next chunk of the phase for this thread, or -1: then the phase is done for it. */
@inline function nextChunk(rc: usize, nT: i32): i32 {
  const c = nT > 1 ? atomic.add<i32>(rc + RC_TICKET, 1) - phaseBase : localNext++;
  return c < phaseCount ? c : -1;
}

/**
 * Rows per work chunk of a matrix (weight type, k columns, n rows) at m tokens. One thread: all
 * of them. Prefill (more than one group of 4 tokens): at most the kernels' own tile of about
 * TILE_BYTES, which they walk every token group over; otherwise the nearest count to the chunk
 * bytes of weights. Always a multiple of 16 (the TL tiles; the 4-row and 2-row kernels keep their
 * pairs).
 */
function chunkRows(rc: usize, type: i32, k: i32, n: i32, m: i32, nT: i32): i32 {
  if (nT <= 1) return n;
  const rb = max(1, type == T_TQ2 ? (k >> 8) * 66 : type == T_TQ1 ? (k >> 8) * 54 : type == T_I2S ? k >> 2 : row_bytes(type, k));
  const over = load<i32>(rc, 60);
  if (over <= 0 && (m & ~3) > 4) return max(16, (<i32>TILE_BYTES / rb) & ~15);
  return max(16, ((over > 0 ? over : CHUNK_BYTES) / rb + 8) & ~15);
}

// ---------------------------------------------------------------------------------------------
// Scratch layout
// ---------------------------------------------------------------------------------------------

@inline function al(x: usize): usize {
  return (x + 63) & ~(<usize>63);
}

/** Offsets of the shared buffers for mCap tokens (per-instance globals, set by layout()). */
let L_W: usize = 0;
let L_W16: usize = 0;
let L_nbMax: usize = 0;
let L_X: usize = 0;
let L_XN: usize = 0;
let L_Q8: usize = 0;
let L_QS: usize = 0;
let L_QSUM: usize = 0;
let L_BSUM: usize = 0;
let L_QV: usize = 0;
let L_KV: usize = 0;
let L_VV: usize = 0;
let L_ATT: usize = 0;
let L_G: usize = 0;
let L_U: usize = 0;
let L_XR: usize = 0;
let L_HID: usize = 0;
let L_HP: usize = 0;
let L_HPB: usize = 0;
let L_HG: usize = 0;
let L_HX: usize = 0;
let L_TAB: usize = 0;
let L_TABS: usize = 0;
let L_end: usize = 0;

function layout(md: usize, mCap: i32, base: usize): void {
  const nEmbd = <usize>load<i32>(md, 0);
  const nFF = <usize>load<i32>(md, 4);
  const kvDim = <usize>(load<i32>(md, 12) * load<i32>(md, 16));
  const m = <usize>mCap;
  const W = max(nEmbd, nFF);
  L_W = W;
  L_W16 = (W + 15) & ~(<usize>15);
  L_nbMax = (W + 255) >> 8;
  let p = al(base);
  L_X = p; p = al(p + 4 * m * nEmbd);
  L_XN = p; p = al(p + 4 * m * W);
  L_Q8 = p; p = al(p + m * L_W16);
  L_QS = p; p = al(p + 4 * m);
  L_QSUM = p; p = al(p + 4 * m);
  L_BSUM = p; p = al(p + 4 * m * L_nbMax);
  L_QV = p; p = al(p + 4 * m * nEmbd);
  L_KV = p; p = al(p + 4 * m * kvDim);
  L_VV = p; p = al(p + 4 * m * kvDim);
  L_ATT = p; p = al(p + 4 * m * nEmbd);
  L_G = p; p = al(p + 4 * m * nFF);
  L_U = p; p = al(p + 4 * m * nFF);
  L_XR = p; p = al(p + 4 * m * W);
  L_HID = p; p = al(p + 4 * m * nEmbd);
  L_HPB = al(<usize>head_prep_bytes(<i32>nEmbd));
  L_HG = min(m, HEAD_GROUP);
  L_HP = p; p = al(p + L_HG * L_HPB);
  // the F16 head's f64 activations for headsMulti
  const hx = multiHead(md) && load<i32>(md, 44) == T_F16 ? <usize>head_f16m_stride(<i32>nEmbd) : 0;
  L_HX = p; p = al(p + L_HG * hx);
  const tl = load<i32>(md, 92);
  L_TABS = tl ? <usize>tl_table_bytes(tl, <i32>W) : 0;
  L_TAB = p; p = al(p + m * L_TABS);
  L_end = p;
}

/** Shared scratch bytes for mCap tokens. */
export function scratch_bytes(md: usize, mCap: i32): i32 {
  layout(md, mCap, 0);
  return <i32>L_end + 64;
}

/** Per-thread scratch bytes for contexts up to nCtx positions. */
export function thread_scratch_bytes(md: usize, nCtx: i32): i32 {
  const nEmbd = load<i32>(md, 0);
  const nFF = load<i32>(md, 4);
  const W = max(nEmbd, nFF);
  return <i32>al(<usize>attend_scratch_bytes(nCtx + 32, load<i32>(md, 16))) + <i32>al(<usize>(16 * W + 64)) + 64;
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/** Normalizes and quantizes m token rows (token-parallel). */
function normQuant(md: usize, src: usize, srcStride: i32, width: i32, normW: usize, m: i32, tid: i32, nT: i32): void {
  const eps = load<f64>(md, 64);
  const projFloat = load<i32>(md, 84);
  const projType = load<i32>(md, 88);
  for (let t = tid; t < m; t += nT) {
    const xn = L_XN + ((<usize>t * L_W) << 2);
    rmsnorm(src + ((<usize>t * <usize>srcStride) << 2), normW, width, eps, xn);
    if (projFloat) {
      round_act(projType, xn, width, L_XR + ((<usize>t * L_W) << 2));
    } else {
      const s = quantize_act(xn, width, L_Q8 + <usize>t * L_W16, L_QSUM + (<usize>t << 2), L_BSUM + ((<usize>t * L_nbMax) << 2));
      store<f32>(L_QS + (<usize>t << 2), s);
      const tl = load<i32>(md, 92);
      if (tl) tl_tables(tl, L_Q8 + <usize>t * L_W16, width, L_TAB + <usize>t * L_TABS);
    }
  }
}

/** Rows r0..r1 of one projection over m tokens: out[t·outStride + r]. TL images: their 16-row tiles from r0 (r0 a multiple of 16). */
function linearRows(lin: usize, m: i32, r0: i32, r1: i32, out: usize, outStride: i32, mode: i32, tscratch: usize): void {
  const type = load<i32>(lin, 0);
  const w = <usize>load<i32>(lin, 4);
  const k = load<i32>(lin, 8);
  const wscale = load<f32>(lin, 16);
  const oscale = load<f32>(lin, 20);
  const img = <usize>load<i32>(lin, 24);
  if (r0 >= r1) return;
  if (img != 0) {
    mm_tl(img, r0 >> 4, (r1 + 15) >> 4, m, L_TAB, <i32>L_TABS, L_QS, oscale, out, outStride, mode, tscratch);
  } else if (type == T_I2S) {
    mm_i2s(w, k, r0, r1, m, L_Q8, <i32>L_W16, L_QS, L_QSUM, wscale, oscale, out, outStride, mode);
  } else if (type == T_TQ2) {
    mm_tq2(w, k, r0, r1, m, L_Q8, <i32>L_W16, L_QS, L_BSUM, <i32>L_nbMax, oscale, out, outStride, mode);
  } else if (type == T_TQ1) {
    mm_tq1(w, k, r0, r1, m, L_Q8, <i32>L_W16, L_QS, L_BSUM, <i32>L_nbMax, oscale, out, outStride, mode);
  } else {
    for (let t = 0; t < m; t++) {
      mv_exact(type, w, k, r0, r1, L_XR + ((<usize>t * L_W) << 2), oscale, out + ((<usize>t * <usize>outStride) << 2), mode, tscratch);
    }
  }
}

@inline function linChunkRows(rc: usize, lin: usize, m: i32, nT: i32): i32 {
  return chunkRows(rc, load<i32>(lin, 0), load<i32>(lin, 8), load<i32>(lin, 12), m, nT);
}

@inline function linChunks(lin: usize, rows: i32): i32 {
  return (load<i32>(lin, 12) + rows - 1) / rows;
}

/** Chunk c (of `rows` rows) of one projection. */
@inline function linearChunk(lin: usize, c: i32, rows: i32, m: i32, out: usize, outStride: i32, mode: i32, tscratch: usize): void {
  const r0 = c * rows;
  linearRows(lin, m, r0, min(load<i32>(lin, 12), r0 + rows), out, outStride, mode, tscratch);
}

/** One projection as one phase: its chunks shared by the threads. */
function linear(rc: usize, lin: usize, m: i32, out: usize, outStride: i32, mode: i32, nT: i32, tscratch: usize): void {
  const rows = linChunkRows(rc, lin, m, nT);
  beginPhase(linChunks(lin, rows), nT);
  for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) linearChunk(lin, c, rows, m, out, outStride, mode, tscratch);
}

/** q, k and v as one phase (no barrier between them): q's chunks, then k's, then v's. */
function linearQKV(rc: usize, L: usize, m: i32, nEmbd: i32, kvDim: i32, nT: i32, tscratch: usize): void {
  const rq = linChunkRows(rc, L + 16, m, nT);
  const rk = linChunkRows(rc, L + 48, m, nT);
  const rv = linChunkRows(rc, L + 80, m, nT);
  const cq = linChunks(L + 16, rq);
  const ck = linChunks(L + 48, rk);
  beginPhase(cq + ck + linChunks(L + 80, rv), nT);
  for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) {
    if (c < cq) linearChunk(L + 16, c, rq, m, L_QV, nEmbd, 0, tscratch);
    else if (c < cq + ck) linearChunk(L + 48, c - cq, rk, m, L_KV, kvDim, 0, tscratch);
    else linearChunk(L + 80, c - cq - ck, rv, m, L_VV, kvDim, 0, tscratch);
  }
}

/** gate and up as one phase, each chunk's rows of both, then their gating (G = act(G)·U) for every token. */
function linearGateUp(rc: usize, L: usize, m: i32, nFF: i32, silu: i32, nT: i32, tscratch: usize): void {
  // gate and up have one shape (nFF rows): a chunk takes the same rows of both, sized by gate's type
  const rows = linChunkRows(rc, L + 144, m, nT);
  beginPhase(linChunks(L + 144, rows), nT);
  for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) {
    linearChunk(L + 144, c, rows, m, L_G, nFF, 0, tscratch);
    linearChunk(L + 176, c, rows, m, L_U, nFF, 0, tscratch);
    const r0 = c * rows;
    const r1 = min(nFF, r0 + rows);
    for (let t = 0; t < m; t++) {
      const o = (<usize>t * <usize>nFF + <usize>r0) << 2;
      gate_act(L_G + o, L_U + o, L_G + o, r1 - r0, silu);
    }
  }
}

/** Logits of token row t of HID into out (rows shared out in chunks). */
function head(md: usize, rc: usize, t: i32, out: usize, tid: i32, nT: i32, tscratch: usize): void {
  const nEmbd = load<i32>(md, 0);
  const nVocab = load<i32>(md, 28);
  const type = load<i32>(md, 44);
  const w = <usize>load<i32>(md, 48);
  const hid = L_HID + ((<usize>t * <usize>nEmbd) << 2);
  if (tid == 0) {
    if (type == T_Q8_0 || type == T_Q4_0) head_prep_q8_0(hid, nEmbd, L_HP);
    else if (type == T_Q6_K) head_prep_q8k(hid, nEmbd, L_HP);
    else round_act(type, hid, nEmbd, L_HP);
  }
  barrier(rc);
  const abs = <usize>load<i32>(md, 60);
  const rows = chunkRows(rc, type, nEmbd, nVocab, 1, nT);
  beginPhase((nVocab + rows - 1) / rows, nT);
  for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) {
    const r0 = c * rows;
    const r1 = min(nVocab, r0 + rows);
    if (type == T_Q8_0) head_q8_0(w, nEmbd, r0, r1, L_HP, 1, out, 0);
    else if (type == T_Q4_0) head_q4_0(w, nEmbd, r0, r1, L_HP, 1, out, 0);
    else if (type == T_Q6_K) head_q6_k(w, nEmbd, r0, r1, L_HP, 1, out, 0);
    else if (type == T_F16 && abs != 0) head_f16(w, nEmbd, r0, r1, L_HP, abs, 1, out, 0, tscratch);
    else mv_exact(type, w, nEmbd, r0, r1, L_HP, 1, out, 0, tscratch);
  }
  barrier(rc);
}

/** Whether headsMulti serves this model's head: the integer heads, or F16 with its row sums (the bracketed head). */
@inline function multiHead(md: usize): bool {
  const type = load<i32>(md, 44);
  return type == T_Q6_K || type == T_Q8_0 || type == T_Q4_0 || (type == T_F16 && load<i32>(md, 60) != 0);
}

/**
 * Logits of token rows first..m of HID into out (row t − first at nVocab·4 bytes each) for a head
 * multiHead() takes: the tokens' activations are prepared at once (token-parallel), then the rows
 * are walked in tiles of HEAD_TILE (shared out a tile a chunk), each tile by every group of tokens
 * in turn (Q6_K: 4, then 2, then 1 at a time; Q8_0, Q4_0: 4, then 1; F16: 2, then 1), so the tile
 * is read from memory once. The multi-token kernels unpack each weight once for their tokens;
 * every token gets the bits head() gives it alone.
 */
function headsMulti(md: usize, rc: usize, first: i32, m: i32, out: usize, tid: i32, nT: i32, tscratch: usize): void {
  const nEmbd = load<i32>(md, 0);
  const nVocab = load<i32>(md, 28);
  const type = load<i32>(md, 44);
  const f16 = type == T_F16;
  const q32 = type == T_Q8_0 || type == T_Q4_0;
  const w = <usize>load<i32>(md, 48);
  const abs = <usize>load<i32>(md, 60);
  const ostride = <usize>nVocab << 2;
  const xs = <usize>head_f16m_stride(nEmbd);
  const rows = nT > 1 ? HEAD_TILE : nVocab;
  for (let g0 = first; g0 < m; g0 += <i32>L_HG) {
    const g1 = min(m, g0 + <i32>L_HG);
    for (let t = g0 + tid; t < g1; t += nT) {
      const hid = L_HID + ((<usize>t * <usize>nEmbd) << 2);
      const P = L_HP + <usize>(t - g0) * L_HPB;
      if (f16) {
        round_act(T_F16, hid, nEmbd, P);
        head_f16m_prep(P, 0, nEmbd, 1, L_HX + <usize>(t - g0) * xs);
      } else if (q32) head_prep_q8_0(hid, nEmbd, P);
      else head_prep_q8k(hid, nEmbd, P);
    }
    barrier(rc);
    beginPhase((nVocab + rows - 1) / rows, nT);
    for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) {
      const r0 = c * rows;
      const r1 = min(nVocab, r0 + rows);
      for (let a = r0; a < r1; a += HEAD_TILE) {
        const b = min(r1, a + HEAD_TILE);
        let t = g0;
        // 4 tokens at a time (integer heads), then 2 (Q6_K, F16), then 1
        if (!f16) {
          for (; t + 4 <= g1; t += 4) {
            const P = L_HP + <usize>(t - g0) * L_HPB;
            const o = out + <usize>(t - first) * ostride;
            if (type == T_Q6_K) head_q6_k_4(w, nEmbd, a, b, P, L_HPB, o, ostride);
            else if (type == T_Q8_0) head_q8_0_4(w, nEmbd, a, b, P, L_HPB, o, ostride);
            else head_q4_0_4(w, nEmbd, a, b, P, L_HPB, o, ostride);
          }
        }
        if (!q32) {
          for (; t + 2 <= g1; t += 2) {
            const P = L_HP + <usize>(t - g0) * L_HPB;
            const o = out + <usize>(t - first) * ostride;
            if (f16) head_f16_2(w, nEmbd, a, b, L_HX + <usize>(t - g0) * xs, P, L_HPB, abs, o, ostride, tscratch);
            else head_q6_k_2(w, nEmbd, a, b, P, L_HPB, o, ostride);
          }
        }
        for (; t < g1; t++) {
          const P = L_HP + <usize>(t - g0) * L_HPB;
          const o = out + <usize>(t - first) * ostride;
          if (f16) head_f16(w, nEmbd, a, b, P, abs, 1, o, 0, tscratch);
          else if (type == T_Q6_K) head_q6_k(w, nEmbd, a, b, P, 1, o, 0);
          else if (type == T_Q8_0) head_q8_0(w, nEmbd, a, b, P, 1, o, 0);
          else head_q4_0(w, nEmbd, a, b, P, 1, o, 0);
        }
      }
    }
    barrier(rc);
  }
}

/** Position of token t: its batch record's, else pos0 + t (see RC 56). */
@inline function tokPos(seqs: usize, pos0: i32, t: i32): i32 {
  return seqs != 0 ? load<i32>(seqs + (<usize>t << 3)) : pos0 + t;
}

/** Address of token t's kvBlocks table: its batch record's, else the one table. */
@inline function tokBlocks(seqs: usize, blocks: usize, t: i32): usize {
  return seqs != 0 ? <usize>load<u32>(seqs + (<usize>t << 3), 4) : blocks;
}

export function forward(rc: usize, tid: i32): void {
  const md = <usize>load<i32>(rc, 48);
  const m = load<i32>(rc, 0);
  const nT = load<i32>(rc, 28);
  layout(md, load<i32>(rc, 36), <usize>load<i32>(rc, 32));
  phaseEnd = 0; // run() zeroed the ticket counter
  barrierSpins = load<i32>(rc, 260) > 0 ? load<i32>(rc, 260) : BARRIER_SPINS;
  const tscratch = <usize>load<i32>(rc, 40) + <usize>tid * <usize>load<i32>(rc, 44);
  const scores = tscratch;
  const nCtxScratch = al(<usize>attend_scratch_bytes(load<i32>(rc, 8) + m + 32, load<i32>(md, 16)));
  const tscratch2 = tscratch + nCtxScratch;

  const nEmbd = load<i32>(md, 0);
  const nFF = load<i32>(md, 4);
  const nHead = load<i32>(md, 8);
  const nHeadKv = load<i32>(md, 12);
  const headDim = load<i32>(md, 16);
  const nRot = load<i32>(md, 20);
  const nLayer = load<i32>(md, 24);
  const silu = load<i32>(md, 32);
  const kvDim = nHeadKv * headDim;
  const group = nHead / nHeadKv;
  const attnScale = load<f64>(md, 72);
  const kvLayerBytes = <usize>load<i32>(md, 80);
  const tokens = <usize>load<i32>(rc, 4);
  const pos0 = load<i32>(rc, 8);
  const rope = <usize>load<i32>(rc, 12);
  const blocks = <usize>load<i32>(rc, 16);
  const seqs = <usize>load<i32>(rc, 56);
  const ropeStride = <usize>nRot << 2;

  // ---- embeddings (token-parallel)
  const embdType = load<i32>(md, 36);
  const embd = <usize>load<i32>(md, 40);
  const embdRow = <usize>row_bytes(embdType, nEmbd);
  for (let t = tid; t < m; t += nT) {
    const id = <usize>load<i32>(tokens + (<usize>t << 2));
    dequant_row(embdType, embd + id * embdRow, nEmbd, L_X + ((<usize>t * <usize>nEmbd) << 2), 4);
  }

  const layers = <usize>load<i32>(md, 56);
  for (let l = 0; l < nLayer; l++) {
    const L = layers + <usize>(l * LAYER_BYTES);
    const layerOff = <usize>l * kvLayerBytes;
    barrier(rc);
    // ---- attention block
    normQuant(md, L_X, nEmbd, nEmbd, <usize>load<i32>(L, 0), m, tid, nT);
    barrier(rc);
    linearQKV(rc, L, m, nEmbd, kvDim, nT, tscratch2);
    barrier(rc);
    for (let t = tid; t < m; t += nT) {
      const qv = L_QV + ((<usize>t * <usize>nEmbd) << 2);
      const kv = L_KV + ((<usize>t * <usize>kvDim) << 2);
      const cs = rope + <usize>t * ropeStride;
      for (let h = 0; h < nHead; h++) rope_head(qv + ((<usize>(h * headDim)) << 2), nRot, cs);
      for (let h = 0; h < nHeadKv; h++) rope_head(kv + ((<usize>(h * headDim)) << 2), nRot, cs);
      const pos = tokPos(seqs, pos0, t);
      const block = <usize>load<u32>(tokBlocks(seqs, blocks, t) + (<usize>(pos / 16) << 2));
      kv_store(kv, L_VV + ((<usize>t * <usize>kvDim) << 2), kvDim, headDim, block, layerOff, pos);
      f16_round_vec(qv, qv, nEmbd);
    }
    barrier(rc);
    // (token, head) pairs shared out in chunks: about 8 a thread, or one head each (decode).
    // Later tokens of a prompt attend over more positions, so an even split would not be even.
    {
      const items = m * nHead;
      const per = nT > 1 ? max(1, items / (8 * nT)) : items;
      beginPhase((items + per - 1) / per, nT);
      for (let c = nextChunk(rc, nT); c >= 0; c = nextChunk(rc, nT)) {
        const i1 = min(items, (c + 1) * per);
        for (let i = c * per; i < i1; ) {
          const t = i / nHead;
          const h0 = i % nHead;
          const h1 = min(nHead, h0 + (i1 - i));
          attend(L_QV + ((<usize>t * <usize>nEmbd) << 2), L_ATT + ((<usize>t * <usize>nEmbd) << 2), h0, h1, headDim, group, kvDim, tokPos(seqs, pos0, t) + 1, tokBlocks(seqs, blocks, t), layerOff, attnScale, scores);
          i += h1 - h0;
        }
      }
    }
    barrier(rc);
    normQuant(md, L_ATT, nEmbd, nEmbd, <usize>load<i32>(L, 4), m, tid, nT);
    barrier(rc);
    linear(rc, L + 112, m, L_X, nEmbd, 1, nT, tscratch2); // x += Wo·(...)
    barrier(rc);
    // ---- feed-forward block
    normQuant(md, L_X, nEmbd, nEmbd, <usize>load<i32>(L, 8), m, tid, nT);
    barrier(rc);
    linearGateUp(rc, L, m, nFF, silu, nT, tscratch2);
    barrier(rc);
    normQuant(md, L_G, nFF, nFF, <usize>load<i32>(L, 12), m, tid, nT);
    barrier(rc);
    linear(rc, L + 208, m, L_X, nEmbd, 1, nT, tscratch2); // x += Wdown·(...)
  }
  barrier(rc);
  // ---- output norm and logits
  const mode = load<i32>(rc, 20);
  const first = mode >= 2 ? 0 : m - 1;
  const eps = load<f64>(md, 64);
  const onorm = <usize>load<i32>(md, 52);
  for (let t = first + tid; t < m; t += nT) {
    rmsnorm(L_X + ((<usize>t * <usize>nEmbd) << 2), onorm, nEmbd, eps, L_HID + ((<usize>t * <usize>nEmbd) << 2));
  }
  barrier(rc);
  const hidOut = <usize>load<i32>(rc, 52);
  if (hidOut != 0 && tid == 0) {
    memory.copy(hidOut, L_HID + ((<usize>first * <usize>nEmbd) << 2), (<usize>(m - first) * <usize>nEmbd) << 2);
  }
  if (mode == 1 || mode == 2) {
    const logits = <usize>load<i32>(rc, 24);
    const nVocab = <usize>load<i32>(md, 28);
    if (m - first > 1 && multiHead(md)) headsMulti(md, rc, first, m, logits, tid, nT, tscratch2);
    else for (let t = first; t < m; t++) head(md, rc, t, logits + ((<usize>(t - first) * nVocab) << 2), tid, nT, tscratch2);
  }
  barrier(rc);
}
