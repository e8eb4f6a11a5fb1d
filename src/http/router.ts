/**
 * The edge/GPU routing policy, decided per request.
 *
 * Inputs: the work (estimated prompt tokens + max_tokens), whether the model fits the local
 * memory budget, and whether the GPU endpoint may be used (its circuit breaker).
 *
 * The work is counted as the engine will do it: generation stops at the context length, so
 * max_tokens counts only up to what the context leaves after the prompt (prompt + min(max_tokens,
 * context − prompt)). Clients that always send max_tokens = the context length would otherwise
 * look "too large for the edge" and get a 503 whenever the GPU is down, although the edge would
 * answer them exactly as a server without a GPU does (clipped at the context, finish_reason length).
 *
 *   work ≤ edgeMaxTokens and the model fits locally  → edge ("small")
 *   otherwise, GPU allowed by the breaker             → gpu  ("large", or "model-too-large")
 *   otherwise, the edge can still take it             → edge ("gpu-unavailable")
 *   otherwise                                         → 503 GPU_UNAVAILABLE
 * "The edge can take it" means: the model fits the budget and work ≤ localMaxTokens.
 * Without a GPU endpoint every request is local ("no-gpu"); the engine rejects what the
 * context cannot hold. A request that came from another instance of this app (the
 * x-bitnet-forwarded header, trusted only with this instance's own GPU key: see
 * `trustsForwarded`) is always served locally, so routes cannot loop.
 */
import { BitNetError } from '../errors.ts';
import { type BreakerOptions, type BreakerState, CircuitBreaker } from './circuit-breaker.ts';
import { GpuEndpoint, type GpuEndpointOptions } from './gpu.ts';

export interface RouterOptions {
  gpu?: GpuEndpointOptions;
  /** Work (prompt + max_tokens) up to which requests stay on the edge (default 512). */
  edgeMaxTokens?: number;
  /** The most work the edge takes on when the GPU is unavailable (default: the model's context length). */
  localMaxTokens?: number;
  /** Weights over this many bytes never run locally (default: no limit). */
  localMemoryBudgetBytes?: number;
  breaker?: BreakerOptions;
}

export type Route = 'edge' | 'gpu';

export interface Decision {
  route: Route;
  reason: 'no-gpu' | 'small' | 'large' | 'model-too-large' | 'gpu-unavailable' | 'forwarded';
  /** Whether the edge could serve this request (used for fallback when the GPU fails). */
  localCapable: boolean;
}

export interface RouteInput {
  /** Prompt tokens + max_tokens, as requested. */
  work: number;
  /** The prompt's share of `work`, when known: with the context length, caps max_tokens at what fits. */
  promptTokens?: number;
  /**
   * A request of several generations (`n`, several prompts): `work` is their total, and this the
   * largest one's, which is what the edge must be able to run (each runs on its own).
   */
  largestJob?: number;
  /** The model's weight bytes, when known. */
  modelBytes: number | undefined;
  /** The model's context length, when known. */
  contextLength: number | undefined;
  forwarded: boolean;
}

export interface RouterHooks {
  onBreaker?: (s: BreakerState) => void;
  onProbe?: (ok: boolean) => void;
}

export class Router {
  readonly gpu: GpuEndpoint | undefined;
  readonly breaker: CircuitBreaker;
  readonly edgeMaxTokens: number;
  private readonly localMaxTokens: number | undefined;
  private readonly budget: number | undefined;

  private readonly onProbe: (ok: boolean) => void;

  constructor(o: RouterOptions, now: () => number, fetchFn?: typeof fetch, hooks: RouterHooks = {}) {
    this.gpu = o.gpu ? new GpuEndpoint(o.gpu, fetchFn) : undefined;
    this.breaker = new CircuitBreaker(o.breaker, now, hooks.onBreaker);
    this.onProbe = hooks.onProbe ?? (() => {});
    this.edgeMaxTokens = o.edgeMaxTokens ?? 512;
    this.localMaxTokens = o.localMaxTokens;
    this.budget = o.localMemoryBudgetBytes;
  }

  /** Whether weights of this size may be loaded locally. */
  fitsMemory(modelBytes: number | undefined): boolean {
    return this.budget === undefined || modelBytes === undefined || modelBytes <= this.budget;
  }

  /**
   * Whether to believe an incoming x-bitnet-forwarded header. It exists so that an instance that
   * forwards to a GPU endpoint which is itself configured to forward (the same settings deployed
   * twice, a URL pointing back) serves the request instead of passing it round in a loop. Any
   * client can send the header, though, and it skips routing: so it counts only on a request that
   * carries this instance's own GPU key (what an instance configured like this one sends), or where
   * it changes nothing (no GPU endpoint here), or where there is no key to check it against (no GPU
   * key configured: trusted as before). Other forwarded requests are routed as usual; the hop count
   * in the header still ends loops between instances with different keys (FORWARD_LOOP).
   */
  async trustsForwarded(authorization: string | undefined | null): Promise<boolean> {
    if (!this.gpu?.hasKey) return true;
    return this.gpu.isOwnKey(authorization);
  }

  /** Work as the engine will do it: max_tokens capped at what the context leaves after the prompt. */
  private effectiveWork(x: RouteInput): number {
    if (x.contextLength === undefined || x.promptTokens === undefined) return x.work;
    const maxNew = Math.max(0, x.work - x.promptTokens);
    return x.promptTokens + Math.min(maxNew, Math.max(0, x.contextLength - x.promptTokens));
  }

  /** Retry-After for a GPU_UNAVAILABLE: until the breaker lets a probe through (at least 1 s). */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(this.breaker.retryAfterMs() / 1000));
  }

  async decide(x: RouteInput): Promise<Decision> {
    const fits = this.fitsMemory(x.modelBytes);
    const localMax = this.localMaxTokens ?? x.contextLength ?? Number.POSITIVE_INFINITY;
    const work = this.effectiveWork(x);
    const localCapable = fits && (x.largestJob ?? work) <= localMax;
    if (x.forwarded || !this.gpu) {
      if (!fits)
        throw BitNetError.Memory(
          'MODEL_UNAVAILABLE',
          'the model does not fit this instance and no GPU endpoint is configured',
        );
      return { route: 'edge', reason: x.forwarded ? 'forwarded' : 'no-gpu', localCapable };
    }
    if (localCapable && work <= this.edgeMaxTokens) return { route: 'edge', reason: 'small', localCapable };
    const gpu = this.gpu;
    const probe = async () => {
      const ok = await gpu.probe();
      this.onProbe(ok);
      return ok;
    };
    if (await this.breaker.allow(probe))
      return { route: 'gpu', reason: fits ? 'large' : 'model-too-large', localCapable };
    if (localCapable) return { route: 'edge', reason: 'gpu-unavailable', localCapable };
    throw BitNetError.Io(
      'GPU_UNAVAILABLE',
      'the GPU endpoint is unavailable and this request is too large for the edge',
      { work, retryAfterSeconds: this.retryAfterSeconds() },
    );
  }
}
