/**
 * Deterministic synthetic byte-level BPE vocabulary, for tests and for synthetic GGUF files that
 * llama.cpp must be able to load.
 *
 * Shape of the result for vocabSize V (>= 262):
 *   ids 0..255        the 256 single bytes in GPT-2 byte-level form, id = byte value (type 1)
 *   ids 256..V-4      merged tokens; token 256+i is the concatenation of the two parts of merges[i]
 *                     ("a b"), both of which are earlier tokens (type 1)
 *   ids V-3, V-2, V-1 `<|begin_of_text|>` (bos), `<|end_of_text|>` (eos), `<|eot_id|>` (eot), type 3
 * No token string repeats, every merge's parts and result are tokens, and merges are in rank order.
 *
 * Merge order (earlier = lower rank = applied first): space+letter ('Ġt'), common English letter pairs,
 * common words and code keywords (with and without a leading space, lower and capitalised), whitespace
 * and punctuation runs, 2- and 3-digit numbers, then a systematic fill of letter strings of growing length.
 * Curated words are added by running BPE with the merges so far and merging the resulting pieces left to
 * right, so each curated word really encodes as one token.
 */
import { BitNetError } from '../errors.ts';
import { type GGUFMetadata, GGUFValueType } from '../gguf/metadata.ts';
import { bpeMerge, TokenType } from './bpe.ts';
import { BYTE_TO_UNICODE, textToByteLevel } from './byte-unicode.ts';

export interface SyntheticVocab {
  tokens: string[];
  merges: string[];
  tokenTypes: Int32Array;
  bosId: number;
  eosId: number;
  eotId: number;
}

const CONTROL_TOKENS = ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>'];

const LOWER_BY_FREQ = 'etaoinsrhldcumfpgwybvkxjqz';
const UPPER_BY_FREQ = 'TAISCMBPHWDRFLNEGOJKUVYQXZ';

const BIGRAMS = (
  'th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi ri ' +
  'ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us ac ot il tr ly nc et ut ' +
  'ss so rs un lo wa ge ie wh ee wi em ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su id os iv ia am fi ' +
  'ci vi pl ig tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do uc bu ei ov'
).split(' ');

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an ' +
  'they you were their one all we can her has there been if more when will would who so no she other its ' +
  'may these about some into than them only could new out time also first two most over what like do any ' +
  'my after our such your just because many me how where then people way well even made through back ' +
  'world good make through year very between each work those much before while should great still here ' +
  'function return const let var import export class if else for while def self print true false null ' +
  'this new int string void public private static from async await type interface'
).split(' ');

const SUFFIXES = 'ing ed tion ly er es ment ness able ive ous al ity ation ers ted ent ence ance ful less'.split(' ');

/** Whitespace and punctuation runs the pre-tokenizers produce often (plain text; spaces become 'Ġ'). */
const SYMBOL_RUNS = [
  '  ',
  '   ',
  '    ',
  '        ',
  '\n\n',
  '\t\t',
  ' (',
  ' "',
  ' {',
  ' }',
  ' =',
  ' ==',
  ' ===',
  ' =>',
  ' ->',
  ' //',
  ' /*',
  ' */',
  ' -',
  ' +',
  ' *',
  ' <',
  ' >',
  ' &&',
  ' ||',
  ' $',
  ' #',
  '()',
  '();',
  '{}',
  '...',
  '!!',
  '##',
  "'s",
  "'t",
  "'re",
  "'ve",
  "'m",
  "'ll",
  "'d",
];

class VocabBuilder {
  readonly tokens: string[] = BYTE_TO_UNICODE.slice();
  readonly merges: string[] = [];
  private readonly have = new Set<string>(this.tokens);
  private readonly ranks = new Map<string, number>();
  private readonly limit: number;

  constructor(mergeCount: number) {
    this.limit = mergeCount;
  }

  get full(): boolean {
    return this.merges.length >= this.limit;
  }

  has(s: string): boolean {
    return this.have.has(s);
  }

  /** Adds merge "a b" -> a+b when both parts exist and the result is new. */
  merge(a: string, b: string): boolean {
    const s = a + b;
    if (this.full || this.have.has(s) || !this.have.has(a) || !this.have.has(b)) return false;
    const m = a + ' ' + b;
    this.ranks.set(m, this.merges.length);
    this.merges.push(m);
    this.tokens.push(s);
    this.have.add(s);
    return true;
  }

