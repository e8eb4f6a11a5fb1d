/**
 * The weight table: which tensor plays which role, checked for presence, type and shape against
 * the hyper-parameters BEFORE any weight byte is read; then loaded tensor by tensor, kept in the
 * file's own packed layout (ternary weights stay 2-bit; nothing is expanded to f32 except the
 * small norm vectors).
 */
import { BitNetError } from '../errors.ts';
import { GGMLType, typeName } from '../gguf/ggml-types.ts';
import { type GGUFFile, type GGUFTensorInfo, readTensorBytes } from '../gguf/reader.ts';
import { dequantizeRow, type TensorView } from '../quant/float-codecs.ts';
import { type TLLayout, tlImageBytes, tlKindOf, validateTLImage } from '../quant/tl.ts';
import type { ReadOptions } from '../sources/byte-source.ts';
import type { HParams } from './hparams.ts';

/** Types a projection (q/k/v/o/gate/up/down) may have. Ternary ones run the integer path. */
export const TERNARY_TYPES: readonly number[] = [GGMLType.I2_S, GGMLType.TQ2_0, GGMLType.TQ1_0];
export const FLOAT_PROJ_TYPES: readonly number[] = [GGMLType.F32, GGMLType.F16, GGMLType.BF16];
/** Types the token embedding / LM head may have. */
/** The seven ternary projections of a block, `blk.N.<name>.weight` in GGUF naming. */
export const PROJ_NAMES = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'] as const;

export const EMBD_TYPES: readonly number[] = [
  GGMLType.F32,
  GGMLType.F16,
  GGMLType.BF16,
  GGMLType.Q8_0,
  GGMLType.Q4_0,
  GGMLType.Q6_K,
];
const NORM_TYPES: readonly number[] = [GGMLType.F32, GGMLType.F16];

export interface Linear extends TensorView {
  /** Input features K = ne[0]. */
  k: number;
  /** Output features N = ne[1]. */
  n: number;
  /** I2_S per-tensor scale (1 for other types). */
  scale: number;
  /** Optional `<name>.scale` tensor of `bitnet` files, multiplied after the matmul (1 when absent). */
  outScale: number;
  /**
   * Set when `bytes` are a TL1/TL2 tile image (src/quant/tl.ts; shard packs with layout tl1/tl2)
   * instead of `type`'s own storage. `type` stays the numeric type (I2_S: kind 0, the image's f32
   * scale is `scale`; TQ2_0/TQ1_0: kind 1, per-block f16 scales in the image). Code that reads
   * `bytes` as GGML storage must check this and refuse or decode (decodeTLRow).
   */
  layout?: TLLayout;
}

export interface LayerWeights {
  attnNorm: Float32Array;
  attnSubNorm: Float32Array;
  ffnNorm: Float32Array;
  ffnSubNorm: Float32Array;
  wq: Linear;
  wk: Linear;
  wv: Linear;
  wo: Linear;
  wGate: Linear;
  wUp: Linear;
  wDown: Linear;
}

export interface ModelWeights {
  tokenEmbd: TensorView;
  /** The LM head: `output.weight` if present, else the tied token embedding. */
  output: TensorView;
  outputNorm: Float32Array;
  layers: LayerWeights[];
}

interface Spec {
  name: string;
  ne: number[];
  types: readonly number[];
  optional?: boolean;
}

const PROJ_TYPES = [...TERNARY_TYPES, ...FLOAT_PROJ_TYPES];

