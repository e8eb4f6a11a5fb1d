/**
 * The wasm backend: the whole forward pass in the kernel module (wasm/src/forward.ts), SPMD over
 * 1..N threads sharing one WebAssembly.Memory. Logits equal the reference backend's bit for bit
 * (test/conformance/).
 *
 * KV. The engine's KVStore stays the source of truth (the Backend contract): after each call the
 * new positions' K/V are written to it. The kernels read a mirror of it in wasm memory (f32 values
 * of the f16-rounded K/V, in the layout of attention.ts), one per KVStore object, kept in sync:
 * positions the mirror lacks are read from the store; a spot check of the last shared position
 * catches a store that was rewritten behind our back (the mirror is then rebuilt from the store).
 *
 * Batched decode. Decode steps (one token, logits of it) of different sequences that are waiting
 * at the same time run as one batch: the kernels take each token's position and KV table
 * (wasm/src/forward.ts, RC.seqs), so every projection streams its weights once for the whole
 * batch instead of once per sequence. A step waits one macrotask turn before it runs, so the
 * sequences whose previous step just resolved (their engine loops sample, then call forward
 * again) join it. Each row equals that sequence's unbatched decode bit for bit (token-parallel
 * phases are per token; the matmuls' integer sums are exact and their epilogues per output).
 *
 * Threads. numThreads > 1 starts a Node worker pool (./node-pool.ts, imported lazily on the first
 * forward, so nothing Node-specific is loaded elsewhere); where worker_threads is missing the
 * backend runs on one thread and says why in `threadsNote`.
 */
import { BitNetError } from '../../errors.ts';
import type { HParams } from '../../model/hparams.ts';
import type { LoadedModel } from '../../model/load.ts';
import type { KVStore } from '../../model/reference.ts';
import type { ModelWeights } from '../../model/weights.ts';
import type { TLLayout } from '../../quant/tl.ts';
import { throwIfCancelled } from '../../util/abort.ts';
import { defer, nextTurn } from '../../util/turn.ts';
import type { Backend, ForwardRequest } from '../backend.ts';
import { Arena, PAGE } from './arena.ts';
import { type KernelExports, KV_BT, LogitsMode, MD, RC } from './exports.ts';
import { createMemory, instantiate, type KernelBuild, type KernelModules, selectKernels } from './loader.ts';
import {
  BRACKET_HEADS,
  buildModelImage,
  type ImageSource,
  type ModelImage,
  wasmUnsupportedReason,
} from './model-image.ts';
import { arenaOf } from './weight-arena.ts';

export interface WasmBackendOptions {
  numThreads?: number;
  /** Force one build (default: the best that passes its self-test). */
  build?: KernelBuild;
  modules?: KernelModules;
  /** Re-point the weight table at the copies in wasm memory (default true; see model-image.ts). */
  adoptWeights?: boolean;
  /** Tokens per prefill chunk (default 64). */
  chunk?: number;
  /**
   * Ternary kernel family: 'file' (default) computes straight from the model's bytes; 'tl1' / 'tl2'
   * repack every projection at load time into the lookup-table tile images of src/quant/tl.ts
   * (extra memory: 2 and 2.67 bits per weight) and run the swizzle kernels of wasm/src/tl.ts.
   * A shard pack converted with --layout tl1|tl2 holds those images already: 'file' (or the same
   * layout) runs them as they are; asking for the other TL layout is refused (Config
   * WASM_LAYOUT_MISMATCH) rather than silently ignored or re-packed.
   */
  layout?: 'file' | TLLayout;
  /**
   * KV mirrors kept (one per live sequence; least recently used dropped first, and rebuilt from
   * the store if that sequence runs again). Default 8. Blocks come from a free list, so memory
   * follows the positions of the sequences actually running, not this cap.
   */
  maxMirrors?: number;
  /**
   * Most decode steps of concurrent sequences run as one batch (default 8; at most 16, maxMirrors
   * and chunk; 1 runs every step on its own).
   */
  maxBatch?: number;
  /**
   * With several threads, the projections, the LM head and attention are shared out in chunks of
   * about this many weight bytes, taken from a shared counter so that a thread held up by the
   * machine leaves its rest to the others. Default: 64 KiB in decode, the kernels' 128 KiB tiles in
   * prefill; a value given here applies to both. Any size gives the same bits; tests set a small
   * one to have many chunks on a tiny model.
   */
  workChunkBytes?: number;
}

