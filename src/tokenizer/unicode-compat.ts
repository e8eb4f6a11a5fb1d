/**
 * Unicode character classes as llama.cpp sees them.
 *
 * llama.cpp's codepoint tables (src/unicode-data.cpp, generated from UnicodeData.txt) are at Unicode 15.1:
 * every code point that Unicode 16.0 or 17.0 assigned is "unassigned" (Cn) there. JavaScript engines ship
 * newer Unicode data (Node 22: Unicode 17), where those ~10,000 code points are letters, numbers, marks,
 * punctuation or symbols. Pre-tokenizer regexes built from the classes below treat them as Cn, so splitting
 * matches llama.cpp (and bitnet.cpp) id for id on any text. Measured on the whole code space: apart from
 * these additions, Node 22's `\p{L}`, `\p{N}`, `\p{P}` and `\p{White_Space}` agree with llama.cpp's flags.
 *
 * The classes use the regex `v` flag (set subtraction); all regexes that embed them must use the `v` flag.
 */

/** Unicode version of llama.cpp's (node-llama-cpp 3.21.1's) codepoint tables. */
export const LLAMA_CPP_UNICODE_VERSION = '15.1';

/** Code points assigned in Unicode 16.0 and 17.0 (hex ranges, inclusive). */
const ASSIGNED_AFTER_15_1 =
  '88F 897 C5C CDC 1ACF-1ADD 1AE0-1AEB 1B4E-1B4F 1B7F 1C89-1C8A 20C1 2427-2429 2B96 31E4-31E5 ' +
  'A7CB-A7CF A7D2 A7D4 A7DA-A7DC A7F1 FBC3-FBD2 FD90-FD91 FDC8-FDCE 105C0-105F3 10940-10959 ' +
  '10D40-10D65 10D69-10D85 10D8E-10D8F 10EC2-10EC7 10ED0-10ED8 10EFA-10EFC 11380-11389 1138B 1138E ' +
  '11390-113B5 113B7-113C0 113C2 113C5 113C7-113CA 113CC-113D5 113D7-113D8 113E1-113E2 116D0-116E3 ' +
  '11B60-11B67 11BC0-11BE1 11BF0-11BF9 11DB0-11DDB 11DE0-11DE9 11F5A 13460-143FA 16100-16139 ' +
  '16D40-16D79 16EA0-16EB8 16EBB-16ED3 16FF2-16FF6 187F8-187FF 18CFF 18D09-18D1E 18D80-18DF2 ' +
  '1CC00-1CCFC 1CD00-1CEB3 1CEBA-1CED0 1CEE0-1CEF0 1E5D0-1E5FA 1E5FF 1E6C0-1E6DE 1E6E0-1E6F5 ' +
  '1E6FE-1E6FF 1F6D8 1F777-1F77A 1F8B2-1F8BB 1F8C0-1F8C1 1F8D0-1F8D8 1FA54-1FA57 1FA89-1FA8A ' +
  '1FA8E-1FA8F 1FABE 1FAC6 1FAC8 1FACD 1FADC 1FADF 1FAE9-1FAEA 1FAEF 1FBCB-1FBEF 1FBFA 2B73A-2B73F ' +
  '2CEA2-2CEAD 323B0-33479';

/** The ranges as [first, last] pairs. */
export const ASSIGNED_AFTER_LLAMA_CPP_UNICODE: readonly (readonly [number, number])[] = ASSIGNED_AFTER_15_1.split(
  ' ',
).map((r) => {
  const [a, b = a] = r.split('-');
  return [Number.parseInt(a, 16), Number.parseInt(b, 16)] as const;
});

/** A `v`-flag class of those code points, e.g. `[\u{88F}\u{1ACF}-\u{1ADD}…]`. */
const NEW = `[${ASSIGNED_AFTER_LLAMA_CPP_UNICODE.map(([a, b]) =>
  a === b ? `\\u{${a.toString(16)}}` : `\\u{${a.toString(16)}}-\\u{${b.toString(16)}}`,
).join('')}]`;

/** Regex class sources (for `v`-flag regexes) matching llama.cpp's categories. */
export const LLAMA_CLASS = {
  /** \p{L} */
  L: `[\\p{L}--${NEW}]`,
  /** \p{N} */
  N: `[\\p{N}--${NEW}]`,
  /** \p{P} */
  P: `[\\p{P}--${NEW}]`,
  /** \s (Unicode White_Space; unchanged since Unicode 6) */
  S: '\\p{White_Space}',
  /** [^\s\p{L}\p{N}] */
  NOT_S_L_N: `[^\\p{White_Space}[\\p{L}--${NEW}][\\p{N}--${NEW}]]`,
  /** [^\r\n\p{L}\p{N}] */
  NOT_CRLF_L_N: `[^\\r\\n[\\p{L}--${NEW}][\\p{N}--${NEW}]]`,
} as const;
