/**
 * The JSON grammar pieces JSON mode and JSON schemas share, in GBNF (gbnf.ts).
 *
 * Whitespace between tokens is one space, or a newline and up to MAX_INDENT spaces or tabs, and
 * none before or after the value (JSON itself allows any run of space, tab, CR and LF): as in
 * llama.cpp's json.gbnf, so that a weak model cannot fill its answer with blank lines. Strings take
 * any character but `"`, `\` and controls, and the escapes `\" \\ \/ \b \f \n \r \t`, and `\u` followed by
 * four hex digits.
 */

export const MAX_INDENT = 20;
/** Containers open at once, at most (JSON mode). */
export const MAX_DEPTH = 32;

export const WS_RULE = `([ ] | [\\n] [ \\t]{0,${MAX_INDENT}})?`;
export const CHAR_RULE = `[^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})`;
export const STRING_RULE = `"\\"" char* "\\""`;

/**
 * JSON mode (OpenAI's `response_format: {type: "json_object"}`): one object, RFC 8259 numbers of
 * any length, nesting at most MAX_DEPTH deep (the levels are unrolled: `obj-d`, `arr-d` and
 * `val-d` are the rules at depth d, and values at the last level are scalars).
 */
function jsonObjectGbnf(): string {
  const lines = [
    'root ::= obj-1',
    `ws ::= ${WS_RULE}`,
    `char ::= ${CHAR_RULE}`,
    `string ::= ${STRING_RULE}`,
    'number ::= "-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?',
    'scalar ::= string | number | "true" | "false" | "null"',
  ];
  for (let d = 1; d <= MAX_DEPTH; d++) {
    lines.push(`obj-${d} ::= "{" ws (mem-${d} ("," ws mem-${d})*)? "}"`);
    lines.push(`mem-${d} ::= string ws ":" ws val-${d} ws`);
    lines.push(`arr-${d} ::= "[" ws (val-${d} ws ("," ws val-${d} ws)*)? "]"`);
    lines.push(d < MAX_DEPTH ? `val-${d} ::= obj-${d + 1} | arr-${d + 1} | scalar` : `val-${d} ::= scalar`);
  }
  return `${lines.join('\n')}\n`;
}

export const JSON_OBJECT_GBNF = jsonObjectGbnf();
