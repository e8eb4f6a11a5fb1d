/**
 * A Hugging Face BitNet checkpoint (a directory, local or remote) as converter input
 * (docs/bitnet-formats.md §4.1, §5):
 *
 * - `config.json`: hyper-parameters. `hidden_act: relu2` → arch `bitnet-b1.58` (the 2B-4T graph);
 *   `silu` → arch `bitnet` with `hidden_activation = silu`.
 * - `model.safetensors`, or `model.safetensors.index.json` + its files.
 * - Linear weights either **packed** (uint8 [out/4, in], four row-planes LSB first, code−1 =
 *   ternary; a per-tensor `weight_scale`), or **master weights** (bf16/f16/f32), which the converter
 *   ternarizes online with absmean. `quantization_config.linear_class`: `autobitlinear` multiplies by
 *   `weight_scale` (so the I2_S scale is `weight_scale`), `bitlinear` (transformers' default) divides
 *   by it (so the I2_S scale is `1/weight_scale`).
 * - Norms are read as f32; the embedding and `lm_head` stay in their dtype (bf16/f16/f32).
 * - `tokenizer.json` (byte-level BPE) and `tokenizer_config.json` become GGUF tokenizer metadata.
 *   A tokenizer of another kind is left out (`warnings`); token-id prompts still work. Its
 *   pre-tokenizer becomes `tokenizer.ggml.pre` (`llama-bpe` for the LLaMA-3 Split + ByteLevel
 *   sequence of the 2B-4T, `gpt-2` for a lone GPT-2 ByteLevel), so the pack tokenizes as HF does; one
 *   this runtime does not implement is left out with a warning (llama.cpp's default splitter then).
 */
import { BitNetError } from '../errors.ts';
import { GGMLType } from '../gguf/ggml-types.ts';
import type { GGUFEntry, GGUFMetadata } from '../gguf/metadata.ts';
import { meta } from '../gguf/writer.ts';
import { PROJ_NAMES } from '../model/weights.ts';
import { packI2S } from '../quant/i2s.ts';
import type { ByteSource, ReadOptions } from '../sources/byte-source.ts';
import { hfPreTokenizerName } from '../tokenizer/hf.ts';
import { f16ToF32 } from '../util/f16.ts';
import type { ConvertInput, InputTensor } from './convert.ts';
import { readSafetensors, readSafetensorsTensor, type SafetensorsEntry, type SafetensorsFile } from './safetensors.ts';

export type HfOpener = (name: string) => Promise<ByteSource>;

export interface HfInput extends ConvertInput {
  warnings: string[];
}

interface HfConfig {
  model_type?: string;
  architectures?: string[];
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  intermediate_size: number;
  vocab_size: number;
  max_position_embeddings?: number;
  rope_theta?: number;
  rope_scaling?: unknown;
  rms_norm_eps?: number;
  hidden_act?: string;
  head_dim?: number;
  tie_word_embeddings?: boolean;
  bos_token_id?: number | number[];
  eos_token_id?: number | number[];
  quantization_config?: { linear_class?: string; quantization_mode?: string; quant_method?: string };
  _name_or_path?: string;
}

const NOT_FOUND = new Set(['FILE_NOT_FOUND', 'NOT_FOUND']);

async function tryOpen(open: HfOpener, name: string): Promise<ByteSource | undefined> {
  try {
    return await open(name);
  } catch (e) {
    if (e instanceof BitNetError && NOT_FOUND.has(e.code)) return undefined;
    throw e;
  }
}

async function readJson<T>(src: ByteSource, opts?: ReadOptions): Promise<T> {
  if (src.size > 512 * 1024 * 1024) throw BitNetError.Model('HF_BAD_FILE', `${src.description} is too large`, {});
  try {
    return JSON.parse(new TextDecoder().decode(await src.read(0, src.size, opts))) as T;
  } catch (e) {
    if (e instanceof BitNetError) throw e;
    throw BitNetError.Model('HF_BAD_FILE', `${src.description} is not valid JSON: ${(e as Error).message}`, {}, e);
  }
}

