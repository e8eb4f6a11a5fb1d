import type { Tokenizer } from './types.ts';

/**
 * A text prompt's token ids, the one rule for the engine (InferenceEngine.encodePrompt) and the HTTP
 * app's prompt count: BOS per the vocabulary's add_bos_token, special-token spellings
 * (`<|eot_id|>`, …) read as those tokens only with parseSpecial.
 */
export function encodePromptText(tokenizer: Tokenizer, text: string, parseSpecial = false): number[] {
  return tokenizer.encode(text, { addSpecialTokens: true, parseSpecial });
}
