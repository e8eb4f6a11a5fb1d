/**
 * Pre-tokenizers: split raw text into "words" before BPE merges run inside each word.
 *
 * Semantics follow llama.cpp's `unicode_regex_split` (src/unicode.cpp): a pre-tokenizer is a SEQUENCE of
 * regexes. It starts with one piece (the whole text); each regex is run separately over every piece the
 * previous step produced, and both the matches and the unmatched gaps between them become pieces (so no
 * character is ever dropped, and a later regex never sees across an earlier boundary — lookaheads such as
 * `(?!\S)` stop at the end of the piece).
 *
 * Character classes: `\p{L}`, `\p{N}`, `\p{P}` are the Unicode general categories as in llama.cpp's
 * codepoint tables, which are at Unicode 15.1 (unicode-compat.ts: code points assigned later count as Cn). `\s` is written as `\p{White_Space}` because llama.cpp, HF tokenizers and tiktoken all
 * use the Unicode White_Space set (which includes U+0085 and excludes U+FEFF, unlike JS `\s`).
 */
import { BitNetError } from '../errors.ts';
import { LLAMA_CLASS } from './unicode-compat.ts';

export interface PreTokenizer {
  /** Canonical name ('default', 'llama-bpe' or 'gpt-2'). */
  readonly name: string;
  /** Splits text into pieces whose concatenation is exactly `text`. */
  split(text: string): string[];
  /**
   * llama.cpp `tokenizer_ignore_merges`: when a whole piece is already a vocab token, emit it directly
   * instead of running merges (set for LLaMA-3, as in HF's tokenizer.json `ignore_merges: true`).
   */
  readonly ignoreMerges: boolean;
}

const { L, N, P, S, NOT_S_L_N, NOT_CRLF_L_N } = LLAMA_CLASS;

/**
 * GPT-2 word regex, with `\s+(?!\S)` followed by a `\s+` fallback. llama.cpp matches the regex string
 * without the trailing `|\s+` and dispatches it to a hand-written splitter (`unicode_regex_split_custom_gpt2`)
 * whose last step is exactly `\s+`; the regex below reproduces that splitter.
 */
const GPT2_WORDS = `'s|'t|'re|'ve|'m|'ll|'d| ?${L}+| ?${N}+| ?${NOT_S_L_N}+|${S}+(?![^${S}])|${S}+`;

/**
 * llama.cpp DEFAULT (used by bitnet.cpp when `tokenizer.ggml.pre` is absent), applied in this order:
 *  1. `[\p{P}\$\+<=>\^~\|]+`  — runs of punctuation and the ASCII symbols $ + < = > ^ ~ | (not '`')
 *  2. the GPT-2 word regex      — contractions, ' '?letters, ' '?numbers, ' '?other, whitespace
 *  3. `\p{N}+`                  — splits the leading space off ' 123' produced by step 2
 *  4. `[0-9][0-9][0-9]`         — chops ASCII digit runs into groups of three from the left
 * Step 1 runs first, so the apostrophe of "world's" is isolated ("'", "s") and the contraction rule of
 * step 2 never fires on ASCII apostrophes.
 */
const DEFAULT_REGEXES: readonly RegExp[] = [
  new RegExp(`[${P}\\$\\+<=>\\^~\\|]+`, 'gv'),
  new RegExp(GPT2_WORDS, 'gv'),
  new RegExp(`${N}+`, 'gv'),
  /[0-9][0-9][0-9]/g,
];

/**
 * LLaMA-3 (tiktoken / HF `tokenizer.json`) regex, in llama.cpp's adapted form: the `(?i:'s|...)` group is
 * spelled out as explicit case classes (the same ASCII letters llama.cpp's splitter lowercases).
 */
const LLAMA3_REGEXES: readonly RegExp[] = [
  new RegExp(
    `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|${NOT_CRLF_L_N}?${L}+|${N}{1,3}` +
      `| ?${NOT_S_L_N}+[\\r\\n]*|${S}*[\\r\\n]+|${S}+(?![^${S}])|${S}+`,
    'gv',
  ),
];

/** Applies a regex sequence with llama.cpp semantics (see file comment). Regexes must have the `g` flag. */
export function splitWithRegexSequence(text: string, regexes: readonly RegExp[]): string[] {
  let pieces = text.length > 0 ? [text] : [];
  for (const re of regexes) {
    const next: string[] = [];
    for (const piece of pieces) {
      let last = 0;
      re.lastIndex = 0;
      for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
        if (m[0].length === 0) {
          re.lastIndex++; // none of our regexes can match empty; guard anyway
          continue;
        }
        if (m.index > last) next.push(piece.slice(last, m.index));
        next.push(m[0]);
        last = m.index + m[0].length;
      }
      if (last < piece.length) next.push(last === 0 ? piece : piece.slice(last));
    }
    pieces = next;
  }
  return pieces;
}

function make(name: string, regexes: readonly RegExp[], ignoreMerges: boolean): PreTokenizer {
  return { name, ignoreMerges, split: (text) => splitWithRegexSequence(text, regexes) };
}

/** GPT-2's single regex (llama.cpp pre type GPT2: `gpt-2`, `phi-2`, ...; HF ByteLevel with use_regex). */
const GPT2_REGEXES: readonly RegExp[] = [new RegExp(GPT2_WORDS, 'gv')];

const PRE_TOKENIZERS: Readonly<Record<string, PreTokenizer>> = {
  default: make('default', DEFAULT_REGEXES, false),
  'llama-bpe': make('llama-bpe', LLAMA3_REGEXES, true),
  'gpt-2': make('gpt-2', GPT2_REGEXES, false),
};

/** Aliases accepted by llama.cpp for the same pre-tokenizer. */
const ALIASES: Readonly<Record<string, string>> = Object.fromEntries([
  ...['llama3', 'llama-v3', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2', 'jina-v5-nano'].map((a) => [
    a,
    'llama-bpe',
  ]),
  ...['phi-2', 'mpt', 'olmo', 'jais'].map((a) => [a, 'gpt-2']),
]);

/** Names accepted by getPreTokenizer (canonical names first). */
export const SUPPORTED_PRE_TOKENIZERS: readonly string[] = [...Object.keys(PRE_TOKENIZERS), ...Object.keys(ALIASES)];

/** Looks a pre-tokenizer up by name; unknown names throw PRETOKENIZER_UNKNOWN listing the supported ones. */
export function getPreTokenizer(name: string): PreTokenizer {
  const canonical = Object.hasOwn(ALIASES, name) ? ALIASES[name] : name;
  if (Object.hasOwn(PRE_TOKENIZERS, canonical)) return PRE_TOKENIZERS[canonical];
  throw BitNetError.Tokenization(
    'PRETOKENIZER_UNKNOWN',
    `unknown pre-tokenizer '${name}'; supported: ${SUPPORTED_PRE_TOKENIZERS.join(', ')}`,
    { name, supported: SUPPORTED_PRE_TOKENIZERS },
  );
}
