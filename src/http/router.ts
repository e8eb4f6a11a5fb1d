/**
 * The edge/GPU routing policy, decided per request.
 *
 * Inputs: the work (estimated prompt tokens + max_tokens), whether the model fits the local
 * memory budget, and whether the GPU endpoint may be used (its circuit breaker).
 *
 *   work ≤ edgeMaxTokens and the model fits locally  → edge ("small")
 *   otherwise, GPU allowed by the breaker             → gpu  ("large", or "model-too-large")
 *   otherwise, the edge can still take it             → edge ("gpu-unavailable")
 *   otherwise                                         → 503 GPU_UNAVAILABLE
 * "The edge can take it" means: the model fits the budget and work ≤ localMaxTokens.
 * Without a GPU endpoint every request is local ("no-gpu"); the engine rejects what the
 * context cannot hold. A request that came from another instance of this app (the
 * x-bitnet-forwarded header) is always served locally, so routes cannot loop.
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
  work: number;
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

  async decide(x: RouteInput): Promise<Decision> {
    const fits = this.fitsMemory(x.modelBytes);
    const localMax = this.localMaxTokens ?? x.contextLength ?? Number.POSITIVE_INFINITY;
    const localCapable = fits && x.work <= localMax;
    if (x.forwarded || !this.gpu) {
      if (!fits)
        throw BitNetError.Memory(
          'MODEL_UNAVAILABLE',
          'the model does not fit this instance and no GPU endpoint is configured',
        );
      return { route: 'edge', reason: x.forwarded ? 'forwarded' : 'no-gpu', localCapable };
    }
    if (localCapable && x.work <= this.edgeMaxTokens) return { route: 'edge', reason: 'small', localCapable };
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
      {
        work: x.work,
        retryAfterSeconds: Math.ceil(this.breaker.openMs / 1000),
      },
    );
  }
}
