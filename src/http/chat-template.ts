/**
 * The documented default chat template (BitNet b1.58 2B-4T), used for models without one:
 *
 *   System: {system}<|eot_id|>User: {user}<|eot_id|>Assistant: {assistant}<|eot_id|>User: …<|eot_id|>Assistant:
 *
 * BOS comes first (per the vocabulary's add_bos_token). `developer` messages count as system.
 *
 * TEMPORARY HOME: chat templates belong in src/tokenizer/chat-template.ts (being built in
 * parallel, with the GGUF `tokenizer.chat_template` rendered by Jinja). Until that lands, this
 * is the HTTP layer's template; `AppDeps.chatTemplate` lets an adapter plug the real one in.
 *
 * The rendered prompt is a list of segments: text, and control tokens that are looked up as
 * single ids. Message text is encoded without special-token parsing, so a user who writes
 * "<|eot_id|>" in a message gets those characters, not a turn boundary.
 */
import type { Tokenizer } from '../tokenizer/types.ts';

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant';
  content: string;
}

export type PromptSegment = { text: string } | { special: string };

export type ChatTemplateFn = (messages: readonly ChatMessage[]) => PromptSegment[];

const ROLE_PREFIX: Record<ChatMessage['role'], string> = {
  system: 'System: ',
  developer: 'System: ',
  user: 'User: ',
  assistant: 'Assistant: ',
};

export const EOT = '<|eot_id|>';

export const defaultChatTemplate: ChatTemplateFn = (messages) => {
  const out: PromptSegment[] = [];
  for (const m of messages) out.push({ text: `${ROLE_PREFIX[m.role]}${m.content}` }, { special: EOT });
  out.push({ text: 'Assistant: ' });
  return out;
};

/** The prompt as plain text (for logs, token estimates, and models without a tokenizer). */
export function segmentsToText(segments: readonly PromptSegment[]): string {
  return segments.map((s) => ('text' in s ? s.text : s.special)).join('');
}

/**
 * Token ids for the segments: BOS per the vocabulary, text segments encoded as ordinary text,
 * control tokens as their single id (or as text, if the vocabulary lacks them).
 */
export function encodeSegments(tok: Tokenizer, segments: readonly PromptSegment[]): number[] {
  const ids: number[] = [];
  let first = true;
  for (const s of segments) {
    if ('text' in s) {
      if (s.text.length > 0 || first) ids.push(...tok.encode(s.text, { addSpecialTokens: first }));
    } else {
      if (first) ids.push(...tok.encode('', { addSpecialTokens: true }));
      const sp = tok.encode(s.special, { parseSpecial: true });
      ids.push(...(sp.length === 1 ? sp : tok.encode(s.special)));
    }
    first = false;
  }
  return ids;
}
