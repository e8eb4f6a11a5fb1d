/**
 * Tokenizer behaviour on the real vocabularies (LLaMA-3 / BitNet 2B-4T byte-level BPE, LLaMA-2 SentencePiece):
 * special tokens and end of generation, BOS, round trips (property tests on random valid UTF-8), the
 * streaming decoder, tokenizer.json loading, and the Unicode 15.1 classes. Expected ids below were checked
 * against llama.cpp (llama-cpp-parity.test.ts compares thousands more).
 */
import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import type { GGUFMetadata } from '../../src/gguf/metadata.ts';
import { meta } from '../../src/gguf/writer.ts';
import {
  createSentencePieceTokenizer,
  createTokenizerFromGGUF,
  createTokenizerFromHF,
  getPreTokenizer,
  hfPreTokenizerName,
  LLAMA_CPP_UNICODE_VERSION,
  makeSyntheticVocab,
  type Tokenizer,
  TokenType,
} from '../../src/tokenizer/index.ts';
import { CURATED, randomCorpus } from './corpus.ts';
import { bitnet2b4tMetadata, llama2Metadata, llama2Vocab, llama3Vocab } from './vocabs.ts';

const bitnet = createTokenizerFromGGUF(bitnet2b4tMetadata());
const llama3bpe = createTokenizerFromGGUF(bitnet2b4tMetadata({ pre: 'llama-bpe' }));
const spm = createTokenizerFromGGUF(llama2Metadata());
const ALL: [string, Tokenizer][] = [
  ['2B-4T default', bitnet],
  ['llama-bpe', llama3bpe],
  ['SentencePiece', spm],
];

function expectTokError(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isBitNetError(err) && err.code).toBe(code);
}

