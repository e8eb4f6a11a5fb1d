/**
 * The engine's KV cache: per sequence id, per layer, per position, the K and V vectors of one
 * token (nKvHeads * headDim floats each), stored as f16.
 *
 * Layout. Each (sequence, layer) owns a list of blocks of `blockSize` positions. A block holds
 * K and V separately, each as rows [posInBlock][kvHead][dim] (row width W = nKvHeads * headDim),
 * so element (pos, head, d) is at block b = floor(pos / blockSize), offset
 * ((pos % blockSize) * nKvHeads + head) * headDim + d. Blocks are allocated as positions are
 * written, so memory grows with use; `bytes` counts the typed-array payloads only.
 *
 * Compression (compressOldEntries). A FULL block whose last position is at least `recentWindow`
 * positions behind the layer's length is re-stored as int8 with one f32 scale per
 * (block, kv head) for K and for V: scale = fround(maxAbs / 127) over the block's rows of that
 * head, q = round-half-away-from-zero(x / scale) (0 when scale is 0), decoded as fround(q * scale).
 * Lossy: |decoded - f16 value| <= scale / 2 (plus f32 rounding of the product). Writing into a
 * compressed block: a full one is dequantised, given the new row, and requantised in place (if
 * the new row raises the scale, the other rows are rounded a second time); a partial one (after
 * `truncate` cut into it) is expanded back to f16 (its dequantised values), which costs capacity
 * like a new block, and is recompressed once it is full and old again.
 *
 * Capacity. Before a store needs new bytes, if used + needed > maxBytes: with onFull 'evict',
 * whole OTHER sequences are evicted by policy (LRU: least recently accessed; FIFO: oldest
 * created; LFU: fewest accesses, then LRU) until it fits, idle ones (setIdle) before all others; if it cannot fit even after evicting
 * all of them, or with onFull 'error', Capacity KV_CACHE_FULL is thrown. The plan is made before
 * anything changes: a failed store leaves the cache exactly as it was (victims included).
 * Accesses (for LRU/LFU) are: store, a get() hit, keysF16/valuesF16, touch(). The per-row reads
 * (readKeyRow, readKeys, ...) do not count, to keep the hot loop free of bookkeeping.
 *
 * Values must be finite and fit f16 (|x| < 65520); anything else is rejected (Model
 * KV_VALUE_OUT_OF_RANGE) rather than stored as inf.
 */
import { BitNetError } from '../errors.ts';
import { f16Table, f32ToF16 } from '../util/f16.ts';
import { assignInit, shownValue } from '../util/init.ts';

export const EvictionPolicy = { LRU: 'lru', FIFO: 'fifo', LFU: 'lfu' } as const;
export type EvictionPolicy = (typeof EvictionPolicy)[keyof typeof EvictionPolicy];

export const KVOnFull = { Evict: 'evict', Error: 'error' } as const;
export type KVOnFull = (typeof KVOnFull)[keyof typeof KVOnFull];

export interface KVCacheConfigInit {
  maxBytes?: number;
  maxSeqLen?: number;
  blockSize?: number;
  evictionPolicy?: EvictionPolicy;
  compressOldEntries?: boolean;
  recentWindow?: number;
  onFull?: KVOnFull;
}

export class KVCacheConfig {
  /** Budget for K/V payload bytes across all sequences. */
  maxBytes = 512 * 1024 * 1024;
  /** Positions per sequence (store at pos >= maxSeqLen throws KV_SEQ_TOO_LONG). */
  maxSeqLen = 4096;
  /** Positions per allocation block. */
  blockSize = 16;
  evictionPolicy: EvictionPolicy = EvictionPolicy.LRU;
  /** Store full blocks older than `recentWindow` positions as int8 (lossy, see the header). */
  compressOldEntries = false;
  recentWindow = 256;
  onFull: KVOnFull = KVOnFull.Evict;

  constructor(init: KVCacheConfigInit = {}) {
    assignInit(this, init, 'INVALID_KV_CACHE_CONFIG', 'KV cache');
  }