/** The tensors a model of this shape needs, with their expected shapes (ne order: [in, out]). */
export function weightSpecs(hp: HParams): Spec[] {
  const kvDim = hp.nHeadKv * hp.headDim;
  const specs: Spec[] = [
    { name: 'token_embd.weight', ne: [hp.nEmbd, hp.nVocab], types: EMBD_TYPES },
    { name: 'output_norm.weight', ne: [hp.nEmbd], types: NORM_TYPES },
    { name: 'output.weight', ne: [hp.nEmbd, hp.nVocab], types: EMBD_TYPES, optional: true },
  ];
  for (let i = 0; i < hp.nLayer; i++) {
    const b = `blk.${i}.`;
    specs.push(
      { name: `${b}attn_norm.weight`, ne: [hp.nEmbd], types: NORM_TYPES },
      { name: `${b}attn_sub_norm.weight`, ne: [hp.nEmbd], types: NORM_TYPES },
      { name: `${b}ffn_norm.weight`, ne: [hp.nEmbd], types: NORM_TYPES },
      { name: `${b}ffn_sub_norm.weight`, ne: [hp.nFF], types: NORM_TYPES },
      { name: `${b}attn_q.weight`, ne: [hp.nEmbd, hp.nEmbd], types: PROJ_TYPES },
      { name: `${b}attn_k.weight`, ne: [hp.nEmbd, kvDim], types: PROJ_TYPES },
      { name: `${b}attn_v.weight`, ne: [hp.nEmbd, kvDim], types: PROJ_TYPES },
      { name: `${b}attn_output.weight`, ne: [hp.nEmbd, hp.nEmbd], types: PROJ_TYPES },
      { name: `${b}ffn_gate.weight`, ne: [hp.nEmbd, hp.nFF], types: PROJ_TYPES },
      { name: `${b}ffn_up.weight`, ne: [hp.nEmbd, hp.nFF], types: PROJ_TYPES },
      { name: `${b}ffn_down.weight`, ne: [hp.nFF, hp.nEmbd], types: PROJ_TYPES },
    );
    for (const p of PROJ_NAMES) {
      specs.push({ name: `${b}${p}.scale`, ne: [1], types: [GGMLType.F32], optional: true });
    }
  }
  return specs;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  // GGUF may store a vector as [n] or [n, 1]: compare after dropping trailing 1s.
  const trim = (x: readonly number[]) => {
    const y = [...x];
    while (y.length > 1 && y[y.length - 1] === 1) y.pop();
    return y;
  };
  const ta = trim(a);
  const tb = trim(b);
  return ta.length === tb.length && ta.every((v, i) => v === tb[i]);
}

/** A TL-image tensor (shard packs): a ternary projection whose byte count is its image's. */
function checkTLPlan(s: Spec, t: GGUFTensorInfo): void {
  const kind = tlKindOf(t.type);
  if (kind === undefined) {
    const why = `tensor ${s.name} (${typeName(t.type)}) cannot have layout ${t.layout}`;
    throw BitNetError.Model('PACK_BAD_TL_IMAGE', why, { name: s.name, layout: t.layout, type: typeName(t.type) });
  }
  const want = tlImageBytes(t.layout!, t.ne[1], t.ne[0], kind);
  if (t.byteLength !== want || (kind === 1 && t.ne[0] % 256 !== 0)) {
    const why = `tensor ${s.name}: ${t.byteLength} bytes, its ${t.layout} image needs ${want}`;
    const details = { name: s.name, layout: t.layout, length: t.byteLength, expected: want };
    throw BitNetError.Model('PACK_BAD_TL_IMAGE', why, details);
  }
}

/**
 * Checks every tensor's presence, type and shape. Returns the tensors to read and their total
 * byte count (the memory the weights will take), without reading any of them.
 */
export function planWeights(file: GGUFFile, hp: HParams): { tensors: GGUFTensorInfo[]; bytes: number } {
  const tensors: GGUFTensorInfo[] = [];
  let bytes = 0;
  for (const s of weightSpecs(hp)) {
    const t = file.tensorsByName.get(s.name);
    if (!t) {
      if (s.optional) continue;
      throw BitNetError.Model('MISSING_TENSOR', `tensor ${s.name} is missing`, { name: s.name });
    }
    if (!s.types.includes(t.type)) {
      throw BitNetError.Model('UNSUPPORTED_TENSOR_TYPE', `tensor ${s.name} has type ${typeName(t.type)}`, {
        name: s.name,
        type: typeName(t.type),
        supported: s.types.map(typeName),
      });
    }
    if (!sameShape(t.ne, s.ne)) {
      throw BitNetError.Model('BAD_TENSOR_SHAPE', `tensor ${s.name} has shape [${t.ne}], expected [${s.ne}]`, {
        name: s.name,
        ne: t.ne,
        expected: s.ne,
      });
    }
    if (t.type === GGMLType.I2_S && t.ne[0] % 128 !== 0) {
      throw BitNetError.Model('BAD_TENSOR_SHAPE', `I2_S tensor ${s.name} needs ne[0] % 128 == 0`, { name: s.name });
    }
    if (t.layout) checkTLPlan(s, t);
    tensors.push(t);
    bytes += t.byteLength;
  }
  return { tensors, bytes };
}

