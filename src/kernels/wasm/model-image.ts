/**
 * The model image: the weight table copied into the kernels' shared memory, plus the descriptors
 * wasm/src/forward.ts reads (offsets in exports.ts).
 *
 * Weights keep their file layout (I2_S, TQ2_0, TQ1_0 and the float/quantized embedding types are
 * read straight from the GGUF bytes). Projections of a shard pack with layout tl1/tl2 are TL tile
 * images already (src/quant/tl.ts, `Linear.layout`): each is placed once, as it is, and serves as
 * its linear's aux image (MD.tlLayout from the pack); nothing is re-packed. With `adopt` (the
 * default), each tensor view of the ModelWeights is re-pointed at its copy in wasm memory, so
 * the process holds the weights once (the loader's buffers become garbage); the bytes are
 * identical, so any other reader of the weight table (the reference backend) is unaffected.
 *
 * Peak memory. Copying would briefly hold two copies of every tensor (and of the whole model while
 * the largest tensor, often a 0.3-0.7 GB embedding, is copied). So where the model came from a
 * local file and the runtime can read files synchronously (Node), each tensor is instead re-read
 * from the file straight into wasm memory after its view has been re-pointed: the loader's buffer
 * becomes garbage first and is collected (a full GC every RECLAIM_BYTES, and before any large
 * tensor) before the pages of its replacement are touched. The first and last 4 KiB of every
 * tensor are compared with the loaded bytes before it is re-read; on any mismatch (the file
 * changed) the image falls back to copying. Elsewhere (memory sources, HTTP, Workers) tensors are
 * copied. A loader that reads tensors straight into this memory would make both unnecessary.
 */
import { GGMLType, typeName } from '../../gguf/ggml-types.ts';
import type { HParams } from '../../model/hparams.ts';
import { EMBD_TYPES, type Linear, type ModelWeights } from '../../model/weights.ts';
import type { TensorView } from '../../quant/float-codecs.ts';
import { packTL, type TLLayout, ternaryOf, tlImageBytes } from '../../quant/tl.ts';
import { localPath } from '../../sources/location.ts';
import type { Arena } from './arena.ts';
import { LAYER, LIN, MD } from './exports.ts';
import type { WeightArena } from './weight-arena.ts';

const TERNARY = new Set<number>([GGMLType.I2_S, GGMLType.TQ2_0, GGMLType.TQ1_0]);
const FLOAT_PROJ = new Set<number>([GGMLType.F32, GGMLType.F16, GGMLType.BF16]);
// the kernels run every embedding/head type the loader accepts (dequant_row, the heads)
const HEAD_TYPES = new Set<number>(EMBD_TYPES);
/** Heads computed by the bracketed fast path (they need per-row |w| sums, computed at load). */
export const BRACKET_HEADS = new Set<number>([GGMLType.F16]);

/** Why the wasm backend cannot run this model, or undefined when it can. */
export function wasmUnsupportedReason(hp: HParams, w: ModelWeights): string | undefined {
  const lins = w.layers.flatMap((L) => [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]);
  const types = new Set(lins.map((l) => l.type));
  if (types.size !== 1)
    return `projection types are mixed (${[...types].map(typeName).join(', ')}); the wasm forward pass needs one type`;
  const t = lins[0]?.type ?? GGMLType.I2_S;
  if (!TERNARY.has(t) && !FLOAT_PROJ.has(t)) return `projection type ${typeName(t)} has no wasm kernel`;
  const layouts = new Set(lins.map((l) => l.layout ?? 'file'));
  if (layouts.size !== 1)
    return `projection layouts are mixed (${[...layouts].join(', ')}); the wasm forward pass needs one layout`;
  if (!HEAD_TYPES.has(w.output.type)) return `LM head type ${typeName(w.output.type)} has no wasm kernel`;
  if (!HEAD_TYPES.has(w.tokenEmbd.type)) return `embedding type ${typeName(w.tokenEmbd.type)} has no wasm kernel`;
  if (hp.nRot % 2 !== 0) return `rope dimension ${hp.nRot} is odd`;
  return undefined;
}

const RECLAIM_BYTES = 32 * 1024 * 1024;
/** Bytes after every tensor the kernels may read (whole vectors past the end, software prefetch ahead). */
export const TENSOR_SLACK = 1024;

/**
 * A function that runs a full garbage collection now, or undefined. In Node, `--expose_gc` can be
 * switched on at run time and `gc` read from a fresh context (process.getBuiltinModule keeps
 * node:* out of the static import graph).
 */
