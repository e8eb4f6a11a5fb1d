/**
 * Token sampler: logits -> one token id. Pure and deterministic: the same logits, history,
 * params and RNG state give the same token, and the input arrays are never modified.
 *
 * Pipeline, in this order (vocabulary V = logits.length, at most 2^21):
 *  1. Logit bias, then the repetition, presence and frequency penalties over the DISTINCT ids in
 *     `history` (logit-adjust.ts: llama.cpp's order and f32 rounding). Each is skipped when off.
 *  2. temperature <= 0: greedy argmax of the adjusted logits, ties -> lowest id. No RNG draw.
 *  3. Rank order is (l desc, id asc): probability-descending, ties by lowest id.
 *  3b. min-p (0 < minP ≤ 1, llama.cpp's min_p): drop ids whose adjusted logit is below
 *     max − ln(1/minP), i.e. less likely than minP × the top id before temperature (a rank prefix).
 *  4. top-k (0 < topK < V): keep the first topK ids in rank order (heap selection, O(V log k)).
 *  5. Softmax in float64 over the kept set: z = l / T, m = max z, w = exp(z - m), Z = sum of w.
 *     Special cases: m = +inf -> the +inf ids share the mass; all z = -inf -> uniform.
 *  6. top-p (topP < 1): keep the smallest rank-order prefix whose cumulative w >= topP * Z
 *     (always at least one token, so topP = 0 keeps only the top one).
 *  7. Renormalise over the kept prefix (W = its total w) and draw ONE u = rng.nextFloat():
 *     the token is the first in rank order whose cumulative w exceeds u * W. Every non-greedy
 *     call draws exactly once, so the RNG advances one step per sampled token whatever the params.
 *  NaN in the (adjusted) logits throws Model LOGITS_NAN; bad params throw Config SAMPLER_*.
 *
 * Cost: the vocabulary is never sorted. Without top-k we collect the ids with z >= m - d for
 * growing d (8, 16, ..., 1024, then all), which is a rank-order prefix of the vocabulary, until
 * its mass covers the target (topP * Z, or u * Z when top-p is off). Prefix searches use
 * quickselect-style partitioning (expected O(set size)), sorting only small ranges. The floor is
 * one Math.exp per vocabulary entry (~2-3 ms at V = 128256 in V8); top-k is ~0.5 ms.
 * Float sums are therefore taken in a deterministic but implementation-defined order: another
 * backend may differ only where a cumulative sum is within rounding (~1e-15 relative) of a target.
 * With a bias or a penalty, the logits are copied into a reused scratch buffer (logit-adjust.ts);
 * without them they are read in place.
 */
import { BitNetError } from '../errors.ts';
import { adjustLogits, type LogitAdjustments, releaseAdjusted } from './logit-adjust.ts';
import type { Rng } from './prng.ts';

export interface SamplerParams extends LogitAdjustments {
  /** <= 0: greedy. */
  temperature: number;
  /** <= 0 or >= vocab: off. */
  topK: number;
  /** >= 1: off. */
  topP: number;
  /** Min-p (llama.cpp's, vLLM's `min_p`): drop tokens less likely than minP × the top one; 0 / absent: off. */
  minP?: number;
}

/** The part of an RNG the sampler uses. */
export type UniformSource = Pick<Rng, 'nextFloat'>;

function nanError(id: number): never {
  throw BitNetError.Model('LOGITS_NAN', 'logits contain NaN', { id });
}

function validate(n: number, params: SamplerParams): void {
  if (n === 0) throw BitNetError.Config('SAMPLER_EMPTY_LOGITS', 'logits are empty');
  if (n > MAX_SAMPLER_VOCAB) {
    throw BitNetError.Config('SAMPLER_VOCAB_TOO_LARGE', 'vocabulary too large for the sampler', {
      vocab: n,
      max: MAX_SAMPLER_VOCAB,
    });
  }
  const { temperature, topK, topP, repetitionPenalty } = params;
  if (typeof temperature !== 'number' || Number.isNaN(temperature) || temperature === Number.POSITIVE_INFINITY) {
    throw BitNetError.Config('SAMPLER_BAD_TEMPERATURE', 'temperature must be a finite number', { temperature });
  }
  if (!Number.isInteger(topK)) {
    throw BitNetError.Config('SAMPLER_BAD_TOP_K', 'topK must be an integer (<= 0 for off)', { topK });
  }
  if (typeof topP !== 'number' || Number.isNaN(topP) || topP < 0) {
    throw BitNetError.Config('SAMPLER_BAD_TOP_P', 'topP must be a number >= 0 (>= 1 for off)', { topP });
  }
  const minP = params.minP;
  if (minP !== undefined && !(typeof minP === 'number' && minP >= 0 && minP <= 1)) {
    throw BitNetError.Config('SAMPLER_BAD_MIN_P', 'minP must be a number in [0, 1] (0 for off)', { minP });
  }
  if (!(typeof repetitionPenalty === 'number' && repetitionPenalty > 0 && Number.isFinite(repetitionPenalty))) {
    throw BitNetError.Config('SAMPLER_BAD_REPETITION_PENALTY', 'repetitionPenalty must be finite and > 0', {
      repetitionPenalty,
    });
  }
}

