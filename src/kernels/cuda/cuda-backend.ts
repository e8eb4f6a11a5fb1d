/**
 * The cuda Backend: the model's weights on a GPU through the gpu-lambda addon (loaded lazily, see
 * load-addon.ts), the KV cache on the GPU (paged, per sequence), and continuous batching.
 *
 * Sequences. The engine loop hands each generation its own KVStore; this backend keeps the K/V
 * on the GPU instead and maps each KVStore object to an engine sequence (WeakMap). A forward at
 * startPos < the sequence's length rewinds it (truncate); startPos > length cannot be served
 * (those positions were never computed here) and throws CUDA_SEQUENCE_STATE. Sequences are freed
 * when their KVStore is garbage-collected, and the least recently used idle one is evicted when
 * the engine runs out of slots.
 *
 * Continuous batching. Concurrent forward() calls (one per HTTP request in flight) are queued;
 * whenever the GPU is free, one engine step takes every queued request's next tokens (decode
 * tokens and prefill chunks mixed, up to maxBatchTokens tokens and maxLogitRows logits rows) and
 * runs them as one batch. A long prefill is split across steps, so decodes keep flowing.
 *
 * Numerics are the engine's (docs/bitnet-formats.md, as the reference): decode logits match the
 * reference backend bit for bit; rows of large batches use the tensor-core head (~1e-6 relative).
 */
import { BitNetError } from '../../errors.ts';
import { GGMLType } from '../../gguf/ggml-types.ts';
import type { HParams } from '../../model/hparams.ts';
import type { KVStore } from '../../model/reference.ts';
import type { Linear, ModelWeights } from '../../model/weights.ts';
import { cancelReason, throwIfCancelled } from '../../util/abort.ts';
import { defer } from '../../util/turn.ts';
import type { Backend, ForwardRequest } from '../backend.ts';
import type {
  CudaAddonError,
  CudaDeviceInfo,
  CudaEngine,
  CudaEngineInfo,
  CudaEngineOptions,
  CudaEngineSpec,
  CudaTensor,
} from './addon-types.ts';
import { loadCudaAddon } from './load-addon.ts';

export interface CudaBackendOptions extends CudaEngineOptions {
  /** bitnet_cuda.node (default: $BITNET_CUDA_ADDON, then gpu-lambda/addon/build/Release). */
  addonPath?: string;
}

/**
 * Why the cuda backend cannot run this weight table, or undefined. Checked before the addon is
 * loaded or any byte is handed to it. The engine reads projections in their GGML storage; TL1/TL2
 * tile images (shard packs converted with --layout tl1|tl2, `Linear.layout`) are the wasm kernels'
 * layout and have no CUDA kernel: convert the model with --layout i2s for the GPU.
 */
export function cudaUnsupportedReason(w: ModelWeights): { reason: string; tensor: string; layout: string } | undefined {
  for (const L of w.layers) {
    for (const l of [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]) {
      if (l.layout) {
        return {
          reason: `projection ${l.name} is a ${l.layout.toUpperCase()} tile image (a wasm layout); the CUDA engine reads GGML storage only (convert with --layout i2s)`,
          tensor: l.name,
          layout: l.layout,
        };
      }
    }
  }
  return undefined;
}

/** Throws Device BACKEND_UNAVAILABLE (reason 'unsupported-layout') when cudaUnsupportedReason says so. */
export function checkCudaCapability(w: ModelWeights): void {
  const why = cudaUnsupportedReason(w);
  if (why) {
    throw BitNetError.Device('BACKEND_UNAVAILABLE', `the cuda backend cannot run this model: ${why.reason}`, {
      backend: 'cuda',
      reason: 'unsupported-layout',
      tensor: why.tensor,
      layout: why.layout,
    });
  }
}

