/**
 * The tokenizer contract (TS mapping of the seed's Rust `Tokenizer` trait).
 *
 * Token ids are plain numbers (0 <= id < vocabSize). Every method that takes an id throws
 * `BitNetError.Tokenization('TOKEN_ID_OUT_OF_RANGE', ...)` for a non-integer or out-of-range id.
 */
import type { ChatTemplate } from './chat-template.ts';

export interface EncodeOptions {
  /**
   * Add the model's BOS (and EOS) around the text, as far as the vocab says so (`Tokenizer.addBos` /
   * `addEos`: `tokenizer.ggml.add_bos_token`, with llama.cpp's defaults when absent). Default: false.
   */
  addSpecialTokens?: boolean;
  /**
   * Recognise the text of control/unknown tokens (e.g. `<|eot_id|>`) in the input and emit their ids.
   * When false (default) such text is tokenized as ordinary text. User-defined tokens (type 4) are always
   * recognised, as in llama.cpp and HF tokenizers.
   */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Drop control and unknown tokens (BOS, EOS, `<|eot_id|>`, ...) instead of emitting their text. Default: false. */
  skipSpecialTokens?: boolean;
  /**
   * SentencePiece vocabs with add-space-prefix only: drop the one space that encode put in front of the text
   * from the first piece of output (so `decode(encode(x)) === x`). Default: true for `decode`, false for
   * `createStreamingDecoder` (a stream continues a prompt, so its first word keeps its space). No effect on
   * byte-level BPE.
   */
  stripLeadingSpace?: boolean;
}

/** A piece of input for `encodeSegments`: `special: true` parses control-token text, false keeps it plain. */
export interface EncodeSegment {
  text: string;
  special: boolean;
}

export interface SpecialTokenIds {
  bosTokenId?: number;
  eosTokenId?: number;
  padTokenId?: number;
  unkTokenId?: number;
  /** From `tokenizer.ggml.eot_token_id`, else found by text (`<|eot_id|>`, `<|im_end|>`, ...) as llama.cpp does. */
  eotTokenId?: number;
  /** From `tokenizer.ggml.eom_token_id` (end of message, LLaMA-3.1 tool calls), else the id of `<|eom_id|>`. */
  eomTokenId?: number;
}

/** Incremental detokenizer: never returns half a UTF-8 sequence; bytes of an unfinished character are held. */
export interface StreamingDecoder {
  /** Adds one token; returns the text that became complete (possibly ''). */
  push(id: number): string;
  /** Returns whatever is held (an unfinished sequence becomes U+FFFD) and resets the decoder. */
  flush(): string;
}

export interface Tokenizer {
  /** `tokenizer.ggml.model`: 'gpt2' (byte-level BPE) or 'llama' (SentencePiece). */
  readonly model: string;
  /** Number of tokens in the vocabulary. */
  readonly vocabSize: number;
  /** Whether `encode(..., {addSpecialTokens: true})` prepends BOS / appends EOS. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /**
   * The chat template for this vocab (see chat-template.ts): from the GGUF / tokenizer_config.json when
   * usable, else the built-in 2B-4T template (vocab with `<|eot_id|>`) or ChatML.
   */
  readonly chatTemplate?: ChatTemplate;
  readonly specialTokens: Readonly<SpecialTokenIds>;
  /** End-of-generation ids: eos, eot, eom, and any of `<|eot_id|>`, `<|end_of_text|>`, `<|im_end|>`, `<|endoftext|>`, …. */
  readonly eogTokenIds: ReadonlySet<number>;
  /** Canonical name of the pre-tokenizer in use ('default' or 'llama-bpe'; 'none' for SentencePiece). */
  readonly preTokenizer: string;

  encode(text: string, opts?: EncodeOptions): number[];
  /**
   * Encodes the concatenation of `segments` exactly as one text would be encoded (pre-tokenizer pieces and
   * merges run across segment boundaries), except that control-token text is recognised only inside
   * segments with `special: true`. `opts.parseSpecial` is ignored.
   */
  encodeSegments(segments: readonly EncodeSegment[], opts?: EncodeOptions): number[];
  encodeBatch(texts: readonly string[], opts?: EncodeOptions): number[][];
  /** Decodes ids to text; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD. */
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  decodeBatch(batch: readonly ArrayLike<number>[], opts?: DecodeOptions): string[];

  /** True for control, unknown and user-defined tokens (types 3, 2, 4): tokens matched as whole units. */
  isSpecial(id: number): boolean;
  /** True for end-of-generation ids (`eogTokenIds`). */
  isEog(id: number): boolean;
  /** The id of a token by its raw vocab text, if any. */
  tokenToId(text: string): number | undefined;
  /** `tokenizer.ggml.token_type` of a token (TokenType). */
  tokenType(id: number): number;
  /** The raw vocab string (byte-level form for normal tokens, e.g. 'Ġhello'). */
  tokenText(id: number): string;
  /** The bytes the token decodes to; empty for control/unknown tokens when skipSpecialTokens is set. */
  tokenBytes(id: number, opts?: DecodeOptions): Uint8Array;
  createStreamingDecoder(opts?: DecodeOptions): StreamingDecoder;
}