  validate(): this {
    const bad = (field: string, why: string, value: unknown): never => {
      throw BitNetError.Config('INVALID_KV_CACHE_CONFIG', `kvCache.${field} ${why} (got ${shownValue(value)})`, {
        field,
        value,
      });
    };
    const posInt = (field: 'maxBytes' | 'maxSeqLen' | 'blockSize') => {
      const v = this[field];
      if (!Number.isSafeInteger(v) || v <= 0) bad(field, 'must be a positive integer', v);
    };
    posInt('maxBytes');
    posInt('maxSeqLen');
    posInt('blockSize');
    if (!Number.isSafeInteger(this.recentWindow) || this.recentWindow < 0) {
      bad('recentWindow', 'must be an integer >= 0', this.recentWindow);
    }
    if (!Object.values(EvictionPolicy).includes(this.evictionPolicy)) {
      bad('evictionPolicy', 'must be lru, fifo or lfu', this.evictionPolicy);
    }
    if (typeof this.compressOldEntries !== 'boolean')
      bad('compressOldEntries', 'must be a boolean', this.compressOldEntries);
    if (!Object.values(KVOnFull).includes(this.onFull)) bad('onFull', "must be 'evict' or 'error'", this.onFull);
    return this;
  }
}

export { KVCacheConfig as CacheConfig };

export interface KVShape {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
}

/** Zero-copy view of one (sequence, layer)'s K or V blocks; valid until the next mutation. */
export interface KVLayerView {
  /** Per block: f16 rows [blockSize][nKvHeads][headDim], or null where the block is int8. */
  blocks: readonly (Uint16Array | null)[];
  /** Per block: int8 rows (same layout) where the block is compressed, else null. */
  q8: readonly (Int8Array | null)[];
  /** Per block: f32 scale per kv head [nKvHeads] where compressed (value = q * scale), else null. */
  scales: readonly (Float32Array | null)[];
  /** Positions stored for this layer. */
  length: number;
  blockSize: number;
  nKvHeads: number;
  headDim: number;
  /** nKvHeads * headDim. */
  rowWidth: number;
}

export interface KVCacheStats {
  sequences: number;
  blocks: number;
  bytes: number;
  maxBytes: number;
  /** get() calls that found the position. */
  hits: number;
  /** get() calls that did not. */
  misses: number;
  /** Sequences evicted to make room. */
  evictions: number;
  compressedBlocks: number;
}

/** The per-sequence read/write surface a forward pass needs (shape of model/reference KVStore). */
export interface SequenceKV {
  write(layer: number, pos: number, k: Float32Array, v: Float32Array): void;
  readK(layer: number, pos: number, out: Float32Array): void;
  readV(layer: number, pos: number, out: Float32Array): void;
}

/** One half (K or V) of one layer's blocks. A block is either f16 or (q8 + scales). */
interface Half {
  f16: (Uint16Array | null)[];
  q8: (Int8Array | null)[];
  scales: (Float32Array | null)[];
}

interface Layer {
  length: number;
  k: Half;
  v: Half;
}

interface Seq {
  layers: Layer[];
  bytes: number;
  blocks: number;
  compressed: number;
  created: number;
  lastAccess: number;
  accesses: number;
  /** Finished and only kept for reuse (the engine's prompt cache): evicted before any other. */
  idle: boolean;
}

const F16_MAX_EXCL = 65520; // values from here up round to inf in f16