/** Greedy pick: highest logit, ties -> lowest id. Throws LOGITS_NAN on NaN. */
export function argmax(logits: ArrayLike<number>): number {
  const n = logits.length;
  if (n === 0) throw BitNetError.Config('SAMPLER_EMPTY_LOGITS', 'logits are empty');
  let best = 0;
  let bestV = logits[0];
  if (Number.isNaN(bestV)) nanError(0);
  for (let i = 1; i < n; i++) {
    const v = logits[i];
    if (v > bestV) {
      best = i;
      bestV = v;
    } else if (Number.isNaN(v)) nanError(i);
  }
  return best;
}

/** Largest value; throws LOGITS_NAN on NaN. */
function maxOf(vals: Float32Array): number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i];
    if (v > m) m = v;
    else if (Number.isNaN(v)) nanError(i);
  }
  return m;
}

/** Ids are packed below the logit in a 53-bit rank key, so V must be <= 2^21. */
export const MAX_SAMPLER_VOCAB = 2 ** 21;
const ID_SPAN = MAX_SAMPLER_VOCAB;
const f32s = new Float32Array(1);
const u32s = new Uint32Array(f32s.buffer);

/**
 * Rank key: an integer < 2^53 whose ascending order is rank order (l desc, id asc).
 * key = (0xFFFFFFFF - ord(l)) * 2^21 + id, with ord the order-preserving u32 image of the f32.
 */
function rankKey(l: number, id: number): number {
  f32s[0] = l === 0 ? 0 : l; // -0 ranks with +0
  const u = u32s[0];
  const ord = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
  return (0xffffffff - ord) * ID_SPAN + id;
}

/** The (f32) logit packed in a rank key. */
function keyLogit(key: number): number {
  const ord = 0xffffffff - Math.floor(key / ID_SPAN);
  u32s[0] = ord & 0x80000000 ? ord ^ 0x80000000 : ~ord;
  return f32s[0];
}

/** Softmax weight of z given the max m (see the header for the infinite cases). */
function weight(z: number, m: number): number {
  if (m === Number.POSITIVE_INFINITY) return z === m ? 1 : 0;
  if (m === Number.NEGATIVE_INFINITY) return 1;
  return Math.exp(z - m);
}

/** A candidate set: parallel rank keys and softmax weights, grown on demand. */
class Cands {
  keys: Float64Array;
  ws: Float64Array;
  n = 0;
  readonly T: number;
  readonly m: number;
  constructor(cap: number, T: number, m: number) {
    this.T = T;
    this.m = m;
    this.keys = new Float64Array(cap);
    this.ws = new Float64Array(cap);
  }
  push(key: number, w: number): void {
    if (this.n === this.keys.length) {
      const k = new Float64Array(this.n * 2);
      const w2 = new Float64Array(this.n * 2);
      k.set(this.keys);
      w2.set(this.ws);
      this.keys = k;
      this.ws = w2;
    }
    this.keys[this.n] = key;
    this.ws[this.n++] = w;
  }
  weightOf(key: number): number {
    return weight(keyLogit(key) / this.T, this.m);
  }
}

interface Prefix {
  /** Entries [0, end) are the `end` best of the searched range (in no particular order)
   *  and entry end - 1 is the worst of them: the entry where the target was crossed. */
  end: number;
  /** Their total weight. */
  cum: number;
  /** False when the whole range did not reach the target. */
  ok: boolean;
}

/** Sorts entries [lo, hi) by key and refreshes their weights. */
function sortRange(c: Cands, lo: number, hi: number): void {
  c.keys.subarray(lo, hi).sort();
  for (let i = lo; i < hi; i++) c.ws[i] = c.weightOf(c.keys[i]);
}