describe('BitNet 2B-4T vocab (LLaMA-3 byte-level BPE, no pre key)', () => {
  it('defaults to the `default` splitter and the published file settings', () => {
    expect(bitnet.model).toBe('gpt2');
    expect(bitnet.preTokenizer).toBe('default');
    expect(bitnet.vocabSize).toBe(128256);
    expect(bitnet.addBos).toBe(true);
    expect(bitnet.addEos).toBe(false);
    expect(bitnet.specialTokens).toEqual({
      bosTokenId: 128000,
      eosTokenId: 128001,
      padTokenId: 128001,
      eotTokenId: 128009,
    });
  });

  it('stops on 128001 and 128009 only', () => {
    expect([...bitnet.eogTokenIds].sort((a, b) => a - b)).toEqual([128001, 128009]);
    expect(bitnet.isEog(128009) && bitnet.isEog(128001)).toBe(true);
    expect(bitnet.isEog(128000) || bitnet.isEog(128008)).toBe(false);
  });

  it('tokenizer.ggml.eom_token_id ends generation too (llama.cpp adds eom to its EOG set)', () => {
    const m = bitnet2b4tMetadata();
    // 128008 is <|reserved_special_token_4|> in the 2B-4T names: only the key makes it an end of message.
    m.set('tokenizer.ggml.eom_token_id', meta.u32(128008));
    const tok = createTokenizerFromGGUF(m);
    expect(tok.specialTokens.eomTokenId).toBe(128008);
    expect(tok.isEog(128008)).toBe(true);
    expect([...tok.eogTokenIds].sort((a, b) => a - b)).toEqual([128001, 128008, 128009]);
    expect(tok.isEog(128000)).toBe(false);
    // Without the key it is not (see 'stops on 128001 and 128009 only'). An id outside the vocabulary
    // is ignored, as llama.cpp does ("bad special token … using default id"): the tokenizer stays.
    m.set('tokenizer.ggml.eom_token_id', meta.u32(128256));
    const ignored = createTokenizerFromGGUF(m);
    expect(ignored.specialTokens.eomTokenId).toBeUndefined();
    expect([...ignored.eogTokenIds].sort((a, b) => a - b)).toEqual([128001, 128009]);
  });

  it('a pad or eos id outside the vocabulary is ignored (the default applies), not the whole tokenizer', () => {
    const m = bitnet2b4tMetadata();
    m.set('tokenizer.ggml.padding_token_id', meta.u32(128256)); // = the vocab size: a common converter slip
    m.set('tokenizer.ggml.eos_token_id', meta.u32(0xffffffff));
    const tok = createTokenizerFromGGUF(m);
    expect(tok.specialTokens.padTokenId).toBeUndefined();
    expect(tok.specialTokens.eosTokenId).toBeUndefined();
    expect(tok.encode('Hello world')).toEqual(createTokenizerFromGGUF(bitnet2b4tMetadata()).encode('Hello world'));
  });

  it('a lone surrogate is U+FFFD before special tokens are matched, as llama.cpp receives it', () => {
    // a user-defined token whose text holds U+FFFD (llama.cpp matches it: V8's UTF-8 conversion
    // gives it U+FFFD for the lone surrogate before its special-token pass)
    const m = llama2Metadata();
    const toks = llama2Vocab().tokens.slice();
    toks[31999] = 'x\uFFFDy';
    const types = Int32Array.from(llama2Vocab().tokenTypes);
    types[31999] = 4; // USER_DEFINED
    m.set('tokenizer.ggml.tokens', meta.strs(toks));
    m.set('tokenizer.ggml.token_type', meta.i32s(types));
    const tok = createTokenizerFromGGUF(m);
    expect(tok.encode('x\uFFFDy')).toEqual([31999]);
    expect(tok.encode('x\uD800y')).toEqual([31999]);
  });

  it('without the key, eom is <|eom_id|> by its text (LLaMA-3.1 names), as in llama.cpp', () => {
    const tok = createTokenizerFromGGUF(bitnet2b4tMetadata({ bitnetNames: false }));
    expect(tok.tokenText(128008)).toBe('<|eom_id|>');
    expect(tok.specialTokens.eomTokenId).toBe(128008);
    expect(tok.isEog(128008)).toBe(true);
  });

  it('default vs llama-bpe differ where llama.cpp says they do', () => {
    const t = "It's 2024: 1234567 items!!";
    expect(bitnet.encode(t)).toEqual([2181, 6, 82, 220, 2366, 19, 25, 220, 4513, 10961, 22, 3673, 3001]);
    expect(llama3bpe.encode(t)).toEqual([2181, 596, 220, 2366, 19, 25, 220, 4513, 10961, 22, 3673, 3001]);
    expect(createTokenizerFromGGUF(bitnet2b4tMetadata(), { preTokenizer: 'llama-bpe' }).encode(t)).toEqual(
      llama3bpe.encode(t),
    );
    expect(bitnet.encode('Hello world')).toEqual([9906, 1917]);
    expect(bitnet.encode('  x\n\n  y')).toEqual([220, 865, 271, 220, 379]);
  });

  it('adds BOS only when asked, once', () => {
    expect(bitnet.encode('Hello world', { addSpecialTokens: true })).toEqual([128000, 9906, 1917]);
    expect(bitnet.encode('', { addSpecialTokens: true })).toEqual([128000]);
    expect(bitnet.encode('')).toEqual([]);
    const noBos = createTokenizerFromGGUF(llama2Metadata(), { addBos: false });
    expect(noBos.encode('Hello', { addSpecialTokens: true })).toEqual([15043]);
  });

  it('never makes control tokens from plain text; parseSpecial does', () => {
    const text = '<|begin_of_text|>Hi<|eot_id|><|start_header_id|>';
    const plain = bitnet.encode(text);
    expect(plain.some((id) => id >= 128000)).toBe(false);
    expect(bitnet.decode(plain)).toBe(text);
    expect(bitnet.encode(text, { parseSpecial: true })).toEqual([128000, 13347, 128009, 128006]);
    // Only whole token texts: a prefix stays text.
    expect(bitnet.encode('<|eot_id', { parseSpecial: true }).some((id) => id >= 128000)).toBe(false);
  });

  it('skipSpecialTokens drops BOS / EOT in decode and in the stream', () => {
    const ids = [128000, ...bitnet.encode('Hi there'), 128009];
    expect(bitnet.decode(ids)).toBe('<|begin_of_text|>Hi there<|eot_id|>');
    expect(bitnet.decode(ids, { skipSpecialTokens: true })).toBe('Hi there');
    const sd = bitnet.createStreamingDecoder({ skipSpecialTokens: true });
    expect(ids.map((id) => sd.push(id)).join('') + sd.flush()).toBe('Hi there');
  });

  it('encodeSegments equals whole-text encoding, with specials parsed only where allowed', () => {
    const segs = [
      { text: 'System: be brief<|eot_id|>User: ', special: true },
      { text: 'say <|eot_id|> literally', special: false },
      { text: '<|eot_id|>Assistant: ', special: true },
    ];
    const ids = bitnet.encodeSegments(segs);
    const whole = bitnet.encode(segs.map((s) => s.text).join(''), { parseSpecial: true });
    expect(ids.filter((id) => id === 128009)).toHaveLength(2);
    expect(whole.filter((id) => id === 128009)).toHaveLength(3);
    expect(bitnet.decode(ids)).toBe(segs.map((s) => s.text).join(''));
    // Without specials in the content, segments tokenize exactly like the concatenation.
    const clean = [
      { text: 'User: ', special: true },
      { text: 'Hello world', special: false },
    ];
    expect(bitnet.encodeSegments(clean)).toEqual(bitnet.encode('User: Hello world'));
  });
});