export class KVCache {
  readonly config: KVCacheConfig;
  readonly shape: Readonly<KVShape>;
  private readonly rowWidth: number;
  private readonly blockElems: number;
  /** Bytes of one f16 block (K + V). */
  readonly blockBytes: number;
  /** Bytes of one compressed block (K + V int8 + scales). */
  readonly compressedBlockBytes: number;
  private readonly seqs = new Map<string, Seq>();
  /** One decoded block, reused by (de)compression. */
  private readonly scratch: Float32Array;
  private used = 0;
  private clock = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(config: KVCacheConfig | KVCacheConfigInit, shape: KVShape) {
    this.config = (config instanceof KVCacheConfig ? config : new KVCacheConfig(config)).validate();
    for (const f of ['nLayers', 'nKvHeads', 'headDim'] as const) {
      const v = shape?.[f];
      if (!Number.isSafeInteger(v) || v <= 0) {
        throw BitNetError.Config('KV_BAD_SHAPE', `KV cache shape ${f} must be a positive integer`, {
          field: f,
          value: v,
        });
      }
    }
    this.shape = Object.freeze({ nLayers: shape.nLayers, nKvHeads: shape.nKvHeads, headDim: shape.headDim });
    this.rowWidth = shape.nKvHeads * shape.headDim;
    this.blockElems = this.config.blockSize * this.rowWidth;
    this.blockBytes = 2 * this.blockElems * 2;
    this.compressedBlockBytes = 2 * (this.blockElems + shape.nKvHeads * 4);
    this.scratch = new Float32Array(this.config.compressOldEntries ? this.blockElems : 0);
    if (this.config.maxBytes < this.blockBytes) {
      throw BitNetError.Config('KV_CACHE_TOO_SMALL', 'maxBytes is smaller than one KV block', {
        maxBytes: this.config.maxBytes,
        blockBytes: this.blockBytes,
      });
    }
  }

  // ---- writes --------------------------------------------------------------------------------

  /**
   * Stores K and V of `pos` in `layer`. `pos` must be the layer's current length (append) or an
   * existing position (overwrite). Throws before changing anything.
   */
  store(seqId: string, layer: number, pos: number, k: Float32Array, v: Float32Array): void {
    this.checkLayer(layer);
    if (!Number.isSafeInteger(pos) || pos < 0) {
      throw BitNetError.Config('KV_BAD_POSITION', 'position must be an integer >= 0', { pos });
    }
    if (pos >= this.config.maxSeqLen) {
      throw BitNetError.Capacity('KV_SEQ_TOO_LONG', `position ${pos} exceeds maxSeqLen ${this.config.maxSeqLen}`, {
        seqId,
        pos,
        maxSeqLen: this.config.maxSeqLen,
      });
    }
    if (k?.length !== this.rowWidth || v?.length !== this.rowWidth) {
      throw BitNetError.Config('KV_BAD_VECTOR_LENGTH', `K and V must have ${this.rowWidth} elements`, {
        expected: this.rowWidth,
        k: k?.length,
        v: v?.length,
      });
    }
    this.checkValues(k, 'k', layer, pos);
    this.checkValues(v, 'v', layer, pos);
    const seq = this.seqs.get(seqId);
    const len = seq ? seq.layers[layer].length : 0;
    if (pos > len) {
      throw BitNetError.Config('KV_POS_GAP', `position ${pos} leaves a gap after length ${len}`, {
        seqId,
        layer,
        pos,
        length: len,
      });
    }
    const bs = this.config.blockSize;
    const b = Math.floor(pos / bs);
    const newLen = Math.max(len, pos + 1);
    const newBlock = pos === len && pos % bs === 0;
    // Writing into an int8 block: a full block is requantised in place (no new bytes); a partial
    // one (truncate cut into it) goes back to f16 until it is full and old again.
    const inQ8 = !newBlock && seq !== undefined && seq.layers[layer].k.f16[b] === null;
    const requant = inQ8 && (b + 1) * bs <= newLen;
    const expand = inQ8 && !requant;
    const needed = newBlock ? this.blockBytes : expand ? this.blockBytes - this.compressedBlockBytes : 0;
    if (needed > 0) this.makeRoom(seqId, needed); // throws without side effects

    const s = seq ?? this.createSeq(seqId);
    const L = s.layers[layer];
    const off = (pos % bs) * this.rowWidth;
    if (newBlock) {
      for (const h of [L.k, L.v]) {
        h.f16.push(new Uint16Array(this.blockElems));
        h.q8.push(null);
        h.scales.push(null);
      }
      s.blocks++;
      this.addBytes(s, this.blockBytes);
    } else if (expand) {
      this.expandBlock(s, L, b);
    }
    if (requant) {
      this.requantizeRow(L, b, off, k, v);
    } else {
      const kb = L.k.f16[b]!;
      const vb = L.v.f16[b]!;
      for (let i = 0; i < this.rowWidth; i++) {
        kb[off + i] = f32ToF16(k[i]);
        vb[off + i] = f32ToF16(v[i]);
      }
    }
    L.length = newLen;
    this.touchSeq(s);
    if (this.config.compressOldEntries) this.compressEligible(s, L, b);
  }

