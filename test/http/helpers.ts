/** Helpers for the HTTP tests: small synthetic models in memory, request shorthands. */
import OpenAI from 'openai';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import type { GenerationConfigInit } from '../../src/api/generation-config.ts';
import type { Prompt } from '../../src/api/inference-engine.ts';
import type { GGUFEntry } from '../../src/gguf/metadata.ts';
import { encodeGGUF } from '../../src/gguf/writer.ts';
import type { ServedModel } from '../../src/http/model-holder.ts';
import { type SynthOptions, synthModel } from '../../src/model/synth.ts';
import { MemorySource } from '../../src/sources/byte-source.ts';
import { synthBytes, TINY } from '../helpers/models.ts';

/** The TINY test shape (hidden 256, 2 layers, vocab 300, ctx 128), I2_S. Random weights. */
export async function tinyModel(o: Partial<SynthOptions> = {}): Promise<BitNetModel> {
  const bytes = await synthBytes({ qtype: 'i2_s', seed: 5, arch: 'bitnet-b1.58', ...o });
  return BitNetModel.fromFile(new MemorySource(bytes, 'tiny'));
}

/** An even smaller model for request-count tests (1 layer, hidden 128). */
export function microModel(): Promise<BitNetModel> {
  return tinyModel({ hidden: 128, layers: 1, heads: 2, kvHeads: 1, ffn: 256, ctx: 64 });
}

export const KEY = 'test-key-0123456789';
export const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };

export function post(path: string, body: unknown, headers: Record<string, string> = auth): [string, RequestInit] {
  return [path, { method: 'POST', headers, body: JSON.stringify(body) }];
}

/** `data:` payloads of an SSE body. */
export function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));
}

/** The value of one metric line (`name{labels} value`), 0 when absent. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return 0;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, tries = 500): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * A micro model (1 layer, hidden 128, synthetic vocab with <|eot_id|>) whose GGUF metadata went
 * through `edit` first: add a `tokenizer.chat_template`, drop the tokenizer, rename tokens.
 */
export async function microModelWith(
  edit: (md: [string, GGUFEntry][]) => [string, GGUFEntry][],
  name = 'micro',
): Promise<BitNetModel> {
  const m = synthModel({
    ...TINY,
    hidden: 128,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 256,
    ctx: 256,
    qtype: 'i2_s',
    seed: 5,
  });
  const bytes = await encodeGGUF(edit(m.metadata), m.tensors);
  return BitNetModel.fromFile(new MemorySource(bytes, name));
}

/** A served model that records what the app hands the engine (the prompt and the config). */
export function recording(m: BitNetModel): {
  served: ServedModel;
  calls: { prompt: Prompt; config: GenerationConfigInit }[];
} {
  const calls: { prompt: Prompt; config: GenerationConfigInit }[] = [];
  const served: ServedModel = {
    engine: {
      stream: (prompt, config, signal) => {
        calls.push({ prompt, config });
        return m.engine.stream(prompt, config, signal);
      },
      backendName: m.engine.backendName,
    },
    tokenizer: m.tokenizer,
    modelInfo: () => m.modelInfo(),
  };
  return { served, calls };
}

/** Reads an SSE body until `until(text)` holds; returns the text so far;
 * `rest()` reads on to the end and returns the whole text. */
export async function readUntil(r: Response, until: (text: string) => boolean) {
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (!until(text)) {
    const { done, value } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
  }
  return {
    text,
    async rest() {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += dec.decode(value, { stream: true });
      }
    },
  };
}

/** The OpenAI SDK talking to an app in process (no server; no retries). */
export function openAIFor(app: { request(url: string, init?: RequestInit): Response | Promise<Response> }): OpenAI {
  return new OpenAI({
    apiKey: 'unused',
    baseURL: 'http://bitnet.test/v1',
    maxRetries: 0,
    fetch: async (url: string | URL | Request, init?: RequestInit) => app.request(String(url), init),
  });
}

/**
 * logit_bias that bans the model's whitespace-only tokens: a random model otherwise spends its
 * tokens on a JSON answer's indentation (tool calls, structured outputs).
 */
export function noWhitespaceBias(model: BitNetModel): Record<string, number> {
  const tok = model.tokenizer!;
  const bias: Record<string, number> = {};
  for (let id = 0; id < tok.vocabSize; id++)
    if (!tok.isSpecial(id) && /^\s+$/.test(tok.decode([id], { skipSpecialTokens: false } as never)))
      bias[String(id)] = -100;
  return bias;
}