/** One scalar (f32/f16/bf16) from a tensor of one element. */
function scalarOf(e: SafetensorsEntry, bytes: Uint8Array): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (e.length !== { F32: 4, F16: 2, BF16: 2 }[e.dtype]) {
    throw BitNetError.Model('HF_BAD_TENSOR', `${e.name} should hold one f32/f16/bf16 value`, {
      tensor: e.name,
      dtype: e.dtype,
    });
  }
  if (e.dtype === 'F32') return dv.getFloat32(0, true);
  if (e.dtype === 'F16') return f16ToF32(dv.getUint16(0, true));
  return new Float32Array(new Uint32Array([dv.getUint16(0, true) << 16]).buffer)[0];
}

/** Norm vectors as f32 bytes (the runtime reads F32/F16 norms). */
function toF32Bytes(e: SafetensorsEntry, bytes: Uint8Array): Uint8Array {
  if (e.dtype === 'F32') return bytes;
  const n = e.length / 2;
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (e.dtype === 'F16') for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
  else {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
  }
  return new Uint8Array(out.buffer);
}

const FLOAT_TYPES: Record<string, number> = { F32: GGMLType.F32, F16: GGMLType.F16, BF16: GGMLType.BF16 };

/** Unpacks HF's packed uint8 [out/4, in] weight to ternary [out, in] (docs/bitnet-formats.md §5.2). */
export function unpackHfTernary(packed: Uint8Array, outQuarter: number, k: number): Int8Array {
  const out = new Int8Array(4 * outQuarter * k);
  for (let i = 0; i < 4; i++) {
    for (let r = 0; r < outQuarter; r++) {
      const src = r * k;
      const dst = (i * outQuarter + r) * k;
      for (let c = 0; c < k; c++) {
        const code = (packed[src + c] >> (2 * i)) & 3;
        if (code === 3)
          throw BitNetError.Quantization('HF_BAD_CODE', `packed code 3 at row ${r}, column ${c}`, { row: r, col: c });
        out[dst + c] = code - 1;
      }
    }
  }
  return out;
}

/** Packs ternary [out, in] values the way HF stores them (the inverse of `unpackHfTernary`). */
export function packHfTernary(ternary: Int8Array, out: number, k: number): Uint8Array {
  const q = out / 4;
  const packed = new Uint8Array(q * k);
  for (let i = 0; i < 4; i++)
    for (let r = 0; r < q; r++)
      for (let c = 0; c < k; c++) packed[r * k + c] |= (ternary[(i * q + r) * k + c] + 1) << (2 * i);
  return packed;
}

const LAYER_MAP: [RegExp, string][] = [
  [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, 'attn_norm'],
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.weight$/, 'attn_q'],
  [/^model\.layers\.(\d+)\.self_attn\.k_proj\.weight$/, 'attn_k'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.weight$/, 'attn_v'],
  [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, 'attn_output'],
  [/^model\.layers\.(\d+)\.self_attn\.attn_sub_norm\.weight$/, 'attn_sub_norm'],
  [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, 'ffn_norm'],
  [/^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$/, 'ffn_gate'],
  [/^model\.layers\.(\d+)\.mlp\.up_proj\.weight$/, 'ffn_up'],
  [/^model\.layers\.(\d+)\.mlp\.down_proj\.weight$/, 'ffn_down'],
  [/^model\.layers\.(\d+)\.mlp\.ffn_sub_norm\.weight$/, 'ffn_sub_norm'],
];
const PROJ_SET = new Set<string>(PROJ_NAMES);

function ggufName(hf: string): { name: string; proj: boolean; norm: boolean } | undefined {
  if (hf === 'model.embed_tokens.weight') return { name: 'token_embd.weight', proj: false, norm: false };
  if (hf === 'model.norm.weight') return { name: 'output_norm.weight', proj: false, norm: true };
  if (hf === 'lm_head.weight') return { name: 'output.weight', proj: false, norm: false };
  for (const [re, g] of LAYER_MAP) {
    const m = re.exec(hf);
    if (m) return { name: `blk.${m[1]}.${g}.weight`, proj: PROJ_SET.has(g), norm: !PROJ_SET.has(g) };
  }
  return undefined;
}