/** The engine spec (hyper-parameters + tensor table) of a loaded model, with no copies. */
export function cudaEngineSpec(hp: HParams, w: ModelWeights, options: CudaEngineOptions = {}): CudaEngineSpec {
  checkCudaCapability(w);
  const f32 = (name: string, x: Float32Array): CudaTensor => ({
    name,
    type: GGMLType.F32,
    ne: [x.length],
    data: new Uint8Array(x.buffer, x.byteOffset, x.byteLength),
  });
  const tensors: CudaTensor[] = [
    { name: 'token_embd.weight', type: w.tokenEmbd.type, ne: [...w.tokenEmbd.ne], data: w.tokenEmbd.bytes },
    f32('output_norm.weight', w.outputNorm),
  ];
  if (w.output !== w.tokenEmbd) {
    tensors.push({ name: 'output.weight', type: w.output.type, ne: [...w.output.ne], data: w.output.bytes });
  }
  const proj = (name: string, l: Linear) => {
    tensors.push({ name: `${name}.weight`, type: l.type, ne: [l.k, l.n], data: l.bytes });
    if (l.outScale !== 1) tensors.push(f32(`${name}.scale`, new Float32Array([l.outScale])));
  };
  w.layers.forEach((L, i) => {
    const b = `blk.${i}.`;
    tensors.push(
      f32(`${b}attn_norm.weight`, L.attnNorm),
      f32(`${b}attn_sub_norm.weight`, L.attnSubNorm),
      f32(`${b}ffn_norm.weight`, L.ffnNorm),
      f32(`${b}ffn_sub_norm.weight`, L.ffnSubNorm),
    );
    proj(`${b}attn_q`, L.wq);
    proj(`${b}attn_k`, L.wk);
    proj(`${b}attn_v`, L.wv);
    proj(`${b}attn_output`, L.wo);
    proj(`${b}ffn_gate`, L.wGate);
    proj(`${b}ffn_up`, L.wUp);
    proj(`${b}ffn_down`, L.wDown);
  });
  const hparams = {
    nVocab: hp.nVocab,
    nCtx: hp.nCtx,
    nEmbd: hp.nEmbd,
    nLayer: hp.nLayer,
    nFF: hp.nFF,
    nHead: hp.nHead,
    nHeadKv: hp.nHeadKv,
    headDim: hp.headDim,
    nRot: hp.nRot,
    ropeFreqBase: hp.ropeFreqBase,
    rmsEps: hp.rmsEps,
    activation: hp.activation,
  };
  return { hparams, tensors, options };
}

/** An addon error as a BitNetError (kind by status; the engine's message kept). */
export function cudaError(e: unknown, during: string): BitNetError {
  if (e instanceof BitNetError) return e;
  const err = e as Partial<CudaAddonError>;
  const msg = `cuda ${during}: ${err?.message ?? String(e)}`;
  const details = { backend: 'cuda', status: err?.code };
  switch (err?.code) {
    case 'BN_ERR_NO_DEVICE':
      return BitNetError.Device('BACKEND_UNAVAILABLE', msg, { ...details, reason: 'no-gpu' }, e);
    case 'BN_ERR_UNSUPPORTED':
      return BitNetError.Device('BACKEND_UNAVAILABLE', msg, { ...details, reason: 'unsupported' }, e);
    case 'BN_ERR_OUT_OF_MEMORY':
      return BitNetError.Memory('GPU_OUT_OF_MEMORY', msg, details, e);
    case 'BN_ERR_CAPACITY':
      return BitNetError.Capacity('CUDA_CAPACITY', msg, details, e);
    case 'BN_ERR_INVALID_ARGUMENT':
      return BitNetError.Config('CUDA_INVALID_ARGUMENT', msg, details, e);
    case 'BN_ERR_FORMAT':
      return BitNetError.Model('CUDA_BAD_MODEL', msg, details, e);
    case 'BN_ERR_NUMERIC':
      return BitNetError.Model('LOGITS_NAN', msg, details, e);
    case 'BN_ERR_STATE':
      return BitNetError.Device('CUDA_SEQUENCE_STATE', msg, details, e);
    default:
      return BitNetError.Device('CUDA_ERROR', msg, details, e);
  }
}

interface SeqState {
  id: number;
  len: number;
  lastUsed: number;
  busy: number;
  freed: boolean;
}

interface Pending {
  seq: SeqState;
  tokens: readonly number[];
  done: number;
  all: boolean;
  rows: Float32Array[];
  signal?: AbortSignal;
  resolve(rows: Float32Array[]): void;
  reject(e: unknown): void;
}

export class CudaBackend implements Backend {
  /** Concurrent requests' prefills and decodes share engine steps (a request's `n` choices too). */
  readonly runsGenerationsTogether = true;
  readonly name = 'cuda';
  readonly vocabSize: number;
  readonly device: CudaDeviceInfo | undefined;
  readonly addonPath: string;
  private engine: CudaEngine | undefined;
  private readonly maxTokens: number;
  private readonly maxRows: number;
  private readonly seqs = new WeakMap<KVStore, SeqState>();
  private readonly live = new Set<SeqState>();
  private readonly evicted = new WeakSet<KVStore>();
  private readonly owners = new WeakMap<SeqState, WeakRef<KVStore>>();
  private readonly registry: FinalizationRegistry<SeqState>;
  private queue: Pending[] = [];
  private running = false;
  private clock = 0;