describe('SentencePiece (LLaMA-2, tokenizer.ggml.model = llama)', () => {
  it('prefixes a space, merges by score, falls back to bytes', () => {
    expect(spm.model).toBe('llama');
    expect(spm.encode('Hello world')).toEqual([15043, 3186]);
    expect(spm.encode('日本語')).toEqual([29871, 30325, 30346, 30968]);
    // U+1F600 is not a piece: four byte tokens <0xF0> <0x9F> <0x98> <0x80> (id = byte + 3).
    expect(spm.encode('😀')).toEqual([29871, 0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
    expect(spm.tokenType(0xf0 + 3)).toBe(TokenType.BYTE);
  });

  it('uses llama.cpp defaults: BOS 1 added, EOS 2 ends generation, space prefix after specials', () => {
    expect(spm.addBos).toBe(true);
    expect(spm.specialTokens).toEqual({ bosTokenId: 1, eosTokenId: 2, unkTokenId: 0 });
    expect([...spm.eogTokenIds]).toEqual([2]);
    expect(spm.encode('hi', { addSpecialTokens: true })).toEqual([1, 7251]);
    expect(spm.encode('<s>hi</s>', { parseSpecial: true })).toEqual([1, 7251, 2]);
    expect(spm.encode('<s>hi</s>')).not.toContain(1);
  });

  it('reads tokenizer.ggml.eom_token_id as an end-of-generation id', () => {
    const m = llama2Metadata();
    m.set('tokenizer.ggml.eom_token_id', meta.u32(31999));
    const tok = createTokenizerFromGGUF(m);
    expect(tok.specialTokens.eomTokenId).toBe(31999);
    expect([...tok.eogTokenIds].sort((a, b) => a - b)).toEqual([2, 31999]);
    expect(tok.isEog(31999)).toBe(true);
  });

  it('decode drops the prefix space; the stream keeps it unless asked', () => {
    const ids = spm.encode(' Hello  world');
    expect(spm.decode(ids)).toBe(' Hello  world');
    expect(spm.decode(spm.encode('Hello'))).toBe('Hello');
    expect(spm.decode(spm.encode('Hello'), { stripLeadingSpace: false })).toBe(' Hello');
    expect(spm.decode([1, ...spm.encode('Hello')], { skipSpecialTokens: true })).toBe('Hello');
    const sd = spm.createStreamingDecoder();
    expect(
      spm
        .encode('Paris')
        .map((id) => sd.push(id))
        .join(''),
    ).toBe(' Paris');
    const sd2 = spm.createStreamingDecoder({ stripLeadingSpace: true });
    expect(
      spm
        .encode('Paris')
        .map((id) => sd2.push(id))
        .join(''),
    ).toBe('Paris');
  });

  it('tiny vocab: highest score first, leftmost on ties, unknown token without byte tokens', () => {
    const t = createSentencePieceTokenizer({
      tokens: ['<unk>', '<s>', '</s>', '\u2581', 'a', 'b', '\u2581a', 'ab', 'aa', 'a\u2581', 'a\u2581a'],
      scores: [0, 0, 0, 0, 0, 0, -1, -2, -1.5, -0.5, -0.7],
      tokenTypes: [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1],
      special: { unkTokenId: 0, bosTokenId: 1, eosTokenId: 2 },
    });
    expect(t.encode('ab')).toEqual([6, 5]); // '▁a' (-1) beats 'ab' (-2); '▁ab' is not a piece
    expect(t.encode('aab')).toEqual([6, 7]); // '▁a', then 'ab'
    expect(t.encode('aaa')).toEqual([6, 8]); // '▁a', then 'aa'
    // 'a▁' (-0.5) first, then 'a▁a': merges may cross a word boundary when the vocab has such pieces.
    expect(t.encode('a a')).toEqual([3, 10]);
    expect(t.encode('b b')).toEqual([3, 5, 3, 5]);
    expect(t.encode('c')).toEqual([3, 0]); // no piece, no byte tokens: <unk>
    expect(t.chatTemplate?.kind).toBe('chatml');
  });

  it('honours add_space_prefix = false', () => {
    const m = llama2Metadata();
    m.set('tokenizer.ggml.add_space_prefix', meta.bool(false));
    const t = createTokenizerFromGGUF(m);
    expect(t.encode('Hello')).toEqual([10994]);
    expect(t.decode(t.encode('Hello'))).toBe('Hello');
  });
});

describe('round trips and streaming (property tests, random valid UTF-8)', () => {
  // Seeded and held out: the generator mixes scripts, emoji with ZWJ/VS16, digits, whitespace runs, and
  // code points assigned after Unicode 15.1.
  const inputs = [
    ...CURATED.filter((s) => (s as unknown as { isWellFormed(): boolean }).isWellFormed()),
    ...randomCorpus(0xdec0de, 1500),
  ];

  for (const [name, tok] of ALL) {
    // SentencePiece maps U+2581 to a space by design; no such text in the inputs for it.
    const texts = name === 'SentencePiece' ? inputs.filter((s) => !s.includes('\u2581')) : inputs;

    it(`${name}: decode(encode(x)) === x`, () => {
      const bad = texts.filter((s) => tok.decode(tok.encode(s)) !== s);
      expect(bad.slice(0, 3)).toEqual([]);
    });

    it(`${name}: the stream never emits broken UTF-8 and adds up to the text`, () => {
      for (const s of texts) {
        const sd = tok.createStreamingDecoder({ stripLeadingSpace: true });
        let out = '';
        for (const id of tok.encode(s)) {
          const piece = sd.push(id);
          expect((piece as unknown as { isWellFormed(): boolean }).isWellFormed()).toBe(true);
          if (piece.includes('\uFFFD')) expect(s).toContain('\uFFFD');
          out += piece;
        }
        out += sd.flush();
        expect(out).toBe(s);
      }
    });
  }

  it('a multi-byte character split over byte tokens is held until complete', () => {
    // '😀' is four byte tokens in the LLaMA-2 vocab.
    const ids = spm.encode('😀', { addSpecialTokens: false }).slice(1);
    const sd = spm.createStreamingDecoder();
    expect(ids.map((id) => sd.push(id))).toEqual(['', '', '', '😀']);
    expect(sd.push(0xf0 + 3)).toBe('');
    expect(sd.flush()).toBe('\uFFFD');
  });

  it('lone surrogates encode as U+FFFD (as llama.cpp receives them)', () => {
    for (const [, tok] of ALL) expect(tok.encode('a\uD800b')).toEqual(tok.encode('a\uFFFDb'));
  });
});

describe('Hugging Face tokenizer.json', () => {
  const v = llama3Vocab();
  const vocab: Record<string, number> = {};
  for (let i = 0; i < 128000; i++) vocab[v.tokens[i]] = i;
  const tokenizerJson = {
    version: '1.0',
    added_tokens: v.tokens.slice(128000).map((content, i) => ({ id: 128000 + i, content, special: true })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    },
    model: {
      type: 'BPE',
      ignore_merges: true,
      byte_fallback: false,
      vocab,
      // The newer [a, b] pair format for half of them.
      merges: v.merges.map((m, i) => (i % 2 ? m : m.split(' '))),
    },
  };
  const config = {
    bos_token: '<|begin_of_text|>',
    eos_token: '<|eot_id|>',
    chat_template:
      "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  };

  it('detects llama-bpe and matches the GGUF tokenizer', () => {
    const hf = createTokenizerFromHF(JSON.stringify(tokenizerJson), JSON.stringify(config));
    const gguf = createTokenizerFromGGUF(bitnet2b4tMetadata({ pre: 'llama-bpe', bitnetNames: false }));
    expect(hf.preTokenizer).toBe('llama-bpe');
    expect(hfPreTokenizerName(tokenizerJson.pre_tokenizer)).toBe('llama-bpe');
    expect(hfPreTokenizerName({ type: 'ByteLevel', add_prefix_space: false, use_regex: true })).toBe('gpt-2');
    expect(hfPreTokenizerName({ type: 'Whitespace' })).toBeUndefined();
    expect(hf.specialTokens.bosTokenId).toBe(128000);
    expect(hf.addBos).toBe(true);
    expect(hf.isEog(128009)).toBe(true);
    expect(hf.chatTemplate?.kind).toBe('embedded');
    for (const s of [...CURATED, ...randomCorpus(77, 300)]) {
      expect(hf.encode(s, { parseSpecial: true })).toEqual(gguf.encode(s, { parseSpecial: true }));
    }
  });

  it('rejects what it cannot run, with typed errors', () => {
    expectTokError(() => createTokenizerFromHF('{not json'), 'TOKENIZER_INVALID');
    expectTokError(() => createTokenizerFromHF({ model: { type: 'Unigram', vocab: [] } }), 'TOKENIZER_UNSUPPORTED');
    // A small byte-level BPE (the synthetic vocab) with a pre-tokenizer we do not implement.
    const sv = makeSyntheticVocab(1000);
    const small = {
      added_tokens: sv.tokens.slice(997).map((content, i) => ({ id: 997 + i, content, special: true })),
      pre_tokenizer: { type: 'Whitespace' },
      model: {
        type: 'BPE',
        vocab: Object.fromEntries(sv.tokens.slice(0, 997).map((t, i) => [t, i])),
        merges: sv.merges,
      },
    };
    expectTokError(() => createTokenizerFromHF(small), 'PRETOKENIZER_UNKNOWN');
    const forced = createTokenizerFromHF(small, undefined, { preTokenizer: 'default' });
    expect(forced.preTokenizer).toBe('default');
    expect(forced.decode(forced.encode('the world'))).toBe('the world');
    expect(forced.chatTemplate?.kind).toBe('bitnet'); // the synthetic vocab has <|eot_id|>
  });
});

describe('pre-tokenizers and Unicode', () => {
  it('treats code points assigned after Unicode 15.1 as unassigned, like llama.cpp', () => {
    expect(LLAMA_CPP_UNICODE_VERSION).toBe('15.1');
    const d = getPreTokenizer('default');
    // U+10D40 GARAY DIGIT ZERO is Nd in Unicode 16: a JS \p{N} would keep "7\u{10D40}" together.
    expect(d.split('7\u{10D40}')).toEqual(['7', '\u{10D40}']);
    expect(getPreTokenizer('gpt-2').split("it's 12")).toEqual(['it', "'s", ' 12']);
    expect(getPreTokenizer('falcon3').name).toBe('llama-bpe');
  });

  it('rejects unknown tokenizer models and pre-tokenizers with typed errors', () => {
    const m: GGUFMetadata = bitnet2b4tMetadata();
    m.set('tokenizer.ggml.model', meta.str('bert'));
    expectTokError(() => createTokenizerFromGGUF(m), 'TOKENIZER_UNSUPPORTED');
    expectTokError(() => createTokenizerFromGGUF(bitnet2b4tMetadata({ pre: 'qwen2' })), 'PRETOKENIZER_UNKNOWN');
  });
});
