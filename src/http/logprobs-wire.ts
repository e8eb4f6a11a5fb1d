/**
 * Token log-probabilities (src/generate/logprobs.ts) in the wire formats:
 *
 * - chat (OpenAI): `{content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], refusal: null}`,
 *   with our `id` beside each token;
 * - completions (OpenAI's legacy format): `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`;
 *   text_offset is where each token's string starts in the concatenation of `tokens`, in code points;
 *   with `echo`, the prompt's tokens come first, the first of them with null and null (nothing predicts it);
 * - native (/v1/generate): the engine's `{id, logprob, top: [{id, logprob}]}` with `token` beside each id
 *   (a scored prompt's first token: logprob and top null).
 *
 * A token's string is its bytes decoded as UTF-8 (special tokens as their text, `<|eot_id|>`), so a
 * token that holds part of a character shows U+FFFD there and `bytes` has the real bytes. Without a
 * tokenizer (a model served on token ids only) the string is "" and `bytes` null. JSON has no −∞:
 * a log-probability of −∞ is sent as −9999, as OpenAI does.
 */
import type { PromptTokenLogprob, TokenLogprob } from '../generate/logprobs.ts';
import type { Tokenizer } from '../tokenizer/types.ts';

const utf8 = new TextDecoder('utf-8', { fatal: false });

interface TokenText {
  token: string;
  bytes: number[] | null;
}

/** Per-request memo of token strings (a stream names the same alternatives many times). */
export class TokenNames {
  private readonly memo = new Map<number, TokenText>();
  private readonly tok: Tokenizer | undefined;
  constructor(tok: Tokenizer | undefined) {
    this.tok = tok;
  }

  of(id: number): TokenText {
    let t = this.memo.get(id);
    if (t === undefined) {
      if (this.tok === undefined) t = { token: '', bytes: null };
      else {
        const b = this.tok.tokenBytes(id, { skipSpecialTokens: false });
        t = { token: utf8.decode(b), bytes: Array.from(b) };
      }
      this.memo.set(id, t);
    }
    return t;
  }
}

/** −∞ → −9999 (OpenAI's stand-in); finite values as they are. */
export const wireLogprob = (l: number): number => (l === Number.NEGATIVE_INFINITY ? -9999 : l);

/** The chat format's `content` entries. */
export function chatLogprobContent(lps: readonly TokenLogprob[], names: TokenNames): unknown[] {
  return lps.map((lp) => ({
    id: lp.id,
    ...names.of(lp.id),
    logprob: wireLogprob(lp.logprob),
    top_logprobs: lp.top.map((t) => ({ id: t.id, ...names.of(t.id), logprob: wireLogprob(t.logprob) })),
  }));
}

/** Legacy completions' logprobs object; `offset` is the code-point offset of the first token. */
export function completionLogprobs(
  lps: readonly PromptTokenLogprob[],
  names: TokenNames,
  offset: number,
): { value: unknown; end: number } {
  const tokens: string[] = [];
  const tokenLogprobs: (number | null)[] = [];
  const top: (Record<string, number> | null)[] = [];
  const textOffset: number[] = [];
  let at = offset;
  for (const lp of lps) {
    const s = names.of(lp.id).token;
    tokens.push(s);
    tokenLogprobs.push(lp.logprob === null ? null : wireLogprob(lp.logprob));
    if (lp.top === null) top.push(null);
    else {
      // two ids with the same string keep the first (the more likely): the format is keyed by string
      const alt: Record<string, number> = Object.create(null); // a token may be spelt "__proto__"
      for (const t of lp.top) {
        const k = names.of(t.id).token;
        if (!Object.hasOwn(alt, k)) alt[k] = wireLogprob(t.logprob);
      }
      top.push(alt);
    }
    textOffset.push(at);
    at += [...s].length;
  }
  return { value: { tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: textOffset }, end: at };
}

/** The native format of one token's entry. */
export function nativeLogprob(lp: PromptTokenLogprob, names: TokenNames): unknown {
  return {
    id: lp.id,
    token: names.of(lp.id).token,
    logprob: lp.logprob === null ? null : wireLogprob(lp.logprob),
    top:
      lp.top === null
        ? null
        : lp.top.map((t) => ({ id: t.id, token: names.of(t.id).token, logprob: wireLogprob(t.logprob) })),
  };
}
