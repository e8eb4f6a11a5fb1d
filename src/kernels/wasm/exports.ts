/**
 * The one typed declaration of the kernel module's surface (wasm/src/index.ts): its imports and
 * exports, and the descriptor offsets shared with wasm/src/forward.ts. Everything else in the
 * code base talks to the wasm through these types.
 *
 * Pointers are byte offsets into the shared memory (i32). All sizes are in bytes unless noted.
 */

/** What the module imports. `exp` must be the host's Math.exp (the exact fallback of expF32/siluF32). */
export interface KernelImports {
  env: {
    memory: WebAssembly.Memory;
    exp: (x: number) => number;
    abort: (msg: number, file: number, line: number, col: number) => never;
  };
}

/** TQ2_0 / TQ1_0 matmul: f16 block scales at `scales`, 256-block activation sums at `bsum`. */
export type TqMatmul = (
  w: number,
  k: number,
  r0: number,
  r1: number,
  m: number,
  q: number,
  qStride: number,
  scales: number,
  bsum: number,
  bsStride: number,
  oscale: number,
  out: number,
  outStride: number,
  mode: number,
) => void;

/**
 * An integer head for several tokens at once: rows r0..r1, token t's activations at P + t·pstride
 * (head_prep_*), its logits stored at out + t·ostride.
 */
export type MultiTokenHead = (
  w: number,
  k: number,
  r0: number,
  r1: number,
  P: number,
  pstride: number,
  out: number,
  ostride: number,
) => void;

export interface KernelExports {
  // tables and self-test
  init_tables(table: number): void;
  set_tables(table: number): void;
  selftest(p: number, out: number): void;
  // activation quantization (returns the f32 scale; writes Σq and 256-block sums)
  absmax(x: number, n: number): number;
  quantize_act(x: number, k: number, q: number, sumOut: number, bsum: number): number;
  // ternary matmuls: out[t·outStride + r] for rows r0..r1, tokens 0..m; mode 0 store, 1 add
  mm_i2s(
    w: number,
    k: number,
    r0: number,
    r1: number,
    m: number,
    q: number,
    qStride: number,
    scales: number,
    sums: number,
    wscale: number,
    oscale: number,
    out: number,
    outStride: number,
    mode: number,
  ): void;
  mm_tq2: TqMatmul;
  mm_tq1: TqMatmul;
  // TL1 / TL2 lookup-table kernels over tile images (src/quant/tl.ts)
  tl_table_bytes(layout: number, k: number): number;
  tl_tables(layout: number, q: number, k: number, out: number): void;
  mm_tl(
    img: number,
    tile0: number,
    tile1: number,
    m: number,
    tables: number,
    tableStride: number,
    scales: number,
    oscale: number,
    out: number,
    outStride: number,
    mode: number,
    scratch: number,
  ): void;
  // element-wise ops
  expF32(x: number): number;
  siluF32(g: number): number;
  rmsnorm(x: number, w: number, n: number, eps: number, out: number): void;
  rope_head(x: number, nRot: number, cs: number): void;
  f16_round_vec(src: number, dst: number, n: number): void;
  gate_act(gate: number, up: number, out: number, n: number, silu: number): void;
  add_vec(out: number, y: number, n: number): void;
  // attention over the KV mirror
  attend(
    q: number,
    out: number,
    h0: number,
    h1: number,
    headDim: number,
    group: number,
    kvDim: number,
    nPos: number,
    blocks: number,
    layerOff: number,
    attnScale: number,
    scores: number,
  ): void;
  kv_store(k: number, v: number, kvDim: number, headDim: number, block: number, layerOff: number, pos: number): void;
  /** Scratch bytes attend() needs for nPos positions (wasm/src/attention.ts). */
  attend_scratch_bytes(nPos: number, headDim: number): number;
  // float / quantized-float rows (projections, head, embeddings)
  row_bytes(type: number, k: number): number;
  dequant_row(type: number, src: number, k: number, out: number, stride: number): void;
  round_act(type: number, x: number, k: number, xr: number): void;
  mv_exact(
    type: number,
    w: number,
    k: number,
    r0: number,
    r1: number,
    xr: number,
    oscale: number,
    out: number,
    mode: number,
    scratch: number,
  ): void;
  row_abs_sums(type: number, w: number, k: number, r0: number, r1: number, out: number, scratch: number): void;
  head_prep_bytes(k: number): number;
  head_prep_q8_0(x: number, k: number, P: number): void;
  head_prep_q8k(x: number, k: number, P: number): void;
  /** Integer heads (wasm/src/inthead.ts); P from head_prep_q8_0 (Q8_0, Q4_0) or head_prep_q8k (Q6_K). */
  head_q8_0(w: number, k: number, r0: number, r1: number, P: number, oscale: number, out: number, mode: number): void;
  head_q4_0(w: number, k: number, r0: number, r1: number, P: number, oscale: number, out: number, mode: number): void;
  head_q6_k(w: number, k: number, r0: number, r1: number, P: number, oscale: number, out: number, mode: number): void;
  /**
   * Q6_K head for 2 or 4 tokens at once (each code unpacked once), Q8_0 / Q4_0 heads for 4: each
   * token's bits those of the one-token kernel (wasm/src/inthead.ts).
   */
  head_q6_k_2: MultiTokenHead;
  head_q6_k_4: MultiTokenHead;
  head_q8_0_4: MultiTokenHead;
  head_q4_0_4: MultiTokenHead;
  /** Bytes of one token's buffer for head_f16_2 (wasm/src/headf16m.ts). */
  head_f16m_stride(k: number): number;
  /** The buffers (at X) of T tokens whose rounded activations are at xr + t·xrStride. */
  head_f16m_prep(xr: number, xrStride: number, k: number, T: number, X: number): void;
  /** F16 head for two tokens at once; each token's rows the bits head_f16 gives it. scratch: 4k bytes. */
  head_f16_2(
    w: number,
    k: number,
    r0: number,
    r1: number,
    X: number,
    xr: number,
    xrStride: number,
    absSums: number,
    out: number,
    ostride: number,
    scratch: number,
  ): void;
  head_f16(
    w: number,
    k: number,
    r0: number,
    r1: number,
    xr: number,
    absSums: number,
    oscale: number,
    out: number,
    mode: number,
    scratch: number,
  ): void;
  /** Rows recomputed by the exact fallback in this instance since the last call. */
  head_fallbacks(): number;
  // the SPMD forward pass
  scratch_bytes(md: number, mCap: number): number;
  thread_scratch_bytes(md: number, nCtx: number): number;
  run(rc: number): void;
  worker_loop(rc: number, tid: number, seen: number): void;
  stop_workers(rc: number): void;
  forward(rc: number, tid: number): void;
  barrier(rc: number): void;
}