  /** Drops positions >= length in every layer of the sequence (for prefix reuse). */
  truncate(seqId: string, length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw BitNetError.Config('KV_BAD_LENGTH', 'length must be an integer >= 0', { length });
    }
    const s = this.seqs.get(seqId);
    if (!s) return;
    const keep = Math.ceil(length / this.config.blockSize);
    for (const L of s.layers) {
      if (L.length <= length) continue;
      L.length = length;
      for (let b = L.k.f16.length - 1; b >= keep; b--) this.dropBlock(s, L, b);
    }
  }

  /** Drops every sequence. The cumulative counters (hits, misses, evictions) are kept. */
  clear(): void {
    this.seqs.clear();
    this.used = 0;
  }

  /** Drops one layer's positions in every sequence (the sequences stay). */
  clearLayer(layer: number): void {
    this.checkLayer(layer);
    for (const s of this.seqs.values()) {
      const L = s.layers[layer];
      for (let b = L.k.f16.length - 1; b >= 0; b--) this.dropBlock(s, L, b);
      L.length = 0;
    }
  }

  /** Removes a sequence; returns whether it existed. */
  clearSequence(seqId: string): boolean {
    const s = this.seqs.get(seqId);
    if (!s) return false;
    this.used -= s.bytes;
    this.seqs.delete(seqId);
    return true;
  }

  /**
   * Marks a sequence as idle (finished, kept only for reuse: evicted before any other, even with
   * onFull 'error') or as in use again.
   */
  setIdle(seqId: string, idle: boolean): void {
    const s = this.seqs.get(seqId);
    if (s) s.idle = idle;
  }

  /** Marks the sequence as used now (LRU / LFU), e.g. once per generated token. */
  touch(seqId: string): void {
    const s = this.seqs.get(seqId);
    if (s) this.touchSeq(s);
  }

  // ---- reads ---------------------------------------------------------------------------------

  /** Decoded K and V of a position, or undefined (a miss) when it is not stored. */
  get(seqId: string, layer: number, pos: number): { k: Float32Array; v: Float32Array } | undefined {
    this.checkLayer(layer);
    const s = this.seqs.get(seqId);
    if (!s || !(Number.isInteger(pos) && pos >= 0 && pos < s.layers[layer].length)) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.touchSeq(s);
    const k = new Float32Array(this.rowWidth);
    const v = new Float32Array(this.rowWidth);
    this.readHalf(s.layers[layer].k, pos, 0, this.rowWidth, k, 0);
    this.readHalf(s.layers[layer].v, pos, 0, this.rowWidth, v, 0);
    return { k, v };
  }

  /** Whether the sequence exists / has positions in `layer` / has `pos` in `layer`. */
  contains(seqId: string, layer?: number, pos?: number): boolean {
    const s = this.seqs.get(seqId);
    if (!s) return false;
    if (layer === undefined) return true;
    const L = s.layers[layer];
    if (!L) return false;
    return pos === undefined ? L.length > 0 : Number.isInteger(pos) && pos >= 0 && pos < L.length;
  }

  /** Positions stored in EVERY layer (the complete prefix); 0 for unknown sequences. */
  length(seqId: string): number {
    const s = this.seqs.get(seqId);
    if (!s) return 0;
    let m = Number.POSITIVE_INFINITY;
    for (const L of s.layers) m = Math.min(m, L.length);
    return m;
  }

  /** Positions stored in one layer. */
  layerLength(seqId: string, layer: number): number {
    this.checkLayer(layer);
    return this.seqs.get(seqId)?.layers[layer].length ?? 0;
  }

  sequenceIds(): string[] {
    return [...this.seqs.keys()];
  }

  /** Zero-copy K blocks of a layer (counts as an access). Empty view for unknown sequences. */
  keysF16(seqId: string, layer: number): KVLayerView {
    return this.view(seqId, layer, 'k');
  }

  /** Zero-copy V blocks of a layer (counts as an access). Empty view for unknown sequences. */
  valuesF16(seqId: string, layer: number): KVLayerView {
    return this.view(seqId, layer, 'v');
  }

  /** Decodes K of (pos, head) — headDim floats — into out[outOffset..]; f16 or int8 blocks. */
  readKeyRow(seqId: string, layer: number, pos: number, head: number, out: Float32Array, outOffset = 0): void {
    this.readRow(seqId, layer, pos, head, out, outOffset, 'k');
  }

  /** Decodes V of (pos, head) into out[outOffset..]. */
  readValueRow(seqId: string, layer: number, pos: number, head: number, out: Float32Array, outOffset = 0): void {
    this.readRow(seqId, layer, pos, head, out, outOffset, 'v');
  }

  /** Decodes the whole K row of pos (all heads, rowWidth floats) into out. */
  readKeys(seqId: string, layer: number, pos: number, out: Float32Array): void {
    this.readRow(seqId, layer, pos, -1, out, 0, 'k');
  }

  /** Decodes the whole V row of pos into out. */
  readValues(seqId: string, layer: number, pos: number, out: Float32Array): void {
    this.readRow(seqId, layer, pos, -1, out, 0, 'v');
  }

  /** A write/readK/readV adapter bound to one sequence (what a forward pass consumes). */
  forSequence(seqId: string): SequenceKV {
    return {
      write: (layer, pos, k, v) => this.store(seqId, layer, pos, k, v),
      readK: (layer, pos, out) => this.readKeys(seqId, layer, pos, out),
      readV: (layer, pos, out) => this.readValues(seqId, layer, pos, out),
    };
  }

  stats(): KVCacheStats {
    let blocks = 0;
    let compressedBlocks = 0;
    for (const s of this.seqs.values()) {
      blocks += s.blocks;
      compressedBlocks += s.compressed;
    }
    return {
      sequences: this.seqs.size,
      blocks,
      bytes: this.used,
      maxBytes: this.config.maxBytes,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      compressedBlocks,
    };
  }

  /** Bytes in use (K/V payloads). */
  size(): number {
    return this.used;
  }

  usagePercent(): number {
    return (this.used / this.config.maxBytes) * 100;
  }

  // ---- internals -----------------------------------------------------------------------------

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.shape.nLayers) {
      throw BitNetError.Config('KV_BAD_LAYER', `layer must be in [0, ${this.shape.nLayers})`, { layer });
    }
  }

  private checkValues(x: Float32Array, which: string, layer: number, pos: number): void {
    for (let i = 0; i < x.length; i++) {
      if (!(Math.abs(x[i]) < F16_MAX_EXCL)) {
        throw BitNetError.Model('KV_VALUE_OUT_OF_RANGE', `${which}[${i}] = ${x[i]} is not a finite f16 value`, {
          which,
          layer,
          pos,
          index: i,
        });
      }
    }
  }

  private createSeq(seqId: string): Seq {
    const half = (): Half => ({ f16: [], q8: [], scales: [] });
    const s: Seq = {
      layers: Array.from({ length: this.shape.nLayers }, () => ({ length: 0, k: half(), v: half() })),
      bytes: 0,
      blocks: 0,
      compressed: 0,
      created: ++this.clock,
      lastAccess: this.clock,
      accesses: 0,
      idle: false,
    };
    this.seqs.set(seqId, s);
    return s;
  }

  private touchSeq(s: Seq): void {
    s.lastAccess = ++this.clock;
    s.accesses++;
  }

  private addBytes(s: Seq, n: number): void {
    s.bytes += n;
    this.used += n;
  }

  /** Ensures `needed` more bytes fit, evicting other sequences by policy; throws if impossible. */
  private makeRoom(seqId: string, needed: number): void {
    const max = this.config.maxBytes;
    if (this.used + needed <= max) return;
    const full = (): never => {
      throw BitNetError.Capacity('KV_CACHE_FULL', `KV cache full: need ${needed} more bytes`, {
        needed,
        maxBytes: max,
        used: this.used,
      });
    };
    // Idle sequences (kept only for reuse) go first, least recently used first, whatever the
    // policy, and even with onFull 'error': they hold nothing anyone is waiting for.
    const others = this.config.onFull === KVOnFull.Error;
    const victims = [...this.seqs.entries()].filter(([id, s]) => id !== seqId && s.bytes > 0 && (s.idle || !others));
    const policy = this.config.evictionPolicy;
    victims.sort(([, a], [, b]) =>
      a.idle !== b.idle
        ? a.idle
          ? -1
          : 1
        : a.idle
          ? a.lastAccess - b.lastAccess
          : policy === EvictionPolicy.FIFO
            ? a.created - b.created
            : policy === EvictionPolicy.LFU
              ? a.accesses - b.accesses || a.lastAccess - b.lastAccess
              : a.lastAccess - b.lastAccess,
    );
    let freed = 0;
    let n = 0;
    while (this.used - freed + needed > max && n < victims.length) freed += victims[n++][1].bytes;
    if (this.used - freed + needed > max) full(); // nothing evicted yet
    for (let i = 0; i < n; i++) this.clearSequence(victims[i][0]);
    this.evictions += n;
  }

  private dropBlock(s: Seq, L: Layer, b: number): void {
    const compressed = L.k.f16[b] === null;
    for (const h of [L.k, L.v]) {
      h.f16.length = b;
      h.q8.length = b;
      h.scales.length = b;
    }
    s.blocks--;
    if (compressed) s.compressed--;
    this.addBytes(s, -(compressed ? this.compressedBlockBytes : this.blockBytes));
  }

  /** Compresses the block just written if eligible, and the block that this length made eligible. */
  private compressEligible(s: Seq, L: Layer, written: number): void {
    const bs = this.config.blockSize;
    const limit = L.length - this.config.recentWindow; // blocks ending at or before this are old
    for (const b of [written, Math.floor(limit / bs) - 1]) {
      if (b >= 0 && (b + 1) * bs <= limit && L.k.f16[b] !== null) this.compressBlock(s, L, b);
    }
  }

  private compressBlock(s: Seq, L: Layer, b: number): void {
    const t = f16Table();
    for (const h of [L.k, L.v]) {
      const src = h.f16[b]!;
      const x = this.scratch;
      for (let i = 0; i < this.blockElems; i++) x[i] = t[src[i]];
      this.quantizeInto(h, b, x);
      h.f16[b] = null;
    }
    s.compressed++;
    this.addBytes(s, this.compressedBlockBytes - this.blockBytes);
  }

  /** Quantises a decoded block `x` into (q8, scales) of half `h`, block `b` (header formula). */
  private quantizeInto(h: Half, b: number, x: Float32Array): void {
    const { nKvHeads: nh, headDim: hd } = this.shape;
    const bs = this.config.blockSize;
    const q = new Int8Array(this.blockElems);
    const scales = new Float32Array(nh);
    for (let head = 0; head < nh; head++) {
      let maxAbs = 0;
      for (let r = 0; r < bs; r++) {
        const o = (r * nh + head) * hd;
        for (let d = 0; d < hd; d++) maxAbs = Math.max(maxAbs, Math.abs(x[o + d]));
      }
      const scale = Math.fround(maxAbs / 127);
      scales[head] = scale;
      if (scale === 0) continue;
      for (let r = 0; r < bs; r++) {
        const o = (r * nh + head) * hd;
        for (let d = 0; d < hd; d++) {
          const y = x[o + d] / scale;
          q[o + d] = Math.min(127, Math.max(-127, y < 0 ? -Math.floor(-y + 0.5) : Math.floor(y + 0.5)));
        }
      }
    }
    h.q8[b] = q;
    h.scales[b] = scales;
  }

  /** Decodes a compressed block of half `h` into `x` (value = q * scale of its head). */
  private dequantize(h: Half, b: number, x: Float32Array): void {
    const { nKvHeads: nh, headDim: hd } = this.shape;
    const q = h.q8[b]!;
    const scales = h.scales[b]!;
    for (let i = 0; i < this.blockElems; i++) x[i] = q[i] * scales[Math.floor(i / hd) % nh];
  }

  /** Writes one row into a full compressed block: dequantise, replace (f16-rounded), requantise. */
  private requantizeRow(L: Layer, b: number, rowOff: number, k: Float32Array, v: Float32Array): void {
    const t = f16Table();
    for (const [h, src] of [
      [L.k, k],
      [L.v, v],
    ] as const) {
      const x = this.scratch;
      this.dequantize(h, b, x);
      for (let i = 0; i < this.rowWidth; i++) x[rowOff + i] = t[f32ToF16(src[i])];
      this.quantizeInto(h, b, x);
    }
  }

  /** Turns a compressed block back into f16 (its dequantised values); room already made. */
  private expandBlock(s: Seq, L: Layer, b: number): void {
    for (const h of [L.k, L.v]) {
      const x = this.scratch;
      this.dequantize(h, b, x);
      const dst = new Uint16Array(this.blockElems);
      for (let i = 0; i < this.blockElems; i++) dst[i] = f32ToF16(x[i]);
      h.f16[b] = dst;
      h.q8[b] = null;
      h.scales[b] = null;
    }
    s.compressed--;
    this.addBytes(s, this.blockBytes - this.compressedBlockBytes);
  }

  private view(seqId: string, layer: number, which: 'k' | 'v'): KVLayerView {
    this.checkLayer(layer);
    const s = this.seqs.get(seqId);
    const common = {
      blockSize: this.config.blockSize,
      nKvHeads: this.shape.nKvHeads,
      headDim: this.shape.headDim,
      rowWidth: this.rowWidth,
    };
    if (!s) return { blocks: [], q8: [], scales: [], length: 0, ...common };
    this.touchSeq(s);
    const L = s.layers[layer];
    const h = L[which];
    return { blocks: h.f16, q8: h.q8, scales: h.scales, length: L.length, ...common };
  }

  /** head -1: the whole row (all heads). */
  private readRow(
    seqId: string,
    layer: number,
    pos: number,
    head: number,
    out: Float32Array,
    outOffset: number,
    which: 'k' | 'v',
  ): void {
    this.checkLayer(layer);
    const s = this.seqs.get(seqId);
    const L = s?.layers[layer];
    if (!L || !(Number.isInteger(pos) && pos >= 0 && pos < L.length)) {
      throw BitNetError.Config('KV_POS_MISSING', `position ${pos} of layer ${layer} is not stored`, {
        seqId,
        layer,
        pos,
      });
    }
    const hd = this.shape.headDim;
    if (head === -1) {
      this.readHalf(L[which], pos, 0, this.rowWidth, out, outOffset);
    } else {
      if (!Number.isInteger(head) || head < 0 || head >= this.shape.nKvHeads) {
        throw BitNetError.Config('KV_BAD_HEAD', `head must be in [0, ${this.shape.nKvHeads})`, { head });
      }
      this.readHalf(L[which], pos, head * hd, hd, out, outOffset);
    }
  }

  /** Decodes `n` elements of pos's row starting at element `from` (a head boundary). */
  private readHalf(h: Half, pos: number, from: number, n: number, out: Float32Array, outOffset: number): void {
    const bs = this.config.blockSize;
    const b = Math.floor(pos / bs);
    const off = (pos % bs) * this.rowWidth + from;
    const f = h.f16[b];
    if (f !== null) {
      const t = f16Table();
      for (let i = 0; i < n; i++) out[outOffset + i] = t[f[off + i]];
      return;
    }
    const q = h.q8[b]!;
    const scales = h.scales[b]!;
    const hd = this.shape.headDim;
    for (let i = 0; i < n; i++) out[outOffset + i] = q[off + i] * scales[Math.floor((from + i) / hd)];
  }
}