function firstId(v: number | number[] | undefined): number | undefined {
  return Array.isArray(v) ? v[0] : v;
}

interface HfTokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: unknown;
  decoder?: { type?: string };
}

/** tokenizer.json (byte-level BPE) → GGUF tokenizer metadata, or a warning. */
function tokenizerMetadata(
  tok: HfTokenizerJson,
  tokCfg: { add_bos_token?: boolean; chat_template?: unknown } | undefined,
  cfg: HfConfig,
  warnings: string[],
): [string, GGUFEntry][] {
  const isByteLevel =
    JSON.stringify(tok.pre_tokenizer ?? {}).includes('ByteLevel') || tok.decoder?.type === 'ByteLevel';
  if (tok.model?.type !== 'BPE' || !tok.model.vocab || !isByteLevel) {
    warnings.push('tokenizer.json is not a byte-level BPE tokenizer; the pack has no tokenizer');
    return [];
  }
  const n = Math.max(
    cfg.vocab_size,
    ...Object.values(tok.model.vocab).map((i) => i + 1),
    ...(tok.added_tokens ?? []).map((t) => t.id + 1),
  );
  const tokens: string[] = new Array(n);
  const types = new Int32Array(n).fill(1);
  for (const [t, id] of Object.entries(tok.model.vocab)) tokens[id] = t;
  for (const a of tok.added_tokens ?? []) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4;
  }
  for (let i = 0; i < n; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = 5; // unused
    }
  }
  const merges = (tok.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const md: [string, GGUFEntry][] = [
    ['tokenizer.ggml.model', meta.str('gpt2')],
    ['tokenizer.ggml.tokens', meta.strs(tokens)],
    ['tokenizer.ggml.token_type', meta.i32s(types)],
    ['tokenizer.ggml.merges', meta.strs(merges)],
  ];
  const pre = hfPreTokenizerName(tok.pre_tokenizer);
  if (pre !== undefined) md.push(['tokenizer.ggml.pre', meta.str(pre)]);
  else
    warnings.push(
      "tokenizer.json's pre_tokenizer is not one this runtime implements; the pack uses llama.cpp's default splitter",
    );
  const bos = firstId(cfg.bos_token_id);
  const eos = firstId(cfg.eos_token_id);
  if (bos !== undefined) md.push(['tokenizer.ggml.bos_token_id', meta.u32(bos)]);
  if (eos !== undefined) md.push(['tokenizer.ggml.eos_token_id', meta.u32(eos)]);
  md.push(['tokenizer.ggml.add_bos_token', meta.bool(tokCfg?.add_bos_token ?? bos !== undefined)]);
  if (typeof tokCfg?.chat_template === 'string') md.push(['tokenizer.chat_template', meta.str(tokCfg.chat_template)]);
  return md;
}