/** KV mirror: positions per block (attention.ts KV_BT). */
export const KV_BT = 16;

/** Model descriptor (MD) field offsets, wasm/src/forward.ts. */
export const MD = {
  nEmbd: 0,
  nFF: 4,
  nHead: 8,
  nHeadKv: 12,
  headDim: 16,
  nRot: 20,
  nLayer: 24,
  nVocab: 28,
  silu: 32,
  embdType: 36,
  embdPtr: 40,
  headType: 44,
  headPtr: 48,
  outputNorm: 52,
  layers: 56,
  headAbsSums: 60,
  rmsEps: 64, // f64
  attnScale: 72, // f64
  kvLayerBytes: 80,
  projFloat: 84,
  projType: 88,
  tlLayout: 92,
  BYTES: 128,
} as const;

export const LAYER = { attnNorm: 0, attnSubNorm: 4, ffnNorm: 8, ffnSubNorm: 12, lin0: 16, BYTES: 256 } as const;
/** A linear inside a layer: at LAYER.lin0 + LIN.BYTES·j, j = q, k, v, o, gate, up, down. */
export const LIN = { type: 0, ptr: 4, k: 8, n: 12, wscale: 16, oscale: 20, aux: 24, BYTES: 32 } as const;

/** Run context (RC) field offsets. */
export const RC = {
  m: 0,
  tokens: 4,
  pos0: 8,
  rope: 12,
  kvBlocks: 16,
  logitsMode: 20,
  logits: 24,
  nThreads: 28,
  scratch: 32,
  mCap: 36,
  threadScratch: 40,
  threadScratchBytes: 44,
  md: 48,
  hiddenOut: 52,
  /** Batched decode: per token (i32 position, u32 kvBlocks table address); 0 = one sequence. */
  seqs: 56,
  /** Weight bytes per work chunk of the row-parallel phases with several threads (0: the kernel's 64 KiB). */
  workChunkBytes: 60,
  barrierCount: 64,
  barrierSleepers: 68,
  barrierGen: 128,
  jobSeq: 192,
  exit: 256,
  /** Spins at a barrier before a thread sleeps (0: the kernel's ~0.2 ms; forward.ts BARRIER_SPINS). */
  barrierSpins: 260,
  /** The work-sharing ticket counter (wasm/src/forward.ts, "Work sharing"). */
  workTicket: 320,
  BYTES: 384,
} as const;

/** RC.logitsMode: Hidden = final hidden states of every token into RC.hiddenOut, no logits. */
export const LogitsMode = { None: 0, Last: 1, All: 2, Hidden: 3 } as const;