/** What a thread pool must offer the backend (implemented by node-pool.ts). */
export interface ThreadPool {
  readonly size: number;
  dispose(): void;
}

interface Mirror {
  blocks: number[];
  len: number;
}

const LOGIT_ROWS_ALL = 8; // logits rows computed per call in 'all' mode
const MAX_BATCH = 16; // decode steps per batch at most
/**
 * Prefill chunk while other sequences' decode steps wait: those run between chunks, so this bounds
 * their stall. On 2B-4T (1 thread) 16 tokens take ~0.75 s where 64 take ~3 s, at ~10 % less prefill
 * speed than 64.
 */
const SHARED_CHUNK = 16;

/** A decode step waiting for the next batch. */
interface PendingStep {
  req: ForwardRequest;
  resolve(rows: Float32Array[]): void;
  reject(e: unknown): void;
}

/**
 * Barrier spins for `threads` threads (RC.barrierSpins; 0 = the kernel's ~0.2 ms). With more
 * threads than the host has cores, a thread spinning at a barrier holds a core that a thread it
 * waits for needs, so it spins briefly (~28 µs) and sleeps. 4 threads on 2 cores, 2B-4T decode,
 * 3 rounds: 5.8-6.5 tok/s with the long spin, 7.3-8.5 with the short one (7.1-7.7 before work
 * sharing).
 */
export function barrierSpinsFor(threads: number, cores: number | undefined): number {
  return cores !== undefined && threads > cores ? SHORT_BARRIER_SPINS : 0;
}
const SHORT_BARRIER_SPINS = 1 << 14;

/** Stops a collected backend's workers (they hold the memory, not the backend). */
const poolReaper = new FinalizationRegistry<{ stop: () => void }>((h) => h.stop());

/**
 * The reaper's held value. Built out here, not in a method: a closure made inside one keeps that
 * method's context, and with it `this`, alive, so the registry's own held value would keep the
 * backend from ever being collected (its workers then ran until the process ended).
 */
function poolStopper(k: KernelExports, rc: number, pool: ThreadPool): { stop: () => void } {
  return {
    stop: () => {
      k.stop_workers(rc);
      pool.dispose();
    },
  };
}

export class WasmBackend implements Backend {
  readonly name = 'wasm';
  readonly rebuildsFromStore = true;
  readonly vocabSize: number;
  readonly build: KernelBuild;
  readonly hp: HParams;
  readonly requestedThreads: number;
  threadsNote = '';
  private readonly memory: WebAssembly.Memory;
  private readonly arena: Arena;
  private readonly k: KernelExports;
  private readonly module: WebAssembly.Module;
  private readonly image: ModelImage;
  private readonly rc: number;
  private readonly mCap: number;
  private readonly f16Table: number;
  private readonly tokensPtr: number;
  private readonly ropePtr: number;
  /** maxBatch kvBlocks tables of maxBlocks entries (table 0 serves single-sequence chunks). */
  private readonly blocksPtr: number;
  /** Batch records: per token (i32 position, u32 table address), RC.seqs. */
  private readonly seqsPtr: number;
  readonly maxBatch: number;
  /**
   * Decode steps run so far (kernel runs, sequences they served, the largest batch) and the chunks
   * of prompts longer than one token (those shortened to SHARED_CHUNK: decode steps waited).
   */
  readonly decodeStats = { runs: 0, steps: 0, largestBatch: 0, prefillChunks: 0, sharedPrefillChunks: 0 };
  private pending: PendingStep[] = [];
  private flushScheduled = false;
  private readonly logitsPtr: number;
  private readonly maxBlocks: number;
  private readonly blockBytes: number;
  private readonly freeBlocks: number[] = [];
  private readonly mirrors = new Map<KVStore, Mirror>();
  private readonly maxMirrors: number;
  private readonly thetaScale: number;
  private pool: ThreadPool | undefined;
  private poolStart: Promise<void> | undefined;
  private threads = 1;
  private disposed = false;
  private hiddenBuf = 0;

