/**
 * Synthetic Hugging Face BitNet checkpoints built from the same seed as a synthetic GGUF, so the
 * converter's HF path can be compared with the GGUF path tensor for tensor:
 *   packed:  uint8 [out/4, in] + weight_scale (f32 or bf16), autobitlinear or bitlinear
 *   master:  bf16 weights W = bf16(t · s · 1.5) whose absmean ternarization gives back t
 * Norms and the embedding come from the GGUF's own bytes (f32/f16), or as bf16.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GGMLType } from '../../src/gguf/ggml-types.ts';
import { type SynthOptions, synthModel, synthScale, synthTernary } from '../../src/model/synth.ts';
import { packHfTernary } from '../../src/shards/hf.ts';
import { encodeSafetensors } from '../../src/shards/safetensors.ts';
import { makeSyntheticVocab } from '../../src/tokenizer/synthetic-vocab.ts';
import { tempDir } from '../sources/util.ts';

export const HF_SHAPE: Omit<SynthOptions, 'seed'> = {
  arch: 'bitnet-b1.58',
  hidden: 256,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  ffn: 512,
  vocab: 300,
  ctx: 128,
  qtype: 'i2_s',
  embdType: 'f16',
};

export interface HfVariant {
  weights: 'packed' | 'master';
  /** dtype of weight_scale, norms and embedding: 'exact' = f32 scales/norms + f16 embedding; 'bf16' everywhere. */
  floats: 'exact' | 'bf16';
  linearClass?: 'autobitlinear' | 'bitlinear';
  /** Split the weights over two files with an index. */
  sharded?: boolean;
  /** tokenizer.json's pre_tokenizer: a lone GPT-2 ByteLevel (default) or the LLaMA-3 Split + ByteLevel of the 2B-4T. */
  preTokenizer?: 'gpt-2' | 'llama3';
}

/** The 2B-4T (LLaMA-3) pre_tokenizer as it appears in its tokenizer.json. */
export const LLAMA3_PRE_TOKENIZER = {
  type: 'Sequence',
  pretokenizers: [
    {
      type: 'Split',
      pattern: {
        Regex:
          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      },
      behavior: 'Isolated',
      invert: false,
    },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};

const HF_NAMES: Record<string, string> = {
  attn_norm: 'input_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  attn_sub_norm: 'self_attn.attn_sub_norm',
  ffn_norm: 'post_attention_layernorm',
  ffn_gate: 'mlp.gate_proj',
  ffn_up: 'mlp.up_proj',
  ffn_down: 'mlp.down_proj',
  ffn_sub_norm: 'mlp.ffn_sub_norm',
};

export function hfName(gguf: string): string {
  if (gguf === 'token_embd.weight') return 'model.embed_tokens.weight';
  if (gguf === 'output_norm.weight') return 'model.norm.weight';
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(gguf)!;
  return `model.layers.${m[1]}.${HF_NAMES[m[2]]}.weight`;
}

function bf16(x: number): number {
  // Round to nearest even, as torch does.
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return (u + 0x7fff + ((u >> 16) & 1)) >>> 16;
}

export function bf16Value(x: number): number {
  return new Float32Array(new Uint32Array([bf16(x) << 16]).buffer)[0];
}

function bf16Bytes(xs: ArrayLike<number>): Uint8Array {
  const out = new Uint16Array(xs.length);
  for (let i = 0; i < xs.length; i++) out[i] = bf16(xs[i]);
  return new Uint8Array(out.buffer);
}

function f32Of(bytes: Uint8Array, type: number): Float32Array {
  if (type === GGMLType.F32) return new Float32Array(bytes.slice().buffer);
  const u = new Uint16Array(bytes.slice().buffer);
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) {
    const h = u[i];
    const e = (h >> 10) & 31;
    const m = h & 1023;
    const s = h & 0x8000 ? -1 : 1;
    out[i] = e === 0 ? s * m * 2 ** -24 : s * (1024 + m) * 2 ** (e - 25);
  }
  return out;
}