  constructor(model: { hparams: HParams; weights: ModelWeights }, opts: CudaBackendOptions = {}) {
    const { addonPath, ...engineOpts } = opts;
    checkCudaCapability(model.weights); // before the addon is loaded or a GPU touched
    const loaded = loadCudaAddon({ path: addonPath, device: opts.device, probeDevice: !opts.emulate });
    this.device = loaded.device;
    this.addonPath = loaded.path;
    try {
      this.engine = loaded.addon.createEngine(cudaEngineSpec(model.hparams, model.weights, engineOpts));
    } catch (e) {
      throw cudaError(e, 'engine creation');
    }
    const info = this.engine.info();
    this.vocabSize = info.nVocab;
    this.maxTokens = info.maxBatchTokens;
    this.maxRows = Math.min(opts.maxLogitRows ?? 64, info.maxBatchTokens);
    this.registry = new FinalizationRegistry((s) => this.freeSeq(s));
  }

  /** Device, memory and capacity figures of the engine. */
  info(): CudaEngineInfo {
    return this.eng().info();
  }

  private eng(): CudaEngine {
    if (!this.engine) throw BitNetError.Device('CUDA_DISPOSED', 'the cuda backend was disposed', { backend: 'cuda' });
    return this.engine;
  }

  /** The sequence behind `kv` is finished: its GPU KV is freed now rather than when `kv` is collected. */
  release(kv: KVStore): void {
    const s = this.seqs.get(kv);
    if (!s) return;
    this.freeSeq(s);
    if (s.freed) this.seqs.delete(kv);
  }

  private freeSeq(s: SeqState): void {
    if (s.freed || !this.engine) return;
    if (s.busy > 0) return;
    s.freed = true;
    this.live.delete(s);
    try {
      this.engine.freeSequence(s.id);
    } catch {
      // the engine is gone or poisoned: nothing to free
    }
  }

  private sequenceFor(kv: KVStore): SeqState {
    const known = this.seqs.get(kv);
    if (known && !known.freed) return known;
    const e = this.eng();
    let id: number | undefined;
    for (;;) {
      try {
        id = e.createSequence();
        break;
      } catch (err) {
        if ((err as CudaAddonError).code !== 'BN_ERR_CAPACITY') throw cudaError(err, 'createSequence');
        // Evict the least recently used idle sequence, if any.
        let victim: SeqState | undefined;
        for (const s of this.live) if (s.busy === 0 && (!victim || s.lastUsed < victim.lastUsed)) victim = s;
        if (!victim) throw cudaError(err, 'createSequence');
        this.freeSeq(victim);
        this.evictedStore(victim);
      }
    }
    const s: SeqState = { id, len: 0, lastUsed: ++this.clock, busy: 0, freed: false };
    this.seqs.set(kv, s);
    this.live.add(s);
    this.owners.set(s, new WeakRef(kv));
    this.registry.register(kv, s);
    return s;
  }

  private evictedStore(s: SeqState): void {
    const kv = this.owners.get(s)?.deref();
    if (kv) {
      this.seqs.delete(kv);
      this.evicted.add(kv);
    }
  }

  async forward(req: ForwardRequest): Promise<Float32Array[]> {
    throwIfCancelled(req.signal);
    const s = this.sequenceFor(req.kv);
    if (req.startPos < s.len) {
      try {
        this.eng().truncate(s.id, req.startPos);
      } catch (e) {
        throw cudaError(e, 'truncate');
      }
      s.len = req.startPos;
    } else if (req.startPos > s.len) {
      const why = this.evicted.has(req.kv) ? ' (its GPU sequence was evicted to make room)' : '';
      throw BitNetError.Device(
        'CUDA_SEQUENCE_STATE',
        `the cuda backend holds ${s.len} positions of this sequence on the GPU, the request starts at ${req.startPos}${why}`,
        { backend: 'cuda', startPos: req.startPos, length: s.len },
      );
    }
    if (req.tokens.length === 0) return [];
    s.busy++;
    s.lastUsed = ++this.clock;
    try {
      return await new Promise<Float32Array[]>((resolve, reject) => {
        this.queue.push({
          seq: s,
          tokens: req.tokens,
          done: 0,
          all: req.logits === 'all',
          rows: [],
          signal: req.signal,
          resolve,
          reject,
        });
        this.pump();
      });
    } finally {
      s.busy--;
    }
  }

  /**
   * Starts a step when the GPU is idle. The step begins after one macrotask turn, so requests
   * whose previous step just resolved (their engine loops sample, then call forward again) join it.
   */
  private pump(): void {
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    defer(() => {
      void this.step().finally(() => {
        this.running = false;
        this.pump();
      });
    });
  }