function reclaimer(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    const v8 = proc?.getBuiltinModule?.('node:v8') as { setFlagsFromString(f: string): void } | undefined;
    const vm = proc?.getBuiltinModule?.('node:vm') as { runInNewContext(code: string): unknown } | undefined;
    if (!v8 || !vm) return undefined;
    v8.setFlagsFromString('--expose_gc');
    const gc = vm.runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

interface NodeFs {
  openSync(path: string, flags: string): number;
  closeSync(fd: number): void;
  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  fstatSync(fd: number): { size: number };
  existsSync(path: string): boolean;
}

/** Reads tensor bytes from the model's file, or undefined where that is not possible. */
function fileReader(
  location: string | undefined,
  size: number | undefined,
): { read(dst: Uint8Array, offset: number): void; close(): void } | undefined {
  if (!location || size === undefined) return undefined;
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const fs = proc?.getBuiltinModule?.('node:fs') as NodeFs | undefined;
  if (!fs) return undefined;
  const path = localPath(location);
  try {
    if (!fs.existsSync(path)) return undefined;
    const fd = fs.openSync(path, 'r');
    if (fs.fstatSync(fd).size !== size) {
      fs.closeSync(fd);
      return undefined;
    }
    return {
      read(dst: Uint8Array, offset: number): void {
        let done = 0;
        while (done < dst.length) {
          const n = fs.readSync(fd, dst, done, dst.length - done, offset + done);
          if (n <= 0) throw new Error(`short read at ${offset + done}`);
          done += n;
        }
      },
      close: () => fs.closeSync(fd),
    };
  } catch {
    return undefined;
  }
}

export interface ImageSource {
  /** GGUF tensor table (absolute offsets) of the file the weights came from. */
  tensors?: ReadonlyMap<string, { offset: number; byteLength: number }>;
  /** Local path (or file:// URL) of that file, and its size. */
  location?: string;
  size?: number;
}

export interface ModelImage {
  md: number;
  /** Bytes of the weights placed in wasm memory. */
  weightBytes: number;
  kvLayerBytes: number;
  /** Tensor views re-pointed at wasm memory (re-done if the memory ever had to be re-viewed). */
  adopted: TensorView[];
}

/**
 * Places the model in wasm memory and writes the kernels' model descriptor. The model must have
 * passed wasmUnsupportedReason (one projection type and one layout, supported head): nothing here
 * checks it again.
 */
export function buildModelImage(
  arena: Arena,
  hp: HParams,
  w: ModelWeights,
  opts: { adopt: boolean; source?: ImageSource; weightArena?: WeightArena; tl?: TLLayout },
): ModelImage {
  const copies = new Map<TensorView | Float32Array, number>();
  const adopted: TensorView[] = [];
  let weightBytes = 0;
  let garbage = 0;
  // the GC hook is looked up on first need only (Workers never get there: no file, small copies)
  let gcHook: (() => void) | undefined | null = null;
  const gc = (): boolean => {
    if (gcHook === null) gcHook = reclaimer();
    gcHook?.();
    return gcHook !== undefined;
  };
  let reader = opts.adopt && opts.source?.tensors ? fileReader(opts.source.location, opts.source.size) : undefined;
  if (reader && !gc()) {
    reader.close(); // without a GC, re-reading would not lower the peak: copy instead
    reader = undefined;
  }
  const spot = (v: TensorView, info: { offset: number; byteLength: number }): boolean => {
    const n = v.bytes.byteLength;
    if (!reader || info.byteLength !== n) return false;
    const m = Math.min(4096, n);
    const a = new Uint8Array(m);
    const b = new Uint8Array(m);
    reader.read(a, info.offset);
    reader.read(b, info.offset + n - m);
    for (let i = 0; i < m; i++) if (a[i] !== v.bytes[i] || b[i] !== v.bytes[n - m + i]) return false;
    return true;
  };
  const place = (v: TensorView): number => {
    const hit = copies.get(v);
    if (hit !== undefined) return hit;
    const inPlace = opts.weightArena?.addressOf(v.bytes);
    if (inPlace !== undefined) {
      // loaded straight into this memory (weight-arena.ts): nothing to copy
      weightBytes += v.bytes.byteLength;
      copies.set(v, inPlace);
      return inPlace;
    }
    const n = v.bytes.byteLength;
    const p = arena.alloc(n + TENSOR_SLACK, 64);
    const dst = arena.u8(p, n);
    weightBytes += n;
    copies.set(v, p);
    const info = opts.source?.tensors?.get(v.name);
    if (opts.adopt && info && spot(v, info)) {
      // re-point, let the loader's buffer go, then fill from the file
      v.bytes = dst;
      adopted.push(v);
      garbage += n;
      if (garbage >= RECLAIM_BYTES || n >= RECLAIM_BYTES / 2) {
        gc();
        garbage = 0;
      }
      reader!.read(dst, info.offset);
      return p;
    }
    if (reader) {
      reader.close();
      reader = undefined; // the file no longer matches: copy from here on
    }
    dst.set(v.bytes);
    if (opts.adopt) {
      v.bytes = dst;
      adopted.push(v);
      garbage += n;
      if (opts.adopt && garbage >= RECLAIM_BYTES) {
        gc();
        garbage = 0;
      }
    }
    return p;
  };
  const placeF32 = (x: Float32Array): number => {
    const hit = copies.get(x);
    if (hit !== undefined) return hit;
    const p = arena.alloc(x.byteLength + 16, 64);
    arena.f32(p, x.length).set(x);
    copies.set(x, p);
    return p;
  };
  const kvDim = hp.nHeadKv * hp.headDim;
  const md = arena.alloc(MD.BYTES);
  const layers = arena.alloc(LAYER.BYTES * hp.nLayer);
  const dv = arena.view();
  const lin0 = w.layers[0].wq;
  const projFloat = FLOAT_PROJ.has(lin0.type) ? 1 : 0;
  const embdPtr = place(w.tokenEmbd);
  const headPtr = place(w.output);
  const kvLayerBytes = 2 * 16 * kvDim * 4;
  const set = (o: number, v: number) => dv.setInt32(md + o, v, true);
  set(MD.nEmbd, hp.nEmbd);
  set(MD.nFF, hp.nFF);
  set(MD.nHead, hp.nHead);
  set(MD.nHeadKv, hp.nHeadKv);
  set(MD.headDim, hp.headDim);
  set(MD.nRot, hp.nRot);
  set(MD.nLayer, hp.nLayer);
  set(MD.nVocab, hp.nVocab);
  set(MD.silu, hp.activation === 'silu' ? 1 : 0);
  set(MD.embdType, w.tokenEmbd.type);
  set(MD.embdPtr, embdPtr);
  set(MD.headType, w.output.type);
  set(MD.headPtr, headPtr);
  set(MD.outputNorm, placeF32(w.outputNorm));
  set(MD.layers, layers);
  set(MD.headAbsSums, 0);
  dv.setFloat64(md + MD.rmsEps, hp.rmsEps, true);
  dv.setFloat64(md + MD.attnScale, 1 / Math.sqrt(hp.headDim), true);
  set(MD.kvLayerBytes, kvLayerBytes);
  set(MD.projFloat, projFloat);
  set(MD.projType, lin0.type);
  // TL images from the pack are used as they are (the backend refused a different opts.tl);
  // otherwise opts.tl repacks ternary projections here
  const tl = lin0.layout ?? (opts.tl && TERNARY.has(lin0.type) ? opts.tl : undefined);
  set(MD.tlLayout, tl === 'tl1' ? 1 : tl === 'tl2' ? 2 : 0);
  for (let l = 0; l < hp.nLayer; l++) {
    const L = w.layers[l];
    const base = layers + l * LAYER.BYTES;
    dv.setInt32(base + LAYER.attnNorm, placeF32(L.attnNorm), true);
    dv.setInt32(base + LAYER.attnSubNorm, placeF32(L.attnSubNorm), true);
    dv.setInt32(base + LAYER.ffnNorm, placeF32(L.ffnNorm), true);
    dv.setInt32(base + LAYER.ffnSubNorm, placeF32(L.ffnSubNorm), true);
    const lins: Linear[] = [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown];
    lins.forEach((lin, j) => {
      const o = base + LAYER.lin0 + j * LIN.BYTES;
      const ptr = place(lin);
      dv.setInt32(o + LIN.type, lin.type, true);
      dv.setInt32(o + LIN.ptr, ptr, true);
      dv.setInt32(o + LIN.k, lin.k, true);
      dv.setInt32(o + LIN.n, lin.n, true);
      dv.setFloat32(o + LIN.wscale, lin.scale, true);
      dv.setFloat32(o + LIN.oscale, lin.outScale, true);
      let aux = 0;
      if (lin.layout) {
        aux = ptr; // the pack's image, placed once: the kernels read it as the aux image
      } else if (tl) {
        const { t, kind, wscale, blockScales } = ternaryOf(lin);
        const bytes = tlImageBytes(tl, lin.n, lin.k, kind);
        aux = arena.alloc(bytes + TENSOR_SLACK, 64);
        packTL(tl, t, lin.n, lin.k, kind, wscale, blockScales, arena.u8(aux, bytes));
      }
      dv.setInt32(o + LIN.aux, aux, true);
    });
  }
  reader?.close();
  if (opts.adopt && garbage >= RECLAIM_BYTES / 4) gc();
  return { md, weightBytes, kvLayerBytes, adopted };
}