/**
 * Shortest rank-order prefix of entries [0, count) whose cumulative weight satisfies the
 * monotone predicate `reached` (checked only after at least one entry). Permutes the entries.
 */
function findPrefix(c: Cands, count: number, reached: (cum: number) => boolean): Prefix {
  const keys = c.keys;
  const ws = c.ws;
  let lo = 0;
  let hi = count;
  let acc = 0; // weight of the entries before lo, all better than [lo, hi)
  let budget = 2 * (32 - Math.clz32(count)) + 8; // introselect guard against bad pivots
  for (;;) {
    if (hi - lo <= 16 || budget-- <= 0) {
      sortRange(c, lo, hi);
      let cum = acc;
      for (let i = lo; i < hi; i++) {
        cum += ws[i];
        if (reached(cum)) return { end: i + 1, cum, ok: true };
      }
      // hi < count: the partition sums said "reached" but the sequential sum rounded below.
      return { end: hi, cum, ok: hi < count };
    }
    // Median-of-three pivot moved to hi - 1; keys are unique (they embed the id).
    const mid = (lo + hi) >>> 1;
    const a = keys[lo];
    const b = keys[mid];
    const d = keys[hi - 1];
    const pi = a < b ? (b < d ? mid : a < d ? hi - 1 : lo) : a < d ? lo : b < d ? hi - 1 : mid;
    swap(c, pi, hi - 1);
    const pivot = keys[hi - 1];
    let store = lo;
    let wa = 0;
    for (let i = lo; i < hi - 1; i++) {
      if (keys[i] < pivot) {
        wa += ws[i];
        swap(c, i, store++);
      }
    }
    swap(c, store, hi - 1);
    if (store > lo && reached(acc + wa)) {
      hi = store;
    } else {
      acc += wa + ws[store];
      if (reached(acc)) return { end: store + 1, cum: acc, ok: true };
      lo = store + 1;
    }
  }
}

function swap(c: Cands, i: number, j: number): void {
  const k = c.keys[i];
  c.keys[i] = c.keys[j];
  c.keys[j] = k;
  const w = c.ws[i];
  c.ws[i] = c.ws[j];
  c.ws[j] = w;
}

/** Top-k keys via a max-heap on the key (root = worst kept). */
function selectTopK(vals: Float32Array, k: number, T: number): Cands {
  const h = new Float64Array(k);
  let size = 0;
  let worstL = Number.NEGATIVE_INFINITY; // logit of the root once the heap is full
  for (let id = 0; id < vals.length; id++) {
    const v = vals[id];
    if (v < worstL) continue; // cannot beat the worst kept entry: skip the key computation
    if (Number.isNaN(v)) nanError(id);
    const key = rankKey(v, id);
    if (size < k) {
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (h[p] >= key) break;
        h[i] = h[p];
        i = p;
      }
      h[i] = key;
    } else if (key < h[0]) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= k) break;
        const ch = l + 1 < k && h[l + 1] > h[l] ? l + 1 : l;
        if (h[ch] <= key) break;
        h[i] = h[ch];
        i = ch;
      }
      h[i] = key;
    }
    if (size === k) worstL = keyLogit(h[0]);
  }
  let best = h[0];
  for (let i = 1; i < k; i++) if (h[i] < best) best = h[i];
  const c = new Cands(k, T, keyLogit(best) / T);
  for (let i = 0; i < k; i++) c.push(h[i], c.weightOf(h[i]));
  return c;
}

/**
 * Whole vocabulary: collects rank-order prefixes {z >= m - d} for growing d until the prefix
 * search over them succeeds (or everything is collected). The first pass also sums the
 * normaliser Z over the whole vocabulary (ascending id order), from which `target` derives the
 * stopping predicate.
 */
