/**
 * Tokenizer public API: byte-level BPE and SentencePiece from GGUF metadata (or a Hugging Face
 * tokenizer.json), pre-tokenizers, chat templates and test vocabularies. See docs/tokenizer.md.
 */

export { BaseTokenizer, type VocabConfig, wellFormed } from './base.ts';
export {
  type ByteLevelBpeConfig,
  bpeMerge,
  buildMergeRanks,
  type CreateTokenizerOptions,
  createByteLevelBpeTokenizer,
  createTokenizerFromGGUF,
  TokenType,
} from './bpe.ts';
export {
  BYTE_TO_UNICODE,
  byteLevelToBytes,
  bytesToUnicode,
  textToByteLevel,
  unicodeCharToByte,
} from './byte-unicode.ts';
export {
  applyChatTemplate,
  BITNET_CHAT_TEMPLATE,
  CHATML_CHAT_TEMPLATE,
  type ChatMessage,
  type ChatRenderOptions,
  type ChatSegment,
  type ChatTemplate,
  type ChatTemplateChoice,
  type ChatTemplateKind,
  checkChatTemplate,
  createChatTemplate,
  createChatTemplateFromGGUF,
  encodeChat,
  type ResolveChatTemplateInput,
  resolveChatTemplate,
} from './chat-template.ts';
export { type CreateHFTokenizerOptions, createTokenizerFromHF, hfPreTokenizerName } from './hf.ts';
export { getPreTokenizer, type PreTokenizer, SUPPORTED_PRE_TOKENIZERS, splitWithRegexSequence } from './pretokenize.ts';
export { createSentencePieceTokenizer, type SentencePieceConfig } from './spm.ts';
export {
  makeSyntheticVocab,
  type SyntheticMetadataOptions,
  type SyntheticVocab,
  syntheticVocabMetadata,
} from './synthetic-vocab.ts';
export type {
  DecodeOptions,
  EncodeOptions,
  EncodeSegment,
  SpecialTokenIds,
  StreamingDecoder,
  Tokenizer,
} from './types.ts';
export { ASSIGNED_AFTER_LLAMA_CPP_UNICODE, LLAMA_CLASS, LLAMA_CPP_UNICODE_VERSION } from './unicode-compat.ts';