  private constructor(hp: HParams, w: ModelWeights, opts: WasmBackendOptions, source: ImageSource | undefined) {
    const why = wasmUnsupportedReason(hp, w);
    if (why)
      throw BitNetError.Device('BACKEND_UNAVAILABLE', `the wasm backend cannot run this model: ${why}`, {
        backend: 'wasm',
        reason: why,
      });
    const packed = w.layers[0]?.wq.layout;
    if (packed && (opts.layout === 'tl1' || opts.layout === 'tl2') && opts.layout !== packed) {
      throw BitNetError.Config(
        'WASM_LAYOUT_MISMATCH',
        `the model's projections are ${packed} images; the wasm backend was asked for ${opts.layout} (use 'file' or '${packed}', or convert the model again)`,
        { backend: 'wasm', layout: opts.layout, modelLayout: packed },
      );
    }
    const sel = selectKernels({ prefer: opts.build, modules: opts.modules });
    this.build = sel.build;
    this.module = sel.module;
    this.hp = hp;
    this.vocabSize = hp.nVocab;
    this.requestedThreads = Math.max(1, Math.floor(opts.numThreads ?? 1));
    this.mCap = Math.max(1, Math.floor(opts.chunk ?? 64));
    this.maxMirrors = Math.max(1, opts.maxMirrors ?? 8);
    // a batch's mirrors must all stay live while it is assembled (LRU eviction), and its tokens
    // fit the scratch (mCap)
    this.maxBatch = Math.max(1, Math.min(Math.floor(opts.maxBatch ?? 8), MAX_BATCH, this.maxMirrors, this.mCap));
    // weights loaded straight into a WeightArena: adopt its memory, copy nothing
    const wa = arenaOf(w.tokenEmbd.bytes) ?? arenaOf(w.layers[0]?.wq.bytes ?? new Uint8Array(0));
    this.memory = wa?.memory ?? createMemory(16);
    this.arena = wa?.arena ?? new Arena(this.memory, PAGE);
    this.k = instantiate(this.module, this.memory);
    this.f16Table = this.arena.alloc(65536 * 4);
    this.k.init_tables(this.f16Table);
    const tl = opts.layout === 'tl1' || opts.layout === 'tl2' ? opts.layout : undefined;
    this.image = buildModelImage(this.arena, hp, w, { adopt: opts.adoptWeights ?? true, source, weightArena: wa, tl });
    const md = this.image.md;
    if (BRACKET_HEADS.has(w.output.type)) {
      const abs = this.arena.alloc(16 * hp.nVocab);
      const scratch = this.arena.alloc(4 * hp.nEmbd + 64);
      this.k.row_abs_sums(
        w.output.type,
        this.arena.view().getInt32(md + MD.headPtr, true),
        hp.nEmbd,
        0,
        hp.nVocab,
        abs,
        scratch,
      );
      this.arena.view().setInt32(md + MD.headAbsSums, abs, true);
    }
    // run context and per-call buffers
    this.rc = this.arena.alloc(RC.BYTES, 64);
    this.arena.u8(this.rc, RC.BYTES).fill(0);
    this.tokensPtr = this.arena.alloc(4 * this.mCap);
    this.ropePtr = this.arena.alloc(4 * this.mCap * hp.nRot);
    this.maxBlocks = Math.ceil(hp.nCtx / KV_BT) + 1;
    this.blocksPtr = this.arena.alloc(4 * this.maxBlocks * this.maxBatch);
    this.seqsPtr = this.arena.alloc(8 * this.maxBatch);
    this.logitsPtr = this.arena.alloc(4 * hp.nVocab * Math.max(LOGIT_ROWS_ALL, this.maxBatch));
    const scratch = this.arena.alloc(this.k.scratch_bytes(md, this.mCap));
    const tsb = this.k.thread_scratch_bytes(md, hp.nCtx + this.mCap);
    const tscratch = this.arena.alloc(tsb * this.requestedThreads);
    this.blockBytes = hp.nLayer * this.image.kvLayerBytes;
    const dv = this.arena.view();
    dv.setInt32(this.rc + RC.md, md, true);
    dv.setInt32(this.rc + RC.scratch, scratch, true);
    dv.setInt32(this.rc + RC.mCap, this.mCap, true);
    dv.setInt32(this.rc + RC.threadScratch, tscratch, true);
    dv.setInt32(this.rc + RC.threadScratchBytes, tsb, true);
    dv.setInt32(this.rc + RC.tokens, this.tokensPtr, true);
    dv.setInt32(this.rc + RC.rope, this.ropePtr, true);
    dv.setInt32(this.rc + RC.kvBlocks, this.blocksPtr, true);
    dv.setInt32(this.rc + RC.logits, this.logitsPtr, true);
    dv.setInt32(this.rc + RC.nThreads, 1, true);
    dv.setInt32(
      this.rc + RC.workChunkBytes,
      Math.max(0, Math.min(2 ** 30, Math.floor(opts.workChunkBytes ?? 0))),
      true,
    );
    this.thetaScale = Math.fround(hp.ropeFreqBase ** (-2 / hp.nRot));
  }