/**
 * A TL image as read: its header must be the one this tensor's image has (layout, N, K, kind,
 * derived words, length) before anything uses it. Returns the scale (kind 0) or 1.
 */
function checkTLImage(t: GGUFTensorInfo, bytes: Uint8Array): number {
  const layout = t.layout!;
  try {
    const h = validateTLImage(bytes, { layout, n: t.ne[1], k: t.ne[0], kind: tlKindOf(t.type)! });
    return h.kind === 0 ? h.wscale : 1;
  } catch (e) {
    const d = e instanceof BitNetError ? e.details : {};
    const why = `${t.name}: ${(e as Error).message}`;
    throw BitNetError.Model('PACK_BAD_TL_IMAGE', why, { ...d, name: t.name, layout }, e);
  }
}

function toF32(view: TensorView): Float32Array {
  const n = view.ne.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  dequantizeRow({ ...view, ne: [n, 1] }, 0, out);
  return out;
}

export interface LoadProgress {
  loadedBytes: number;
  totalBytes: number;
  tensor: string;
}

/** Reads the weights (after `planWeights` accepted them). */
export async function loadWeights(
  file: GGUFFile,
  hp: HParams,
  opts: ReadOptions & { onProgress?: (p: LoadProgress) => void } = {},
): Promise<ModelWeights> {
  const plan = planWeights(file, hp);
  const views = new Map<string, TensorView>();
  const images = new Map<string, { layout: TLLayout; wscale: number }>();
  let loaded = 0;
  for (const t of plan.tensors) {
    const bytes = await readTensorBytes(file, t, opts);
    if (t.layout) images.set(t.name, { layout: t.layout, wscale: checkTLImage(t, bytes) });
    views.set(t.name, { name: t.name, type: t.type, ne: t.ne, bytes });
    loaded += t.byteLength;
    opts.onProgress?.({ loadedBytes: loaded, totalBytes: plan.bytes, tensor: t.name });
  }
  const get = (name: string): TensorView => views.get(name)!;
  const vec = (name: string): Float32Array => toF32(get(name));
  const linear = (name: string): Linear => {
    const v = get(`${name}.weight`);
    const k = v.ne[0];
    const n = v.ne[1];
    const s = views.get(`${name}.scale`);
    const outScale = s ? toF32(s)[0] : 1;
    const img = images.get(v.name);
    if (img) return { ...v, k, n, scale: img.wscale, outScale, layout: img.layout };
    let scale = 1;
    if (v.type === GGMLType.I2_S) {
      scale = new DataView(v.bytes.buffer, v.bytes.byteOffset, v.bytes.byteLength).getFloat32((k * n) / 4, true);
      if (!Number.isFinite(scale)) {
        throw BitNetError.Model('BAD_TENSOR_DATA', `I2_S scale of ${name} is not finite`, { name, scale });
      }
    }
    return { ...v, k, n, scale, outScale };
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < hp.nLayer; i++) {
    const b = `blk.${i}.`;
    layers.push({
      attnNorm: vec(`${b}attn_norm.weight`),
      attnSubNorm: vec(`${b}attn_sub_norm.weight`),
      ffnNorm: vec(`${b}ffn_norm.weight`),
      ffnSubNorm: vec(`${b}ffn_sub_norm.weight`),
      wq: linear(`${b}attn_q`),
      wk: linear(`${b}attn_k`),
      wv: linear(`${b}attn_v`),
      wo: linear(`${b}attn_output`),
      wGate: linear(`${b}ffn_gate`),
      wUp: linear(`${b}ffn_up`),
      wDown: linear(`${b}ffn_down`),
    });
  }
  const tokenEmbd = get('token_embd.weight');
  return {
    tokenEmbd,
    output: views.get('output.weight') ?? tokenEmbd,
    outputNorm: vec('output_norm.weight'),
    layers,
  };
}
