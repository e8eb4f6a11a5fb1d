/** ModelInfo and QuantizationInfo: what a loaded (or inspected) model is, from its tensor table. */
import { GGMLType, typeName } from '../gguf/ggml-types.ts';
import type { GGUFFile } from '../gguf/reader.ts';
import { metaString } from '../gguf/reader.ts';
import type { HParams } from '../model/hparams.ts';
import { QuantizationType } from './quantization.ts';

export interface TensorInfo {
  name: string;
  shape: number[];
  dtype: string;
}

export interface QuantizationInfo {
  /** The ternary projections' storage type, e.g. "I2_S", "TQ2_0" ("F16" for float files). */
  type: string;
  qtype: QuantizationType;
  /** Storage bits per projection weight. */
  bitsPerWeight: number;
  /** Tensor count per storage type. */
  tensorTypes: Record<string, number>;
  /**
   * A shard pack's projection layout (`bitnet convert --layout`): 'i2s', 'tl1' or 'tl2' (the wasm
   * kernels' tile images; qtype then says TL1/TL2), 'ggml' (as the GGUF stored them). Absent for a GGUF file.
   */
  layout?: string;
}

export interface ModelInfo {
  name: string;
  architecture: string;
  location: string;
  fileSize: number;
  parameterCount: number;
  contextLength: number;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  feedForwardSize: number;
  activation: string;
  quantization: QuantizationInfo;
  /** f16 K+V bytes per token per layer, and for the full context. */
  kvCache: { perLayerBytes: number; totalBytes: number };
  tensors: TensorInfo[];
  /** True for models made by `bitnet synth` (random weights). */
  synthetic: boolean;
}

/** `layout`: a shard pack's projection layout (PackManifest.layout); undefined for a GGUF file. */
export function buildModelInfo(file: GGUFFile, hp: HParams, location: string, layout?: string): ModelInfo {
  const tensorTypes: Record<string, number> = {};
  let params = 0;
  for (const t of file.tensors) {
    tensorTypes[t.typeName] = (tensorTypes[t.typeName] ?? 0) + 1;
    params += t.nElements;
  }
  const q = file.tensorsByName.get('blk.0.attn_q.weight');
  const qt = q ? q.type : GGMLType.F32;
  const bits = q ? (q.byteLength * 8) / q.nElements : 32;
  const qtype =
    layout === 'tl1'
      ? QuantizationType.TL1
      : layout === 'tl2'
        ? QuantizationType.TL2
        : qt === GGMLType.I2_S || qt === GGMLType.TQ2_0 || qt === GGMLType.TQ1_0
          ? QuantizationType.I2S
          : QuantizationType.None;
  const kvPerLayer = 2 * hp.nHeadKv * hp.headDim * 2;
  const name = metaString(file.metadata, 'general.name') ?? location;
  return {
    name,
    architecture: hp.arch,
    location,
    fileSize: file.fileSize,
    parameterCount: params,
    contextLength: hp.nCtx,
    vocabSize: hp.nVocab,
    hiddenSize: hp.nEmbd,
    numLayers: hp.nLayer,
    numHeads: hp.nHead,
    numKvHeads: hp.nHeadKv,
    feedForwardSize: hp.nFF,
    activation: hp.activation,
    quantization: {
      type: typeName(qt),
      qtype,
      bitsPerWeight: Math.round(bits * 1000) / 1000,
      tensorTypes,
      ...(layout !== undefined ? { layout } : {}),
    },
    kvCache: { perLayerBytes: kvPerLayer, totalBytes: kvPerLayer * hp.nLayer * hp.nCtx },
    tensors: file.tensors.map((t) => ({ name: t.name, shape: [...t.ne], dtype: t.typeName })),
    synthetic: /synthetic \(random weights/.test(name),
  };
}