function hparamsMetadata(cfg: HfConfig, name: string): { arch: string; md: [string, GGUFEntry][] } {
  const need = ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'vocab_size'] as const;
  for (const k of need) {
    if (!Number.isSafeInteger(cfg[k]) || cfg[k] <= 0)
      throw BitNetError.Model('HF_BAD_CONFIG', `config.json: ${k} must be a positive integer`, {
        key: k,
        value: cfg[k],
      });
  }
  const isBitnet = cfg.model_type === 'bitnet' || (cfg.architectures ?? []).includes('BitNetForCausalLM');
  if (!isBitnet) {
    throw BitNetError.Model(
      'HF_UNSUPPORTED_MODEL',
      `config.json describes model_type ${cfg.model_type}, not a BitNet model`,
      {
        modelType: cfg.model_type,
      },
    );
  }
  if (cfg.rope_scaling) throw BitNetError.Model('HF_UNSUPPORTED_MODEL', 'rope_scaling is not supported', {});
  const act = cfg.hidden_act ?? 'relu2';
  if (act !== 'relu2' && act !== 'silu')
    throw BitNetError.Model('HF_UNSUPPORTED_MODEL', `hidden_act ${act} is not supported (relu2, silu)`, { act });
  const a = act === 'relu2' ? 'bitnet-b1.58' : 'bitnet';
  const headDim = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads;
  const md: [string, GGUFEntry][] = [
    ['general.architecture', meta.str(a)],
    ['general.name', meta.str(name)],
    ['general.file_type', meta.u32(40)],
    ['general.quantization_version', meta.u32(2)],
    [`${a}.vocab_size`, meta.u32(cfg.vocab_size)],
    [`${a}.context_length`, meta.u32(cfg.max_position_embeddings ?? 2048)],
    [`${a}.embedding_length`, meta.u32(cfg.hidden_size)],
    [`${a}.block_count`, meta.u32(cfg.num_hidden_layers)],
    [`${a}.feed_forward_length`, meta.u32(cfg.intermediate_size)],
    [`${a}.rope.dimension_count`, meta.u32(headDim)],
    [`${a}.attention.head_count`, meta.u32(cfg.num_attention_heads)],
    [`${a}.attention.head_count_kv`, meta.u32(cfg.num_key_value_heads ?? cfg.num_attention_heads)],
    [`${a}.attention.layer_norm_rms_epsilon`, meta.f32(cfg.rms_norm_eps ?? 1e-5)],
    [`${a}.rope.freq_base`, meta.f32(cfg.rope_theta ?? 10000)],
  ];
  if (a === 'bitnet') md.push(['bitnet.hidden_activation', meta.str(act)]);
  return { arch: a, md };
}

