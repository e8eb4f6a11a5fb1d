// Chat prompts through the HTTP app: rendered with the model's own chat template (the GGUF's
// tokenizer.chat_template), else the documented default (the 2B-4T template for a vocab with
// <|eot_id|>, ChatML otherwise, whose stop string joins the request's), an override from AppDeps,
// and models without a tokenizer.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { BitNetModel } from '../../src/api/bitnet-model.ts';
import type { Prompt } from '../../src/api/inference-engine.ts';
import { meta } from '../../src/gguf/writer.ts';
import { createApp } from '../../src/http/app.ts';
import { BITNET_CHAT_TEMPLATE, CHATML_CHAT_TEMPLATE, createChatTemplate } from '../../src/tokenizer/chat-template.ts';
import type { Tokenizer } from '../../src/tokenizer/types.ts';
import { microModelWith, post, recording } from './helpers.ts';

/** A template of the model's own, in the GGUF: distinct from both defaults. */
const OWN_TEMPLATE =
  "{{- bos_token -}}{%- for m in messages -%}{{- '<<' + m['role'] + '>>\\n' + m['content'] + '<|eot_id|>' -}}{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<<assistant>>\\n' -}}{%- endif -%}";

const MESSAGES = [
  { role: 'developer', content: 'be brief' },
  { role: 'user', content: 'hi <|eot_id|> there' },
];

const body = (extra: Record<string, unknown> = {}) => ({
  messages: MESSAGES,
  max_tokens: 2,
  seed: 3,
  ...extra,
});

function idsOf(p: Prompt | undefined): number[] {
  if (p === undefined || typeof p === 'string' || !('ids' in p))
    throw new Error(`expected token ids, got ${JSON.stringify(p)}`);
  return p.ids;
}

const decode = (tok: Tokenizer, ids: number[]) => tok.decode(ids, { skipSpecialTokens: false });
const count = (ids: number[], id: number | undefined) => ids.filter((i) => i === id).length;

/** POSTs a chat request to an app over a recorded model; the ids the engine got and the response. */
async function chatThrough(model: BitNetModel, extra: Record<string, unknown> = {}, deps = {}) {
  const { served, calls } = recording(model);
  const app = createApp({ model: served, ...deps });
  const r = await app.request(...post('/v1/chat/completions', body(extra), { 'content-type': 'application/json' }));
  const json = await r.json();
  return { status: r.status, json, ids: r.status === 200 ? idsOf(calls.at(-1)?.prompt) : [], calls };
}

let own: BitNetModel;
let plain: BitNetModel;
let noEot: BitNetModel;
let noTokenizer: BitNetModel;

beforeAll(async () => {
  own = await microModelWith((md) => [...md, ['tokenizer.chat_template', meta.str(OWN_TEMPLATE)]], 'own-template');
  plain = await microModelWith((md) => md, 'no-template');
  // The same vocab with its <|eot_id|> renamed: neither template token is in it.
  noEot = await microModelWith(
    (md) =>
      md.map(([k, v]): [string, (typeof md)[number][1]] =>
        k === 'tokenizer.ggml.tokens'
          ? [k, meta.strs((v.value as string[]).map((t) => (t === '<|eot_id|>' ? '<|end_of_turn|>' : t)))]
          : [k, v],
      ),
    'no-eot',
  );
  noTokenizer = await microModelWith((md) => md.filter(([k]) => !k.startsWith('tokenizer.')), 'no-tokenizer');
});

