/** Tokenizer public API: byte-level BPE from GGUF metadata, pre-tokenizers and test vocabularies. */

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
export { getPreTokenizer, type PreTokenizer, SUPPORTED_PRE_TOKENIZERS, splitWithRegexSequence } from './pretokenize.ts';
export {
  makeSyntheticVocab,
  type SyntheticMetadataOptions,
  type SyntheticVocab,
  syntheticVocabMetadata,
} from './synthetic-vocab.ts';
export type { DecodeOptions, EncodeOptions, SpecialTokenIds, StreamingDecoder, Tokenizer } from './types.ts';