  /**
   * Builds the backend synchronously: compiles or reuses the kernel module and places the weights
   * in wasm memory (re-read from the model's local file when there is one, see model-image.ts).
   */
  static create(
    model: Pick<LoadedModel, 'hparams' | 'weights'> & Partial<Pick<LoadedModel, 'file' | 'location'>>,
    opts: WasmBackendOptions = {},
  ): WasmBackend {
    const source: ImageSource | undefined = model.file
      ? { tensors: model.file.tensorsByName, location: model.location, size: model.file.source.size }
      : undefined;
    return new WasmBackend(model.hparams, model.weights, opts, source);
  }

  /** Threads in use (1 until the pool has started). */
  get numThreads(): number {
    return this.threads;
  }

  /** Bytes of wasm memory in use (weights, scratch, KV mirrors). */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  get weightBytes(): number {
    return this.image.weightBytes;
  }

  private async ensurePool(): Promise<void> {
    if (this.requestedThreads <= 1 || this.pool || this.threadsNote) return;
    this.poolStart ??= (async () => {
      try {
        const { startNodePool } = await import('./node-pool.ts');
        this.pool = await startNodePool({
          module: this.module,
          memory: this.memory,
          rc: this.rc,
          f16Table: this.f16Table,
          workers: this.requestedThreads - 1,
        });
        this.threads = this.pool.size + 1;
        this.arena.view().setInt32(this.rc + RC.nThreads, this.threads, true);
        const cores = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
        this.arena.view().setInt32(this.rc + RC.barrierSpins, barrierSpinsFor(this.threads, cores), true);
        poolReaper.register(this, poolStopper(this.k, this.rc, this.pool), this);
      } catch (e) {
        this.threadsNote = `running on 1 thread: ${(e as Error).message}`;
      }
    })();
    await this.poolStart;
  }

  // ------------------------------------------------------------------------------------------
  // KV mirror
  // ------------------------------------------------------------------------------------------

  private allocBlock(): number {
    return this.freeBlocks.pop() ?? this.arena.alloc(this.blockBytes, 64);
  }

  private mirrorFor(kv: KVStore): Mirror {
    let m = this.mirrors.get(kv);
    if (m) {
      this.mirrors.delete(kv); // re-insert: most recently used last
      this.mirrors.set(kv, m);
      return m;
    }
    while (this.mirrors.size >= this.maxMirrors) {
      const [oldKey, old] = this.mirrors.entries().next().value as [KVStore, Mirror];
      this.freeBlocks.push(...old.blocks);
      this.mirrors.delete(oldKey);
    }
    m = { blocks: [], len: 0 };
    this.mirrors.set(kv, m);
    return m;
  }

  /** Drops the mirror of a sequence that is done (its blocks are reused by the next one). */
  release(kv: KVStore): void {
    const m = this.mirrors.get(kv);
    if (!m) return;
    this.freeBlocks.push(...m.blocks);
    this.mirrors.delete(kv);
  }

  private ensureBlocks(m: Mirror, positions: number): void {
    const need = Math.ceil(positions / KV_BT);
    if (need > this.maxBlocks) {
      throw BitNetError.Capacity(
        'CONTEXT_FULL',
        `position ${positions - 1} is past the context length ${this.hp.nCtx}`,
        { positions, nCtx: this.hp.nCtx },
      );
    }
    while (m.blocks.length < need) m.blocks.push(this.allocBlock());
  }

  /** Addresses of K[kvh][d] and V[kvh·headDim + d] for (layer, pos) in the mirror. */
  private kvAddr(m: Mirror, layer: number, pos: number): { k: number; v: number } {
    const base = m.blocks[Math.floor(pos / KV_BT)] + layer * this.image.kvLayerBytes;
    const kvDim = this.hp.nHeadKv * this.hp.headDim;
    const t = pos % KV_BT;
    return { k: base + 4 * t, v: base + 4 * KV_BT * kvDim + 4 * t * kvDim };
  }