describe('chat prompts use the model chat template', () => {
  it("renders the GGUF's tokenizer.chat_template (Jinja): control tokens from the template only", async () => {
    const tok = own.tokenizer!;
    expect(tok.chatTemplate?.kind).toBe('embedded');
    const { status, json, ids, calls } = await chatThrough(own);
    expect(status).toBe(200);
    expect(decode(tok, ids)).toBe(
      '<|begin_of_text|><<system>>\nbe brief<|eot_id|><<user>>\nhi <|eot_id|> there<|eot_id|><<assistant>>\n',
    );
    // one BOS, and two turn boundaries: the user's literal "<|eot_id|>" stays text
    expect(count(ids, tok.specialTokens.bosTokenId)).toBe(1);
    expect(count(ids, tok.specialTokens.eotTokenId)).toBe(2);
    expect(json.usage.prompt_tokens).toBe(ids.length);
    expect(calls[0].config.stopSequences).toEqual([]);
  });

  it('a model without a template gets the documented default: System/User/Assistant with <|eot_id|>', async () => {
    const tok = plain.tokenizer!;
    expect(tok.chatTemplate).toMatchObject({ kind: 'bitnet', source: BITNET_CHAT_TEMPLATE, stopStrings: [] });
    const { status, json, ids } = await chatThrough(plain);
    expect(status).toBe(200);
    expect(decode(tok, ids)).toBe(
      '<|begin_of_text|>System: be brief<|eot_id|>User: hi <|eot_id|> there<|eot_id|>Assistant: ',
    );
    expect(count(ids, tok.specialTokens.bosTokenId)).toBe(1);
    expect(count(ids, tok.specialTokens.eotTokenId)).toBe(2);
    expect(json.usage.prompt_tokens).toBe(ids.length);
  });

  it('text content parts are joined with a newline, as llama.cpp joins them', async () => {
    const tok = plain.tokenizer!;
    const messages = [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Translate:' },
          { type: 'text', text: 'Bonjour' },
        ],
      },
    ];
    const { status, ids } = await chatThrough(plain, { messages });
    expect(status).toBe(200);
    expect(decode(tok, ids)).toBe('<|begin_of_text|>User: Translate:\nBonjour<|eot_id|>Assistant: ');
    // a newline only once some text has been written: leading empty parts add nothing
    const lead = [{ role: 'user', content: [{ type: 'text', text: '' }, ...messages[0].content] }];
    const r = await chatThrough(plain, { messages: lead });
    expect(decode(tok, r.ids)).toBe('<|begin_of_text|>User: Translate:\nBonjour<|eot_id|>Assistant: ');
  });

  it("without <|eot_id|> in the vocab, ChatML; its <|im_end|> joins the request's stop sequences", async () => {
    const tok = noEot.tokenizer!;
    expect(tok.chatTemplate).toMatchObject({
      kind: 'chatml',
      source: CHATML_CHAT_TEMPLATE,
      stopStrings: ['<|im_end|>'],
    });
    const { status, ids, calls } = await chatThrough(noEot, { stop: ['END', '<|im_end|>'] });
    expect(status).toBe(200);
    expect(decode(tok, ids)).toBe(
      '<|begin_of_text|><|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi <|eot_id|> there<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(calls[0].config.stopSequences).toEqual(['END', '<|im_end|>']);
    const again = await chatThrough(noEot);
    expect(again.calls[0].config.stopSequences).toEqual(['<|im_end|>']);
    // completions are not chat: no template, no extra stop
    const { served, calls: c2 } = recording(noEot);
    const r = await createApp({ model: served }).request(
      ...post('/v1/completions', { prompt: 'abc', max_tokens: 1 }, { 'content-type': 'application/json' }),
    );
    expect(r.status).toBe(200);
    const abc = noEot.tokenizer!.encode('abc', { addSpecialTokens: true, parseSpecial: true });
    expect(c2[0]).toMatchObject({ prompt: { ids: abc }, config: { stopSequences: [] } });
  });
});