function gather(
  vals: Float32Array,
  T: number,
  m: number,
  target: (Z: number) => (cum: number) => boolean,
): { c: Cands; p: Prefix } {
  const c = new Cands(1024, T, m);
  const n = vals.length;
  const finite = Number.isFinite(m);
  let Z = 0;
  let sumW = 0;
  let t = finite ? m - 8 : Number.NEGATIVE_INFINITY;
  for (let id = 0; id < n; id++) {
    const v = vals[id];
    const z = v / T;
    const w = finite ? Math.exp(z - m) : weight(z, m);
    Z += w;
    if (z >= t) {
      c.push(rankKey(v, id), w);
      sumW += w;
    }
  }
  const reached = target(Z);
  for (let d = 16; ; d *= 2) {
    const last = t === Number.NEGATIVE_INFINITY;
    // Cheap check on the unordered sum first; the prefix search decides.
    if (last || reached(sumW * (1 + 1e-9))) {
      const p = findPrefix(c, c.n, reached);
      if (p.ok || last) return { c, p };
    }
    const prev = t; // ids with z >= prev are already collected
    t = d <= 1024 ? m - d : Number.NEGATIVE_INFINITY;
    for (let id = 0; id < n; id++) {
      const v = vals[id];
      const z = v / T;
      if (z >= t && z < prev) {
        const w = Math.exp(z - m); // m is finite here
        c.push(rankKey(v, id), w);
        sumW += w;
      }
    }
  }
}

/** Draws from entries [0, keep) of `c` (total weight `total`): one RNG call. */
function draw(c: Cands, keep: number, total: number, rng: UniformSource): number {
  const target = rng.nextFloat() * total;
  const p = findPrefix(c, keep, (cum) => target < cum);
  return c.keys[p.end - 1] % ID_SPAN;
}

/** Samples one token id from `logits`; see the module header for the exact procedure. */
export function sample(
  logits: Float32Array,
  history: ArrayLike<number>,
  params: SamplerParams,
  rng: UniformSource,
): number {
  validate(logits.length, params);
  const adjusted = adjustLogits(logits, history, params);
  try {
    const minP = params.minP ?? 0;
    const vals = minP > 0 && params.temperature > 0 ? minPFilter(adjusted.vals, minP) : adjusted.vals;
    return sampleFrom(vals, params, rng);
  } finally {
    releaseAdjusted(adjusted);
  }
}

// Scratch for the min-p filter's copy, reused across calls.
let minPBuf: Float32Array | null = null;

/**
 * Min-p: the tokens whose untempered probability is below minP × the top token's, i.e. whose
 * logit is below max − ln(1/minP), get −∞ (in a reused copy). The top token always stays, so
 * greedy decoding is unaffected (and skips this).
 */
function minPFilter(vals: Float32Array, minP: number): Float32Array {
  const cutoff = maxOf(vals) + Math.log(minP);
  const n = vals.length;
  if (minPBuf === null || minPBuf.length < n) minPBuf = new Float32Array(n);
  const out = minPBuf.length === n ? minPBuf : minPBuf.subarray(0, n);
  for (let i = 0; i < n; i++) out[i] = vals[i] >= cutoff ? vals[i] : Number.NEGATIVE_INFINITY;
  return out;
}

function sampleFrom(vals: Float32Array, params: SamplerParams, rng: UniformSource): number {
  const { temperature: T, topK, topP } = params;
  if (T <= 0) return argmax(vals);
  // A temperature so small that the largest finite logit / T overflows f64 (e.g. 1e-308): the
  // weights would all be +inf and share the mass uniformly. The limit T → 0 is greedy, so be greedy.
  // |logit| ≤ f32 max ≈ 3.4e38 cannot overflow f64 for T ≥ 1e-200: no extra pass over the vocab then.
  if (T < 1e-200) {
    const mx = maxOf(vals);
    if (Number.isFinite(mx) && !Number.isFinite(mx / T)) return argmax(vals);
  }

  if (topK > 0 && topK < vals.length) {
    const c = selectTopK(vals, topK, T);
    let Z = 0;
    for (let i = 0; i < c.n; i++) Z += c.ws[i];
    if (topP >= 1) return draw(c, c.n, Z, rng);
    const target = topP * Z;
    const p = findPrefix(c, c.n, (cum) => cum >= target);
    return draw(c, p.end, p.cum, rng);
  }

  // Whole vocabulary: the max, then gather() sums Z and finds the prefix.
  const m = maxOf(vals) / T;
  if (topP < 1) {
    const g = gather(vals, T, m, (Z) => {
      const target = topP * Z;
      return (cum) => cum >= target;
    });
    return draw(g.c, g.p.end, g.p.cum, rng);
  }
  const u = rng.nextFloat();
  const g = gather(vals, T, m, (Z) => {
    const target = u * Z;
    return (cum) => target < cum;
  });
  return g.c.keys[g.p.end - 1] % ID_SPAN;
}
