/**
 * Chat templates: the built-in 2B-4T template, selection from GGUF metadata (embedded / broken / missing),
 * the documented ChatML default, rendering with @huggingface/jinja, and encodeChat (one BOS, template control
 * tokens as ids, message content as plain text).
 */
import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { meta } from '../../src/gguf/writer.ts';
import {
  applyChatTemplate,
  BITNET_CHAT_TEMPLATE,
  type ChatMessage,
  createChatTemplate,
  createChatTemplateFromGGUF,
  createTokenizerFromGGUF,
  encodeChat,
  resolveChatTemplate,
} from '../../src/tokenizer/index.ts';
import { bitnet2b4tMetadata, llama2Metadata } from './vocabs.ts';

const CONVO: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'What is 2+2?' },
];
const BOS = '<|begin_of_text|>';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isBitNetError(e) ? e.code : String(e);
  }
  return undefined;
}

describe('built-in BitNet 2B-4T template', () => {
  const t = createChatTemplate(BITNET_CHAT_TEMPLATE, { bosToken: BOS, eosToken: '<|end_of_text|>' }, 'bitnet');

  it('renders Role: content<|eot_id|> turns and the Assistant: prompt', () => {
    expect(t.render(CONVO, { addGenerationPrompt: true })).toBe(
      `${BOS}System: You are terse.<|eot_id|>User: Hi!<|eot_id|>Assistant: Hello.<|eot_id|>User: What is 2+2?<|eot_id|>Assistant: `,
    );
    expect(t.render(CONVO.slice(1, 2))).toBe(`${BOS}User: Hi!<|eot_id|>`);
    expect(t.render([{ role: 'developer', content: 'd' }])).toBe(`${BOS}System: d<|eot_id|>`);
  });

  it('rejects malformed messages', () => {
    expect(code(() => t.render([{ role: 'user' } as ChatMessage]))).toBe('CHAT_MESSAGES_INVALID');
    expect(code(() => t.render('hi' as unknown as ChatMessage[]))).toBe('CHAT_MESSAGES_INVALID');
  });
});