  private readMirror(m: Mirror, layer: number, pos: number, k: Float32Array, v: Float32Array): void {
    const a = this.kvAddr(m, layer, pos);
    const buf = this.memory.buffer;
    const kvDim = k.length;
    const kf = new Float32Array(buf, a.k, (kvDim - 1) * KV_BT + 1);
    for (let i = 0; i < kvDim; i++) k[i] = kf[i * KV_BT];
    v.set(new Float32Array(buf, a.v, kvDim));
  }

  private writeMirror(m: Mirror, layer: number, pos: number, k: Float32Array, v: Float32Array): void {
    const a = this.kvAddr(m, layer, pos);
    const buf = this.memory.buffer;
    const kvDim = k.length;
    const kf = new Float32Array(buf, a.k, (kvDim - 1) * KV_BT + 1);
    for (let i = 0; i < kvDim; i++) kf[i * KV_BT] = k[i];
    new Float32Array(buf, a.v, kvDim).set(v);
  }

  /** Brings the mirror to positions [0, startPos) of the store. */
  private sync(m: Mirror, kv: KVStore, startPos: number): void {
    const kvDim = this.hp.nHeadKv * this.hp.headDim;
    const k = new Float32Array(kvDim);
    const v = new Float32Array(kvDim);
    if (m.len > startPos) m.len = startPos;
    if (m.len > 0) {
      // spot check: the last shared position of layer 0 must match the store
      const p = m.len - 1;
      const k2 = new Float32Array(kvDim);
      const v2 = new Float32Array(kvDim);
      kv.readK(0, p, k2);
      kv.readV(0, p, v2);
      this.readMirror(m, 0, p, k, v);
      for (let i = 0; i < kvDim; i++) {
        if (!Object.is(k[i], k2[i]) || !Object.is(v[i], v2[i])) {
          m.len = 0;
          break;
        }
      }
    }
    this.ensureBlocks(m, startPos);
    for (let p = m.len; p < startPos; p++) {
      for (let l = 0; l < this.hp.nLayer; l++) {
        kv.readK(l, p, k);
        kv.readV(l, p, v);
        this.writeMirror(m, l, p, k, v);
      }
    }
    m.len = startPos;
  }

  // ------------------------------------------------------------------------------------------
  // forward
  // ------------------------------------------------------------------------------------------

  /** RoPE cos/sin of `pos` into the rope buffer slot t, by the reference's f32 angle recurrence. */
  private writeRope(t: number, pos: number): void {
    const half = this.hp.nRot / 2;
    const cs = this.arena.f32(this.ropePtr + 4 * t * this.hp.nRot, this.hp.nRot);
    let theta = Math.fround(pos);
    for (let i = 0; i < half; i++) {
      cs[i] = Math.fround(Math.cos(theta));
      cs[half + i] = Math.fround(Math.sin(theta));
      theta = Math.fround(theta * this.thetaScale);
    }
  }

  /**
   * Runs tokens[0..m) at positions pos0.. through the kernels. mode: logits of none, the last or
   * every token; `hiddenOut` (optional address) receives the final hidden states.
   */
  private runChunk(tokens: readonly number[], pos0: number, m: Mirror, mode: number, hiddenOut = 0): void {
    const n = tokens.length;
    const tok = this.arena.i32(this.tokensPtr, n);
    for (let t = 0; t < n; t++) {
      tok[t] = this.checkToken(tokens[t]);
      this.writeRope(t, pos0 + t);
    }
    this.ensureBlocks(m, pos0 + n);
    this.arena.u32(this.blocksPtr, m.blocks.length).set(m.blocks);
    const dv = this.arena.view();
    dv.setInt32(this.rc + RC.m, n, true);
    dv.setInt32(this.rc + RC.pos0, pos0, true);
    dv.setInt32(this.rc + RC.logitsMode, mode, true);
    dv.setInt32(this.rc + RC.hiddenOut, hiddenOut, true);
    this.k.run(this.rc);
  }

