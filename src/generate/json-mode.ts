/**
 * JSON mode for the engine loop (OpenAI's `response_format: {type: "json_object"}`): the output is
 * one JSON object, and generation ends when it closes. It is grammar-constrained generation
 * (grammar/grammar-mode.ts) over JSON mode's grammar (grammar/json-grammar.ts: bounded whitespace,
 * nesting at most 32 deep), with no end-of-generation token allowed before the object closes.
 *
 * Cost: ~0.5 ms for a median step and ~3 ms on average over a 65-token object on the 2B-4T-shaped
 * model's 128K vocabulary (this project's 2-core machine; ~200 ms once per tokenizer), next to
 * ~100 ms of a 2B model's decode step. Log-probabilities stay those of the unmasked logits.
 */
import type { Tokenizer } from '../tokenizer/types.ts';
import { compileGrammar, GrammarMode } from './grammar/grammar-mode.ts';
import { JSON_OBJECT_GBNF } from './grammar/json-grammar.ts';

export type ResponseFormat = 'text' | 'json_object';

export class JsonMode extends GrammarMode {
  constructor(tok: Tokenizer) {
    super(compileGrammar({ gbnf: JSON_OBJECT_GBNF }), tok, []);
  }
}