export function hfTokenizerJson(vocab: number, pre: HfVariant['preTokenizer'] = 'gpt-2') {
  const v = makeSyntheticVocab(vocab);
  const map: Record<string, number> = {};
  const added: { id: number; content: string; special: boolean }[] = [];
  v.tokens.forEach((t, id) => {
    if (v.tokenTypes[id] === 3) added.push({ id, content: t, special: true });
    else map[t] = id;
  });
  return {
    json: {
      version: '1.0',
      added_tokens: added,
      pre_tokenizer: pre === 'llama3' ? LLAMA3_PRE_TOKENIZER : { type: 'ByteLevel', add_prefix_space: false },
      decoder: { type: 'ByteLevel' },
      model: { type: 'BPE', vocab: map, merges: v.merges.map((m) => m.split(' ')) },
    },
    bos: v.bosId,
    eos: v.eosId,
  };
}

/** A config.json the converter refuses (HF_UNSUPPORTED_MODEL): another model type. */
export const LLAMA_CONFIG = {
  model_type: 'llama',
  hidden_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 1,
  intermediate_size: 8,
  vocab_size: 8,
};

/** Writes an HF checkpoint directory for `seed`; returns its path. */
export async function writeHfCheckpoint(seed: number, variant: HfVariant): Promise<string> {
  const dir = join(await tempDir('bitnet-hf-'), 'ckpt');
  await mkdir(dir);
  const o = { ...HF_SHAPE, seed };
  const model = synthModel(o);
  const tok = hfTokenizerJson(o.vocab, variant.preTokenizer);
  const lc = variant.linearClass ?? 'autobitlinear';
  const config = {
    architectures: ['BitNetForCausalLM'],
    model_type: 'bitnet',
    hidden_size: o.hidden,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    intermediate_size: o.ffn,
    vocab_size: o.vocab,
    max_position_embeddings: o.ctx,
    rope_theta: 500000,
    rms_norm_eps: 1e-5,
    hidden_act: 'relu2',
    tie_word_embeddings: true,
    bos_token_id: tok.bos,
    eos_token_id: tok.eos,
    quantization_config:
      variant.weights === 'packed'
        ? { quant_method: 'bitnet', linear_class: lc, quantization_mode: 'offline' }
        : { quant_method: 'bitnet', linear_class: 'autobitlinear', quantization_mode: 'online' },
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.json));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true }));

  const tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  for (const t of model.tensors) {
    const name = hfName(t.name);
    const shape = [...t.ne].reverse();
    if (t.type === GGMLType.I2_S) {
      const [k, n] = t.ne;
      const tern = synthTernary(seed, t.name, k * n);
      const s = synthScale(seed, t.name, k);
      if (variant.weights === 'packed') {
        tensors.push({ name, dtype: 'U8', shape: [n / 4, k], data: packHfTernary(tern, n, k) });
        const ws = lc === 'autobitlinear' ? s : 1 / s;
        tensors.push({
          name: name.replace(/\.weight$/, '.weight_scale'),
          dtype: variant.floats === 'exact' ? 'F32' : 'BF16',
          shape: [1],
          data: variant.floats === 'exact' ? new Uint8Array(new Float32Array([ws]).buffer) : bf16Bytes([ws]),
        });
      } else {
        const w = new Float32Array(k * n);
        for (let i = 0; i < w.length; i++) w[i] = tern[i] * s * 1.5;
        tensors.push({ name, dtype: 'BF16', shape, data: bf16Bytes(w) });
      }
      continue;
    }
    const data = typeof t.data === 'function' ? await t.data() : t.data;
    if (variant.floats === 'exact') {
      tensors.push({ name, dtype: t.type === GGMLType.F32 ? 'F32' : 'F16', shape, data });
    } else {
      tensors.push({ name, dtype: 'BF16', shape, data: bf16Bytes(f32Of(data, t.type)) });
    }
  }
  if (variant.sharded) {
    const half = Math.ceil(tensors.length / 2);
    const parts = [tensors.slice(0, half), tensors.slice(half)];
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < 2; i++) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      for (const t of parts[i]) weightMap[t.name] = file;
      await writeFile(join(dir, file), encodeSafetensors(parts[i], { format: 'pt' }));
    }
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  } else {
    await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  }
  return dir;
}