  /** Makes byte-level string `w` a single token reachable by BPE (gives up if that would repeat a token). */
  word(w: string): void {
    if (this.have.has(w)) return;
    const parts = bpeMerge(w, this.ranks);
    let acc = parts[0];
    for (let i = 1; i < parts.length; i++) {
      if (!this.merge(acc, parts[i])) return;
      acc += parts[i];
    }
  }
}

const capitalise = (w: string): string => w[0].toUpperCase() + w.slice(1);

/** Builds a synthetic vocabulary of exactly `vocabSize` tokens (see the file comment for its layout). */
export function makeSyntheticVocab(vocabSize: number): SyntheticVocab {
  if (!Number.isInteger(vocabSize) || vocabSize < 262) {
    throw BitNetError.Tokenization('TOKENIZER_INVALID', `synthetic vocab size must be an integer >= 262`, {
      vocabSize,
    });
  }
  const b = new VocabBuilder(vocabSize - 256 - CONTROL_TOKENS.length);
  const G = BYTE_TO_UNICODE[0x20]; // 'Ġ'

  for (const c of LOWER_BY_FREQ) b.merge(G, c);
  for (const c of UPPER_BY_FREQ) b.merge(G, c);
  for (const bg of BIGRAMS) b.merge(bg[0], bg[1]);
  for (const w of WORDS) {
    b.word(G + w);
    b.word(w);
    b.word(G + capitalise(w));
    b.word(capitalise(w));
  }
  for (const s of SUFFIXES) b.word(s);
  for (const s of SYMBOL_RUNS) b.word(textToByteLevel(s));
  for (let i = 0; i < 100; i++) b.word(String(i).padStart(2, '0'));
  for (let i = 0; i < 1000; i++) b.word(String(i).padStart(3, '0'));

  // Systematic fill: lowercase strings of length 2, 3, ... each as 'Ġ'+x and x, built from x minus its last
  // letter (which exists: it was added, or already present, in the previous round).
  let level: string[] = [...LOWER_BY_FREQ];
  while (!b.full) {
    const nextLevel: string[] = [];
    for (const p of level) {
      for (const c of LOWER_BY_FREQ) {
        nextLevel.push(p + c);
        b.merge(G + p, c);
        b.merge(p, c);
      }
      if (b.full) break;
    }
    level = nextLevel;
  }

  const tokens = b.tokens;
  for (const t of CONTROL_TOKENS) {
    if (b.has(t)) throw new Error(`synthetic vocab: control token ${t} collides with a merged token`);
    tokens.push(t);
  }
  const tokenTypes = new Int32Array(vocabSize).fill(TokenType.NORMAL);
  tokenTypes.fill(TokenType.CONTROL, vocabSize - CONTROL_TOKENS.length);
  return {
    tokens,
    merges: b.merges,
    tokenTypes,
    bosId: vocabSize - 3,
    eosId: vocabSize - 2,
    eotId: vocabSize - 1,
  };
}

export interface SyntheticMetadataOptions {
  /** Written as `tokenizer.ggml.pre` when given (absent by default, like the published BitNet GGUF). */
  pre?: string;
  /** Written as `tokenizer.ggml.add_bos_token`; default true. */
  addBos?: boolean;
}

/**
 * The `tokenizer.ggml.*` entries describing a synthetic vocab, as a GGUF writer or reader would hold them
 * (BitNet 2B-4T layout: pad = eos, no eot id — the eot is found by its text).
 */
export function syntheticVocabMetadata(v: SyntheticVocab, opts: SyntheticMetadataOptions = {}): GGUFMetadata {
  const m: GGUFMetadata = new Map();
  const str = (value: string) => ({ type: GGUFValueType.STRING, value });
  const u32 = (value: number) => ({ type: GGUFValueType.UINT32, value });
  m.set('tokenizer.ggml.model', str('gpt2'));
  if (opts.pre !== undefined) m.set('tokenizer.ggml.pre', str(opts.pre));
  m.set('tokenizer.ggml.tokens', { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.STRING, value: v.tokens });
  m.set('tokenizer.ggml.token_type', {
    type: GGUFValueType.ARRAY,
    arrayType: GGUFValueType.INT32,
    value: v.tokenTypes,
  });
  m.set('tokenizer.ggml.merges', { type: GGUFValueType.ARRAY, arrayType: GGUFValueType.STRING, value: v.merges });
  m.set('tokenizer.ggml.bos_token_id', u32(v.bosId));
  m.set('tokenizer.ggml.eos_token_id', u32(v.eosId));
  m.set('tokenizer.ggml.padding_token_id', u32(v.eosId));
  m.set('tokenizer.ggml.add_bos_token', { type: GGUFValueType.BOOL, value: opts.addBos ?? true });
  return m;
}