  private checkToken(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.hp.nVocab) {
      throw BitNetError.Model('BAD_TOKEN', `token id ${id} is outside the vocabulary (0..${this.hp.nVocab - 1})`, {
        token: id,
      });
    }
    return id;
  }

  private writeBack(m: Mirror, kv: KVStore, from: number, to: number): void {
    const kvDim = this.hp.nHeadKv * this.hp.headDim;
    const k = new Float32Array(kvDim);
    const v = new Float32Array(kvDim);
    for (let p = from; p < to; p++) {
      for (let l = 0; l < this.hp.nLayer; l++) {
        this.readMirror(m, l, p, k, v);
        kv.write(l, p, k, v);
      }
    }
  }

  async forward(req: ForwardRequest): Promise<Float32Array[]> {
    if (this.disposed) throw disposedError();
    throwIfCancelled(req.signal);
    await this.ensurePool();
    if (this.maxBatch > 1 && req.tokens.length === 1 && req.logits === 'last') {
      return new Promise<Float32Array[]>((resolve, reject) => {
        this.pending.push({ req, resolve, reject });
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          defer(() => this.flush());
        }
      });
    }
    let m = this.mirrorFor(req.kv);
    this.sync(m, req.kv, req.startPos);
    const out: Float32Array[] = [];
    const V = this.hp.nVocab;
    const cap = req.logits === 'all' ? Math.min(this.mCap, LOGIT_ROWS_ALL) : this.mCap;
    const n = req.tokens.length;
    for (let i = 0, c = cap; i < n; i += c) {
      if (i > 0) {
        await nextTurn();
        throwIfCancelled(req.signal);
        // While this forward yielded, other sequences ran: with more of them than maxMirrors,
        // LRU eviction may have taken this mirror and handed its blocks to another sequence.
        // The store holds every chunk written so far, so look the mirror up again and re-sync
        // (a no-op when it survived: the spot check passes and nothing is copied).
        m = this.mirrorFor(req.kv);
        this.sync(m, req.kv, req.startPos + i);
      }
      c = this.chunkLength(cap, n > 1);
      const chunk = req.tokens.slice(i, i + c);
      const last = i + c >= n;
      const mode = req.logits === 'all' ? LogitsMode.All : last ? LogitsMode.Last : LogitsMode.None;
      const pos0 = req.startPos + i;
      this.runChunk(chunk, pos0, m, mode);
      this.writeBack(m, req.kv, pos0, pos0 + chunk.length);
      m.len = pos0 + chunk.length;
      const rows = mode === LogitsMode.All ? chunk.length : mode === LogitsMode.Last ? 1 : 0;
      if (mode === LogitsMode.Last && req.into?.length === V) {
        req.into.set(this.arena.f32(this.logitsPtr, V));
        out.push(req.into);
      } else for (let r = 0; r < rows; r++) out.push(this.arena.f32(this.logitsPtr + 4 * V * r, V).slice());
    }
    return out;
  }

  /**
   * The next prefill chunk's length: `cap`, or SHARED_CHUNK while other sequences' decode steps
   * wait (they run between chunks, so they wait at most that long). Counted when `prompt` (more
   * than one token: not a lone decode step with batching off).
   */
  private chunkLength(cap: number, prompt: boolean): number {
    const c = this.pending.length > 0 ? Math.min(cap, SHARED_CHUNK) : cap;
    if (prompt) {
      this.decodeStats.prefillChunks++;
      if (c < cap) this.decodeStats.sharedPrefillChunks++;
    }
    return c;
  }

  /** Runs every waiting decode step, in batches of at most maxBatch sequences, in arrival order. */
  private flush(): void {
    this.flushScheduled = false;
    while (this.pending.length > 0) {
      // one step per sequence per batch (an engine loop awaits each step, so this is a guard)
      const batch: PendingStep[] = [];
      const rest: PendingStep[] = [];
      for (const p of this.pending) {
        if (batch.length < this.maxBatch && !batch.some((b) => b.req.kv === p.req.kv)) batch.push(p);
        else rest.push(p);
      }
      this.pending = rest;
      try {
        this.decodeBatch(batch);
      } catch (e) {
        // nothing may escape a deferred callback: every step of the batch settles (a settled
        // promise ignores the second call)
        for (const p of batch) p.reject(e);
      }
    }
  }

  /**
   * One decode step of each sequence in `batch`, as one kernel run. A step that cannot run (its
   * signal aborted, a bad token, a full context) fails alone; the others run.
   */
  private decodeBatch(batch: PendingStep[]): void {
    const live: { p: PendingStep; m: Mirror; pos: number }[] = [];
    for (const p of batch) {
      try {
        if (this.disposed) throw disposedError();
        throwIfCancelled(p.req.signal);
        const pos = p.req.startPos;
        this.checkToken(p.req.tokens[0]);
        const m = this.mirrorFor(p.req.kv);
        this.sync(m, p.req.kv, pos);
        this.ensureBlocks(m, pos + 1);
        live.push({ p, m, pos });
      } catch (e) {
        p.reject(e);
      }
    }
    if (live.length === 0) return;
    const V = this.hp.nVocab;
    this.decodeStats.runs++;
    this.decodeStats.steps += live.length;
    this.decodeStats.largestBatch = Math.max(this.decodeStats.largestBatch, live.length);
    try {
      if (live.length === 1) {
        // alone: the single-sequence path (the same bits, no batch records)
        this.runChunk(live[0].p.req.tokens, live[0].pos, live[0].m, LogitsMode.Last);
      } else {
        const n = live.length;
        const tok = this.arena.i32(this.tokensPtr, n);
        const recs = this.arena.view();
        let maxPos = 0;
        for (let t = 0; t < n; t++) {
          const { p, m, pos } = live[t];
          tok[t] = p.req.tokens[0];
          this.writeRope(t, pos);
          const table = this.blocksPtr + 4 * this.maxBlocks * t;
          this.arena.u32(table, m.blocks.length).set(m.blocks);
          recs.setInt32(this.seqsPtr + 8 * t, pos, true);
          recs.setUint32(this.seqsPtr + 8 * t + 4, table, true);
          maxPos = Math.max(maxPos, pos);
        }
        const dv = this.arena.view();
        dv.setInt32(this.rc + RC.m, n, true);
        dv.setInt32(this.rc + RC.pos0, maxPos, true);
        dv.setInt32(this.rc + RC.logitsMode, LogitsMode.All, true);
        dv.setInt32(this.rc + RC.hiddenOut, 0, true);
        dv.setInt32(this.rc + RC.seqs, this.seqsPtr, true);
        try {
          this.k.run(this.rc);
        } finally {
          dv.setInt32(this.rc + RC.seqs, 0, true);
        }
      }
    } catch (e) {
      for (const { p } of live) p.reject(e);
      return;
    }
    for (let t = 0; t < live.length; t++) {
      const { p, m, pos } = live[t];
      try {
        // the store may refuse the new position (a full KV cache in 'error' mode): that step fails
        this.writeBack(m, p.req.kv, pos, pos + 1);
        m.len = pos + 1;
        const row = this.arena.f32(this.logitsPtr + 4 * V * t, V);
        if (p.req.into?.length === V) {
          p.req.into.set(row);
          p.resolve([p.req.into]);
        } else p.resolve([row.slice()]);
      } catch (e) {
        p.reject(e);
      }
    }
  }

  /**
   * Final hidden states (after output_norm) of tokens run from position startPos, without logits:
   * embeddings, tests and tools. Uses and updates the mirror of `kv` like forward(), and like it
   * yields between chunks (other requests run; `signal` is checked).
   */
  async hidden(
    tokens: readonly number[],
    startPos: number,
    kv: KVStore,
    signal?: AbortSignal,
  ): Promise<Float32Array[]> {
    if (this.disposed) throw disposedError();
    throwIfCancelled(signal);
    await this.ensurePool();
    let m = this.mirrorFor(kv);
    this.sync(m, kv, startPos);
    const E = this.hp.nEmbd;
    this.hiddenBuf ||= this.arena.alloc(4 * E * this.mCap);
    const out: Float32Array[] = [];
    for (let i = 0, c = this.mCap; i < tokens.length; i += c) {
      if (i > 0) {
        await nextTurn();
        throwIfCancelled(signal);
        m = this.mirrorFor(kv); // see forward(): the mirror may have been evicted meanwhile
        this.sync(m, kv, startPos + i);
      }
      c = this.chunkLength(this.mCap, tokens.length > 1);
      const chunk = tokens.slice(i, i + c);
      this.runChunk(chunk, startPos + i, m, LogitsMode.Hidden, this.hiddenBuf);
      this.writeBack(m, kv, startPos + i, startPos + i + chunk.length);
      m.len = startPos + i + chunk.length;
      for (let r = 0; r < chunk.length; r++) out.push(this.arena.f32(this.hiddenBuf + 4 * E * r, E).slice());
    }
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.pending.splice(0)) p.reject(disposedError());
    if (this.pool) {
      poolReaper.unregister(this);
      this.k.stop_workers(this.rc);
      this.pool.dispose();
      this.pool = undefined;
    }
    this.mirrors.clear();
  }
}

function disposedError(): BitNetError {
  return BitNetError.Device('BACKEND_DISPOSED', 'the wasm backend was disposed', {});
}
