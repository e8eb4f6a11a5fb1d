/**
 * What the sampler does to the logits before it ranks them, in llama.cpp's order (its sampler
 * chain: logit bias first, then the penalties sampler):
 *
 *  1. Logit bias: l = f32(l + f32(bias)) for each id in the map (OpenAI's `logit_bias`).
 *  2. Penalties, once per DISTINCT id in the history window, with c = its count there:
 *     - repetition (CTRL): l = l > 0 ? l / p : l * p, rounded to f32 (skipped when p == 1);
 *     - then OpenAI's presence/frequency: l = f32(l − f32(f32(c · freq) + pres)), freq and pres
 *       taken as f32 (llama.cpp's `penalty_freq`, `penalty_present`); skipped when both are 0.
 *
 * The window is the caller's (the engine's last 64 tokens, prompt included, as llama.cpp's
 * `penalty_last_n`), so presence and frequency count within it, not over the whole completion as
 * OpenAI describes. History ids outside [0, V) match no logit and are ignored.
 *
 * The logits are never modified: the adjusted values go into one module-level scratch buffer that
 * is reused across calls (no vocabulary-sized allocation per token) and returned to the pool by
 * `releaseAdjusted`. Nothing to adjust: the logits themselves come back.
 */
import { BitNetError } from '../errors.ts';

/** Token id → bias added to its logit. JSON-shaped: OpenAI's `logit_bias` parses to this. */
export type LogitBias = Readonly<Record<number, number>>;

export interface LogitAdjustments {
  /** 1: off; > 1 discourages repeats. */
  repetitionPenalty: number;
  /** 0: off. Subtracted once from every id present in the window. */
  presencePenalty?: number;
  /** 0: off. Subtracted once per occurrence in the window. */
  frequencyPenalty?: number;
  logitBias?: LogitBias;
}

/** The ids and biases of a LogitBias, checked against a vocabulary of `n` (throws on a bad entry). */
export function biasEntries(bias: LogitBias | undefined, n: number): [number, number][] {
  if (bias === undefined || bias === null) return [];
  if (typeof bias !== 'object' || Array.isArray(bias))
    throw BitNetError.Config('SAMPLER_BAD_LOGIT_BIAS', 'logitBias must be an object of token id → bias');
  const out: [number, number][] = [];
  for (const key of Object.keys(bias)) {
    const id = /^(0|[1-9]\d{0,9})$/.test(key) ? Number(key) : Number.NaN;
    const b = (bias as Record<string, unknown>)[key];
    if (!(id < n)) {
      throw BitNetError.Config(
        'SAMPLER_BAD_LOGIT_BIAS',
        `logitBias key "${key}" is not a token id of this vocabulary (0..${n - 1})`,
        { field: 'logitBias', token: key, vocab: n },
      );
    }
    if (typeof b !== 'number' || !Number.isFinite(b))
      throw BitNetError.Config('SAMPLER_BAD_LOGIT_BIAS', `logitBias for token ${id} must be a finite number`, {
        field: 'logitBias',
        token: id,
        bias: String(b),
      });
    out.push([id, b]);
  }
  return out;
}

function checkPenalty(name: string, v: number | undefined): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw BitNetError.Config('SAMPLER_BAD_PENALTY', `${name} must be a finite number (0 for off)`, { [name]: v });
  return Math.fround(v);
}

let pool: Float32Array | null = null;
const NO_BIAS: readonly [number, number][] = [];

function isEmpty(bias: LogitBias | undefined): boolean {
  if (bias === undefined) return true;
  if (bias === null || typeof bias !== 'object') return false; // biasEntries says why
  for (const _ in bias) return false;
  return true;
}

export interface Adjusted {
  vals: Float32Array;
  /** The scratch buffer behind `vals`, or null when `vals` is the caller's logits. */
  buf: Float32Array | null;
}

/** The adjusted logits (see the header). Throws Config SAMPLER_* on a bad penalty or bias. */
export function adjustLogits(logits: Float32Array, history: ArrayLike<number>, a: LogitAdjustments): Adjusted {
  const n = logits.length;
  const p = a.repetitionPenalty;
  const freq = checkPenalty('frequencyPenalty', a.frequencyPenalty);
  const pres = checkPenalty('presencePenalty', a.presencePenalty);
  // the common case, no bias (GenerationConfig's `{}`), allocates nothing per token
  const bias = isEmpty(a.logitBias) ? NO_BIAS : biasEntries(a.logitBias, n);
  const penalise = history.length > 0 && (p !== 1 || freq !== 0 || pres !== 0);
  if (!penalise && bias.length === 0) return { vals: logits, buf: null };

  let buf = pool;
  pool = null;
  if (buf === null || buf.length < n) buf = new Float32Array(n);
  const vals = buf.length === n ? buf : buf.subarray(0, n);
  vals.set(logits);
  for (const [id, b] of bias) vals[id] = vals[id] + Math.fround(b);
  if (!penalise) return { vals, buf };

  // counts in first-seen order, so the pass below is deterministic whatever the Map does
  const counts = new Map<number, number>();
  for (let i = 0; i < history.length; i++) {
    const t = history[i];
    if (Number.isInteger(t) && t >= 0 && t < n) counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  for (const [t, c] of counts) {
    let l = vals[t];
    if (p !== 1) l = Math.fround(l > 0 ? l / p : l * p);
    if (freq !== 0 || pres !== 0) l = Math.fround(l - Math.fround(Math.fround(c * freq) + pres));
    vals[t] = l;
  }
  return { vals, buf };
}

/** Hands the scratch buffer back for the next call. */
export function releaseAdjusted(a: Adjusted): void {
  if (a.buf !== null && (pool === null || pool.length < a.buf.length)) pool = a.buf;
}