  /** One engine step over the queued requests (the continuous-batching loop body). */
  private async step(): Promise<void> {
    const V = this.vocabSize;
    const seqs: number[] = [];
    const toks: number[] = [];
    const want: number[] = [];
    const parts: { p: Pending; take: number }[] = [];
    const taken = new Set<SeqState>();
    let budget = this.maxTokens;
    let rowBudget = this.maxRows;
    for (const p of this.queue) {
      if (budget === 0) break;
      if (taken.has(p.seq)) continue; // one request per sequence per step, in order
      if (p.signal?.aborted) continue;
      const remaining = p.tokens.length - p.done;
      let take = Math.min(remaining, budget);
      if (p.all) take = Math.min(take, rowBudget);
      else if (take === remaining && rowBudget === 0) take = remaining - 1;
      if (take <= 0) continue;
      taken.add(p.seq);
      for (let i = 0; i < take; i++) {
        const idx = p.done + i;
        const w = p.all || idx === p.tokens.length - 1;
        seqs.push(p.seq.id);
        toks.push(p.tokens[idx]);
        want.push(w ? 1 : 0);
        if (w) rowBudget--;
      }
      parts.push({ p, take });
      budget -= take;
    }
    // Requests aborted while queued leave now.
    this.queue = this.queue.filter((p) => {
      if (!p.signal?.aborted || parts.some((x) => x.p === p)) return true;
      p.reject(cancelReason(p.signal));
      return false;
    });
    if (parts.length === 0) return;
    const rows = want.reduce((a, b) => a + b, 0);
    const out = new Float32Array(rows * V);
    try {
      await this.eng().forward(Int32Array.from(seqs), Int32Array.from(toks), Uint8Array.from(want), out);
    } catch (e) {
      const err = cudaError(e, 'forward');
      for (const { p } of parts) p.reject(err);
      this.queue = this.queue.filter((p) => !parts.some((x) => x.p === p));
      return;
    }
    let r = 0;
    let t = 0;
    for (const { p, take } of parts) {
      for (let i = 0; i < take; i++, t++) {
        if (want[t]) {
          p.rows.push(out.subarray(r * V, (r + 1) * V));
          r++;
        }
      }
      p.done += take;
      p.seq.len += take;
      if (p.done === p.tokens.length) {
        p.resolve(p.all ? p.rows : p.rows.slice(-1));
      }
    }
    this.queue = this.queue.filter((p) => p.done < p.tokens.length);
  }

  dispose(): void {
    const e = this.engine;
    if (!e) return;
    for (const p of this.queue)
      p.reject(BitNetError.Device('CUDA_DISPOSED', 'the cuda backend was disposed', { backend: 'cuda' }));
    this.queue = [];
    this.engine = undefined;
    try {
      e.free();
    } catch {
      // a step still running keeps the engine alive until the process ends
    }
  }
}

/** BITNET_CUDA_EMULATE=1 runs the kernels' CPU emulation (tests and demos without a GPU; slow). */
export const CUDA_EMULATE_ENV = 'BITNET_CUDA_EMULATE';
/** BITNET_CUDA_OPTIONS: engine options as JSON (CudaEngineOptions), e.g. {"maxSeqs":128,"headMode":"int8"}. */
export const CUDA_OPTIONS_ENV = 'BITNET_CUDA_OPTIONS';

/**
 * Creates the cuda backend, or throws Device BACKEND_UNAVAILABLE with the reason. Options come
 * from `opts`, then $BITNET_CUDA_OPTIONS (JSON), then the engine's defaults; `emulate` defaults
 * to $BITNET_CUDA_EMULATE === '1'.
 */
export function createCudaBackend(
  model: { hparams: HParams; weights: ModelWeights },
  opts: CudaBackendOptions = {},
): CudaBackend {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  let fromEnv: CudaBackendOptions = {};
  const json = env?.[CUDA_OPTIONS_ENV];
  if (json) {
    try {
      fromEnv = JSON.parse(json) as CudaBackendOptions;
    } catch (e) {
      throw BitNetError.Config('BAD_CUDA_OPTIONS', `${CUDA_OPTIONS_ENV} is not valid JSON`, { value: json }, e);
    }
    if (typeof fromEnv !== 'object' || fromEnv === null || Array.isArray(fromEnv)) {
      throw BitNetError.Config('BAD_CUDA_OPTIONS', `${CUDA_OPTIONS_ENV} must be a JSON object`, { value: json });
    }
  }
  const merged: CudaBackendOptions = { ...fromEnv, ...opts };
  return new CudaBackend(model, { ...merged, emulate: merged.emulate ?? env?.[CUDA_EMULATE_ENV] === '1' });
}
