/**
 * Chat prompts in the HTTP layer. The templates themselves live in the tokenizer
 * (src/tokenizer/chat-template.ts, docs/tokenizer.md): a chat request is rendered with the served
 * model's own template, `tokenizer.chatTemplate`, which is
 *
 *   1. the GGUF's `tokenizer.chat_template` (or tokenizer_config.json's), when it works;
 *   2. else, for a vocab with `<|eot_id|>`, the built-in BitNet b1.58 2B-4T template (the
 *      documented default): `System: …<|eot_id|>User: …<|eot_id|>Assistant: `;
 *   3. else ChatML,
 *
 * and tokenized with `encodeChat`: one BOS per the vocabulary, control tokens written by the
 * template as single ids, message text as plain text (a user who writes "<|eot_id|>" gets those
 * characters, not a turn boundary). The template's `stopStrings` join the request's stop
 * sequences. `AppDeps.chatTemplate` overrides the model's template.
 *
 * OpenAI's `developer` role is passed to the template as `system`, its older name, which is the
 * one model templates know.
 */
import { BitNetError } from '../errors.ts';
import {
  type ChatTemplate,
  type ChatTemplateChoice,
  createChatTemplate,
  encodeChat,
  resolveChatTemplate,
} from '../tokenizer/chat-template.ts';
import type { Tokenizer } from '../tokenizer/types.ts';

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant';
  content: string;
}

/**
 * An override of the model's chat template: a ChatTemplate (e.g. from `createChatTemplate`), a Jinja
 * source, or a choice: 'auto' (the model's own, the default), 'embedded' (the model's own, or an error
 * when it has none that works), 'bitnet' (the built-in 2B-4T template), 'chatml'.
 */
export type ChatTemplateOverride = ChatTemplate | ChatTemplateChoice;

/** A chat request ready for the engine: prompt ids, and the stop strings the template implies. */
export interface RenderedChat {
  ids: number[];
  stopStrings: readonly string[];
}

const CHOICES = new Set(['auto', 'embedded', 'bitnet', 'chatml']);

function tokenTextOf(tok: Tokenizer, id: number | undefined): string | undefined {
  return id === undefined ? undefined : tok.tokenText(id);
}

/** The model's own template; tokenizers built by this project always have one. */
function ownTemplate(tok: Tokenizer): ChatTemplate {
  return (
    tok.chatTemplate ??
    resolveChatTemplate({
      bosToken: tokenTextOf(tok, tok.specialTokens.bosTokenId),
      eosToken: tokenTextOf(tok, tok.specialTokens.eosTokenId),
      hasToken: (t) => tok.tokenToId(t) !== undefined,
    })
  );
}

/**
 * The template to use for a tokenizer, per the override (resolved once per tokenizer). A Jinja
 * override that does not parse is refused here, when the app is built (CHAT_TEMPLATE_INVALID).
 */
export function chatTemplateResolver(override?: ChatTemplateOverride): (tok: Tokenizer) => ChatTemplate {
  if (override === undefined || override === 'auto') return ownTemplate;
  if (typeof override !== 'string') return () => override;
  if (!CHOICES.has(override)) createChatTemplate(override); // parse now: a broken override fails at start-up
  const cache = new WeakMap<Tokenizer, ChatTemplate>();
  return (tok) => {
    let t = cache.get(tok);
    if (t) return t;
    const own = ownTemplate(tok);
    if (override === 'embedded' && own.kind !== 'embedded') {
      throw BitNetError.Model(
        'CHAT_TEMPLATE_UNAVAILABLE',
        `the server asks for the model's own chat template, and the model has none that works${own.fallbackReason ? ` (${own.fallbackReason})` : ''}`,
      );
    }
    t =
      override === 'embedded'
        ? own
        : resolveChatTemplate({
            bosToken: own.bosToken || tokenTextOf(tok, tok.specialTokens.bosTokenId),
            eosToken: own.eosToken || tokenTextOf(tok, tok.specialTokens.eosTokenId),
            hasToken: (x) => tok.tokenToId(x) !== undefined,
            choice: override,
          });
    cache.set(tok, t);
    return t;
  };
}

/** The messages as the template sees them (`developer` → `system`). */
function templateMessages(messages: readonly ChatMessage[]): ChatMessage[] {
  return messages.map((m) => (m.role === 'developer' ? { role: 'system', content: m.content } : m));
}

/** Renders and tokenizes a chat request with `template`, ending with the assistant's turn header. */
export function renderChat(tok: Tokenizer, template: ChatTemplate, messages: readonly ChatMessage[]): RenderedChat {
  return {
    ids: encodeChat(tok, templateMessages(messages), { addGenerationPrompt: true, template }),
    stopStrings: template.stopStrings,
  };
}

/** The messages as plain text, for token estimates when no tokenizer is at hand (~ what a template adds). */
export function messagesToText(messages: readonly ChatMessage[]): string {
  return `${messages.map((m) => `${m.role}: ${m.content}\n`).join('')}assistant: `;
}