describe('text prompts and special tokens', () => {
  const completion = async (extra: Record<string, unknown>) => {
    const { served, calls } = recording(plain);
    const app = createApp({ model: served });
    const r = await app.request(
      ...post(
        '/v1/completions',
        { prompt: 'User: hi<|eot_id|>Assistant: ', max_tokens: 1, ...extra },
        {
          'content-type': 'application/json',
        },
      ),
    );
    const prompt = calls.at(-1)?.prompt;
    return {
      status: r.status,
      json: await r.json(),
      ids: prompt === undefined ? [] : plain.engine.encodePrompt(prompt),
    };
  };

  it('/v1/completions parses special tokens in a text prompt, as llama.cpp does; parse_special: false does not', async () => {
    const tok = plain.tokenizer!;
    const eot = tok.specialTokens.eotTokenId;
    const on = await completion({});
    expect(on.status).toBe(200);
    expect(count(on.ids, eot)).toBe(1);
    expect(on.json.usage.prompt_tokens).toBe(on.ids.length);
    const off = await completion({ parse_special: false });
    expect(count(off.ids, eot)).toBe(0);
    expect(decode(tok, off.ids)).toBe(decode(tok, on.ids));
    expect(off.ids.length).toBeGreaterThan(on.ids.length);
    expect((await completion({ parse_special: 'yes' })).status).toBe(400);
  });

  it('a text prompt is tokenized once per request: the router estimate and the run share the ids', async () => {
    const tok = plain.tokenizer!;
    const text = 'User: hi<|eot_id|>Assistant: ';
    const expected = (parseSpecial: boolean) => tok.encode(text, { addSpecialTokens: true, parseSpecial });
    const spy = vi.spyOn(tok, 'encode');
    try {
      const { served, calls } = recording(plain);
      const app = createApp({ model: served });
      for (const extra of [{}, { parse_special: false }, { stream: true }]) {
        const want = expected(!('parse_special' in extra));
        spy.mockClear();
        const r = await app.request(
          ...post('/v1/completions', { prompt: text, max_tokens: 2, ...extra }, { 'content-type': 'application/json' }),
        );
        expect(r.status).toBe(200);
        const out = await r.text();
        expect([JSON.stringify(extra), spy.mock.calls.length]).toEqual([JSON.stringify(extra), 1]);
        expect(calls.at(-1)?.prompt).toEqual({ ids: want });
        if (!('stream' in extra)) expect(JSON.parse(out).usage.prompt_tokens).toBe(want.length);
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('the API takes { text, parseSpecial }; a plain string stays plain text', () => {
    const tok = plain.tokenizer!;
    const eot = tok.specialTokens.eotTokenId;
    expect(count(plain.engine.encodePrompt({ text: 'a<|eot_id|>b', parseSpecial: true }), eot)).toBe(1);
    expect(count(plain.engine.encodePrompt({ text: 'a<|eot_id|>b' }), eot)).toBe(0);
    expect(count(plain.engine.encodePrompt('a<|eot_id|>b'), eot)).toBe(0);
  });
});

describe('AppDeps.chatTemplate overrides the model template', () => {
  it("'chatml', a Jinja source or a ChatTemplate replaces the GGUF's template", async () => {
    const tok = own.tokenizer!;
    const chatml = await chatThrough(own, {}, { chatTemplate: 'chatml' });
    expect(decode(tok, chatml.ids)).toBe(
      '<|begin_of_text|><|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi <|eot_id|> there<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(chatml.calls[0].config.stopSequences).toEqual(['<|im_end|>']);
    const bitnet = await chatThrough(own, {}, { chatTemplate: 'bitnet' });
    expect(decode(tok, bitnet.ids)).toBe(
      '<|begin_of_text|>System: be brief<|eot_id|>User: hi <|eot_id|> there<|eot_id|>Assistant: ',
    );
    const jinja = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ";
    const custom = await chatThrough(own, {}, { chatTemplate: jinja });
    expect(decode(tok, custom.ids)).toBe(
      '<|begin_of_text|>[system] be brief\n[user] hi <|eot_id|> there\n[assistant] ',
    );
    const obj = await chatThrough(plain, {}, { chatTemplate: createChatTemplate(jinja) });
    expect(decode(plain.tokenizer!, obj.ids)).toBe(decode(tok, custom.ids));
    // 'embedded' on a model with none that works: a typed error, not a silent fallback
    const none = await chatThrough(plain, {}, { chatTemplate: 'embedded' });
    expect(none.status).toBe(500);
    expect(none.json.error.code).toBe('CHAT_TEMPLATE_UNAVAILABLE');
  });

  it('a Jinja override that does not parse fails when the app is built', () => {
    expect(() => createApp({ model: plain, chatTemplate: '{% for m in messages %}' })).toThrow(
      expect.objectContaining({ code: 'CHAT_TEMPLATE_INVALID' }),
    );
  });
});

describe('models without a tokenizer', () => {
  it('serve token-id completions; chat and text prompts are a 400 that says what to send', async () => {
    expect(noTokenizer.tokenizer).toBeUndefined();
    const app = createApp({ model: noTokenizer });
    const h = { 'content-type': 'application/json' };
    const ids = await app.request(...post('/v1/completions', { prompt: [5, 6, 7], max_tokens: 3, temperature: 0 }, h));
    expect(ids.status).toBe(200);
    expect((await ids.json()).usage).toMatchObject({ prompt_tokens: 3, completion_tokens: 3 });
    for (const [path, b] of [
      ['/v1/chat/completions', body()],
      ['/v1/completions', { prompt: 'hello', max_tokens: 3 }],
    ] as const) {
      const r = await app.request(...post(path, b, h));
      expect(r.status, path).toBe(400);
      const e = (await r.json()).error;
      expect(e).toMatchObject({ type: 'invalid_request_error', code: 'TOKENIZER_MISSING' });
      expect(e.message).toMatch(/token ids/);
    }
  });

  it('a tokenizer that failed to build is named as the cause, on chat as on text prompts', async () => {
    // a vocabulary whose pre-tokenizer this runtime does not know: the file has a tokenizer, unusable
    const broken = await microModelWith(
      (md) => [...md.filter(([k]) => k !== 'tokenizer.ggml.pre'), ['tokenizer.ggml.pre', meta.str('qwen9')]],
      'unknown-pre',
    );
    expect(broken.tokenizer).toBeUndefined();
    expect(broken.tokenizerError?.code).toBe('PRETOKENIZER_UNKNOWN');
    const app = createApp({ model: broken });
    const h = { 'content-type': 'application/json' };
    for (const [path, b] of [
      ['/v1/chat/completions', body()],
      ['/v1/completions', { prompt: 'hello', max_tokens: 3 }],
    ] as const) {
      const e = (await (await app.request(...post(path, b, h))).json()).error;
      expect(e.code, path).toBe('PRETOKENIZER_UNKNOWN');
      expect(e.message, path).toMatch(/tokenizer could not be built \(unknown pre-tokenizer 'qwen9'.*token ids/);
    }
    expect(noTokenizer.tokenizerError).toBeUndefined(); // no vocabulary at all: nothing failed
  });
});