/** Reads an HF checkpoint's headers (config, safetensors headers, tokenizer); no weight is read. */
export async function hfInput(open: HfOpener, name: string, opts?: ReadOptions): Promise<HfInput> {
  const warnings: string[] = [];
  const cfgSrc = await tryOpen(open, 'config.json');
  if (!cfgSrc) throw BitNetError.Model('HF_NO_CONFIG', `${name} has no config.json`, { name });
  const cfg = await readJson<HfConfig>(cfgSrc, opts).finally(() => cfgSrc.close?.());
  const { md } = hparamsMetadata(cfg, cfg._name_or_path ?? name);

  // Weight files: the index's files, else model.safetensors.
  let files: string[];
  const idx = await tryOpen(open, 'model.safetensors.index.json');
  if (idx) {
    const j = await readJson<{ weight_map?: Record<string, string> }>(idx, opts).finally(() => idx.close?.());
    files = [...new Set(Object.values(j.weight_map ?? {}))];
    if (files.length === 0)
      throw BitNetError.Model('HF_BAD_FILE', 'model.safetensors.index.json has an empty weight_map', {});
  } else {
    files = ['model.safetensors'];
  }
  const opened: SafetensorsFile[] = [];
  const entries = new Map<string, { f: SafetensorsFile; e: SafetensorsEntry }>();
  try {
    for (const file of files) {
      const src = await tryOpen(open, file);
      if (!src) throw BitNetError.Model('HF_NO_WEIGHTS', `${name}: ${file} is missing`, { file });
      const f = await readSafetensors(src, opts).catch(async (e) => {
        await src.close?.();
        throw e;
      });
      opened.push(f);
      for (const e of f.entries.values()) entries.set(e.name, { f, e });
    }
  } catch (e) {
    await Promise.all(opened.map((f) => f.source.close?.()));
    throw e;
  }

  const closeAll = () => Promise.all(opened.map((f) => f.source.close?.()));
  const tensors: InputTensor[] = [];
  let packed = 0;
  try {
    const lc = cfg.quantization_config?.linear_class ?? 'bitlinear';
    if (lc !== 'bitlinear' && lc !== 'autobitlinear')
      throw BitNetError.Model('HF_UNSUPPORTED_MODEL', `linear_class ${lc} is not supported`, { linearClass: lc });
    const tied = cfg.tie_word_embeddings ?? true;
    let master = 0;
    for (const [hfName, { f, e }] of entries) {
      if (hfName.endsWith('.weight_scale') || hfName.endsWith('.rotary_emb.inv_freq')) continue;
      const g = ggufName(hfName);
      if (!g) {
        warnings.push(`skipped unknown tensor ${hfName}`);
        continue;
      }
      if (g.name === 'output.weight' && tied) continue;
      if (g.proj) {
        if (e.shape.length !== 2)
          throw BitNetError.Model('HF_BAD_TENSOR', `${hfName} should be 2-D`, { tensor: hfName });
        if (e.dtype === 'U8') {
          packed++;
          const scaleName = hfName.replace(/\.weight$/, '.weight_scale');
          const s = entries.get(scaleName);
          if (!s)
            throw BitNetError.Model('HF_BAD_TENSOR', `${hfName} is packed but ${scaleName} is missing`, {
              tensor: hfName,
            });
          const [q, k] = e.shape;
          tensors.push({
            name: g.name,
            ne: [k, 4 * q],
            type: GGMLType.I2_S,
            read: async (o) => {
              const ws = scalarOf(s.e, await readSafetensorsTensor(s.f, s.e, o));
              const scale = lc === 'autobitlinear' ? ws : 1 / ws;
              if (!Number.isFinite(scale) || scale <= 0)
                throw BitNetError.Model('HF_BAD_TENSOR', `${scaleName} gives scale ${scale}`, { tensor: scaleName });
              return packI2S(unpackHfTernary(await readSafetensorsTensor(f, e, o), q, k), scale);
            },
          });
        } else if (FLOAT_TYPES[e.dtype] !== undefined) {
          master++;
          tensors.push({
            name: g.name,
            ne: [e.shape[1], e.shape[0]],
            type: FLOAT_TYPES[e.dtype],
            read: (o) => readSafetensorsTensor(f, e, o),
          });
        } else {
          throw BitNetError.Model('HF_BAD_TENSOR', `${hfName} has dtype ${e.dtype}`, {
            tensor: hfName,
            dtype: e.dtype,
          });
        }
      } else {
        if (FLOAT_TYPES[e.dtype] === undefined)
          throw BitNetError.Model('HF_BAD_TENSOR', `${hfName} has dtype ${e.dtype}`, {
            tensor: hfName,
            dtype: e.dtype,
          });
        const ne = [...e.shape].reverse();
        if (g.norm) {
          tensors.push({
            name: g.name,
            ne,
            type: GGMLType.F32,
            read: async (o) => toF32Bytes(e, await readSafetensorsTensor(f, e, o)),
          });
        } else {
          tensors.push({ name: g.name, ne, type: FLOAT_TYPES[e.dtype], read: (o) => readSafetensorsTensor(f, e, o) });
        }
      }
    }
    if (packed && master)
      throw BitNetError.Model('HF_MIXED_WEIGHTS', `${name} mixes packed and master weights`, { packed, master });

    const tokSrc = await tryOpen(open, 'tokenizer.json');
    if (tokSrc) {
      const tok = await readJson<HfTokenizerJson>(tokSrc, opts).finally(() => tokSrc.close?.());
      const tcSrc = await tryOpen(open, 'tokenizer_config.json');
      const tc = tcSrc
        ? await readJson<{ add_bos_token?: boolean; chat_template?: unknown }>(tcSrc, opts).finally(() =>
            tcSrc.close?.(),
          )
        : undefined;
      md.push(...tokenizerMetadata(tok, tc, cfg, warnings));
    } else {
      warnings.push('no tokenizer.json; the pack has no tokenizer');
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  const metadata: GGUFMetadata = new Map(md);
  return {
    kind: packed ? 'hf-packed' : 'hf-bf16',
    name: cfg._name_or_path ?? name,
    metadata,
    tensors,
    warnings,
    close: async () => {
      await closeAll();
    },
  };
}