describe('selection from GGUF metadata', () => {
  it('replaces the broken 2B-4T placeholder with the built-in template', () => {
    const t = createChatTemplateFromGGUF(bitnet2b4tMetadata());
    expect(t.kind).toBe('bitnet');
    expect(t.fallbackReason).toMatch(/BITNETAssistant/);
    expect(t.bosToken).toBe(BOS);
    // The placeholder is still available on request.
    const forced = createChatTemplateFromGGUF(bitnet2b4tMetadata(), { template: 'embedded' });
    expect(forced.render([{ role: 'user', content: 'x' }])).toBe(`${BOS}Human: x\n\nBITNETAssistant: <|end_of_text|>`);
  });

  it('uses a working embedded template as is', () => {
    const src =
      "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
    const t = createChatTemplateFromGGUF(bitnet2b4tMetadata({ chatTemplate: src }));
    expect(t.kind).toBe('embedded');
    expect(t.fallbackReason).toBeUndefined();
    expect(t.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe(
      `${BOS}<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`,
    );
  });

  it('falls back when the embedded template does not parse, drops messages, or is missing', () => {
    const bad = createChatTemplateFromGGUF(bitnet2b4tMetadata({ chatTemplate: '{% for m in %}' }));
    expect(bad.kind).toBe('bitnet');
    expect(bad.fallbackReason).toMatch(/parse/);
    const drops = createChatTemplateFromGGUF(bitnet2b4tMetadata({ chatTemplate: 'constant prompt' }));
    expect(drops.kind).toBe('bitnet');
    expect(drops.fallbackReason).toMatch(/drops/);
    const m = bitnet2b4tMetadata();
    m.delete('tokenizer.chat_template');
    const missing = createChatTemplateFromGGUF(m);
    expect(missing.kind).toBe('bitnet');
    expect(missing.fallbackReason).toBeUndefined();
    expect(code(() => createChatTemplateFromGGUF(m, { template: 'embedded' }))).toBe('CHAT_TEMPLATE_INVALID');
  });

  it('defaults to ChatML for a vocab without <|eot_id|> (the 1bitLLM / LLaMA-2 vocab)', () => {
    const t = createChatTemplateFromGGUF(llama2Metadata());
    expect(t.kind).toBe('chatml');
    expect(t.stopStrings).toEqual(['<|im_end|>']);
    expect(t.render(CONVO.slice(0, 2), { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('accepts a forced choice or Jinja source', () => {
    expect(createChatTemplateFromGGUF(bitnet2b4tMetadata(), { template: 'chatml' }).kind).toBe('chatml');
    const custom = createChatTemplateFromGGUF(llama2Metadata(), { template: '{{ messages[0].content }}!' });
    expect(custom.kind).toBe('custom');
    expect(custom.render([{ role: 'user', content: 'x' }])).toBe('x!');
    expect(resolveChatTemplate({ choice: 'bitnet', bosToken: '<s>' }).render([])).toBe('<s>');
  });

  it('reports template errors with typed codes', () => {
    expect(code(() => createChatTemplate('{% if %}'))).toBe('CHAT_TEMPLATE_INVALID');
    const raising = createChatTemplate("{{ raise_exception('only user messages') }}");
    expect(code(() => raising.render([]))).toBe('CHAT_TEMPLATE_RENDER');
  });
});

describe('applyChatTemplate and encodeChat', () => {
  const tok = createTokenizerFromGGUF(bitnet2b4tMetadata());

  it('applyChatTemplate takes a tokenizer, a ChatTemplate or Jinja source', () => {
    const want = `${BOS}User: Hi!<|eot_id|>Assistant: `;
    const msgs = CONVO.slice(1, 2);
    expect(applyChatTemplate(tok, msgs, { addGenerationPrompt: true })).toBe(want);
    expect(applyChatTemplate(tok.chatTemplate!, msgs, { addGenerationPrompt: true })).toBe(want);
    expect(
      applyChatTemplate('{{ messages | length }}{{ add_generation_prompt }}', msgs, { addGenerationPrompt: true }),
    ).toBe('1true');
  });

  it('gives one BOS, control tokens as ids, and equals tokenizing the rendered text', () => {
    const ids = encodeChat(tok, CONVO, { addGenerationPrompt: true });
    expect(ids[0]).toBe(128000);
    expect(ids.filter((id) => id === 128000)).toHaveLength(1);
    expect(ids.filter((id) => id === 128009)).toHaveLength(4);
    const text = applyChatTemplate(tok, CONVO, { addGenerationPrompt: true });
    expect(ids).toEqual([128000, ...tok.encode(text.slice(BOS.length), { parseSpecial: true })]);
    expect(tok.decode(ids)).toBe(text);
  });

  it('keeps control-token text typed by a user as plain text', () => {
    const ids = encodeChat(tok, [{ role: 'user', content: 'end here <|eot_id|> and <|begin_of_text|>' }], {
      addGenerationPrompt: true,
    });
    expect(ids.filter((id) => id === 128009)).toHaveLength(1); // the template's, not the user's
    expect(ids.filter((id) => id === 128000)).toHaveLength(1);
    expect(tok.decode(ids)).toBe(`${BOS}User: end here <|eot_id|> and <|begin_of_text|><|eot_id|>Assistant: `);
  });

  it('content-transforming templates fall back to parsing the whole prompt', () => {
    const t = createChatTemplate("{% for m in messages %}{{ m['content'] | upper }}<|eot_id|>{% endfor %}", {
      bosToken: BOS,
    });
    const segs = t.renderSegments([{ role: 'user', content: 'hi' }]);
    expect(segs).toEqual([{ text: 'HI<|eot_id|>', special: true }]);
    expect(encodeChat(tok, [{ role: 'user', content: 'hi' }], { template: t })).toEqual([
      128000,
      ...tok.encode('HI'),
      128009,
    ]);
  });

  it('works with SentencePiece vocabs: spacing as for the whole text, BOS once', () => {
    const spm = createTokenizerFromGGUF(llama2Metadata());
    const msgs = [{ role: 'user', content: 'Hello there' }];
    const ids = encodeChat(spm, msgs, { addGenerationPrompt: true });
    const text = applyChatTemplate(spm, msgs, { addGenerationPrompt: true });
    expect(ids).toEqual(spm.encode(text, { addSpecialTokens: true }));
    expect(ids.filter((id) => id === 1)).toHaveLength(1);
  });

  it('a tokenizer carries the template resolved from its GGUF', () => {
    const m = llama2Metadata();
    m.set('tokenizer.chat_template', meta.str('{% for m in messages %}[{{ m.content }}]{% endfor %}'));
    const t = createTokenizerFromGGUF(m);
    expect(t.chatTemplate?.kind).toBe('embedded');
    expect(applyChatTemplate(t, CONVO.slice(0, 2))).toBe('[You are terse.][Hi!]');
    expect(createTokenizerFromGGUF(m, { chatTemplate: 'chatml' }).chatTemplate?.kind).toBe('chatml');
  });
});
