/**
 * A small Prometheus registry (text exposition format 0.0.4): counters, gauges (set or read at
 * scrape time) and histograms with fixed buckets. One registry per app, so two apps in one
 * process (an edge and a GPU server in a test) keep separate numbers.
 */

import type { DecodeStats } from '../kernels/backend.ts';

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(',');
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function fmt(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return Number.isNaN(v) ? 'NaN' : String(v);
}

interface Metric {
  readonly name: string;
  render(): string[];
}

export class Counter implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly values = new Map<string, number>();
  private readonly read?: () => number;

  /** With `read`, the (unlabelled) value is taken at scrape time from a count kept elsewhere. */
  constructor(name: string, help: string, read?: () => number) {
    this.name = name;
    this.help = help;
    this.read = read;
  }

  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.read) out.push(`${this.name} ${fmt(this.read())}`);
    for (const [k, v] of this.values) out.push(`${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`);
    return out;
  }
}

export class Gauge implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly values = new Map<string, number>();
  private readonly read?: () => number;

  /** With `read`, the value is taken at scrape time. */
  constructor(name: string, help: string, read?: () => number) {
    this.name = name;
    this.help = help;
    this.read = read;
  }

  set(v: number, labels: Labels = {}): void {
    this.values.set(labelKey(labels), v);
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    if (this.read) out.push(`${this.name} ${fmt(this.read())}`);
    for (const [k, v] of this.values) out.push(`${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`);
    return out;
  }
}

export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export class Histogram implements Metric {
  readonly name: string;
  private readonly help: string;
  private readonly buckets: readonly number[];
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(name: string, help: string, buckets: readonly number[] = LATENCY_BUCKETS) {
    this.name = name;
    this.help = help;
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  observe(v: number, labels: Labels = {}): void {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) s.counts[i]++;
    s.sum += v;
    s.count++;
  }

  count(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.count ?? 0;
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.series) {
      const pre = k ? `${k},` : '';
      for (let i = 0; i < this.buckets.length; i++)
        out.push(`${this.name}_bucket{${pre}le="${fmt(this.buckets[i])}"} ${s.counts[i]}`);
      out.push(`${this.name}_bucket{${pre}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${fmt(s.sum)}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`);
    }
    return out;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  render(): string {
    return `${this.metrics.flatMap((m) => m.render()).join('\n')}\n`;
  }
}

/** The app's metrics, by name. */
export interface AppMetrics {
  registry: Registry;
  requests: Counter;
  duration: Histogram;
  firstToken: Histogram;
  tokens: Counter;
  routes: Counter;
  gpuFailures: Counter;
  fallbacks: Counter;
  breakerState: Gauge;
  breakerTransitions: Counter;
  probes: Counter;
  info: Gauge;
  queue: Gauge;
  active: Gauge;
  decodeBatches: Counter;
  decodeSteps: Counter;
  prefillChunks: Counter;
  sharedPrefillChunks: Counter;
}

export function createMetrics(read: {
  queueDepth: () => number;
  active: () => number;
  /** The loaded model's batched-decode counts, if its backend batches (0 before it loads). */
  decodeStats: () => DecodeStats | undefined;
}): AppMetrics {
  const r = new Registry();
  return {
    registry: r,
    requests: r.add(
      new Counter('bitnet_http_requests_total', 'HTTP requests by endpoint, status and route taken (edge or gpu).'),
    ),
    duration: r.add(
      new Histogram(
        'bitnet_http_request_duration_seconds',
        'Request latency until the last byte, by endpoint and route.',
      ),
    ),
    firstToken: r.add(
      new Histogram(
        'bitnet_time_to_first_token_seconds',
        'Time from request to the first generated token on the edge.',
      ),
    ),
    tokens: r.add(new Counter('bitnet_tokens_total', 'Prompt and completion tokens processed on the edge.')),
    routes: r.add(new Counter('bitnet_route_decisions_total', 'Router decisions by route and reason.')),
    gpuFailures: r.add(
      new Counter('bitnet_gpu_failures_total', 'GPU endpoint failures by phase (before_first_byte, mid_stream).'),
    ),
    fallbacks: r.add(
      new Counter(
        'bitnet_gpu_fallbacks_total',
        'Requests the GPU failed before the first byte, by outcome (edge or unavailable).',
      ),
    ),
    breakerState: r.add(new Gauge('bitnet_gpu_circuit_state', 'GPU circuit breaker: 0 closed, 1 half-open, 2 open.')),
    breakerTransitions: r.add(
      new Counter('bitnet_gpu_circuit_transitions_total', 'GPU circuit breaker state changes, by new state.'),
    ),
    probes: r.add(new Counter('bitnet_gpu_probes_total', 'Half-open health probes of the GPU endpoint, by result.')),
    info: r.add(new Gauge('bitnet_model_info', 'The served model (value 1).')),
    queue: r.add(new Gauge('bitnet_queue_depth', 'Requests waiting for a generation slot.', read.queueDepth)),
    active: r.add(new Gauge('bitnet_active_generations', 'Generations running on the edge.', read.active)),
    decodeBatches: r.add(
      new Counter(
        'bitnet_decode_batches_total',
        'Decode kernel runs on the edge; each serves the waiting steps of up to maxBatchSize sequences.',
        () => read.decodeStats()?.runs ?? 0,
      ),
    ),
    decodeSteps: r.add(
      new Counter(
        'bitnet_decode_steps_total',
        'Decode steps (one token of one sequence) those runs served; steps / batches is the mean batch size.',
        () => read.decodeStats()?.steps ?? 0,
      ),
    ),
    prefillChunks: r.add(
      new Counter(
        'bitnet_prefill_chunks_total',
        'Prefill kernel runs on the edge: chunks of prompts longer than one token (other sequences decode between them).',
        () => read.decodeStats()?.prefillChunks ?? 0,
      ),
    ),
    sharedPrefillChunks: r.add(
      new Counter(
        'bitnet_prefill_chunks_shortened_total',
        'Prefill chunks cut to 16 tokens because other sequences were waiting to decode.',
        () => read.decodeStats()?.sharedPrefillChunks ?? 0,
      ),
    ),
  };
}
