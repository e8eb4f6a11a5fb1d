/**
 * GPT-2 byte <-> unicode mapping used by byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`).
 *
 * Every byte 0..255 is given a printable unicode character so that vocab strings never contain raw
 * control bytes or spaces: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves,
 * and the remaining 68 bytes map, in byte order, to U+0100, U+0101, ... So the space byte 0x20 is 'Ġ'
 * (U+0120), '\n' is 'Ċ' (U+010A) and '\t' is 'ĉ' (U+0109). All mapped characters are in the BMP (max
 * U+0143), so one mapped byte is exactly one UTF-16 code unit — the BPE code relies on that.
 */

/** BYTE_TO_UNICODE[b] is the one-character string standing for byte b. */
export const BYTE_TO_UNICODE: readonly string[] = buildByteToUnicode();

/** Inverse map, indexed by char code (0..0x143); -1 where the char stands for no byte. */
const CHAR_TO_BYTE: Int16Array = buildCharToByte();

function buildByteToUnicode(): string[] {
  const out = new Array<string>(256);
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  }
  return out;
}

function buildCharToByte(): Int16Array {
  const table = new Int16Array(0x144).fill(-1);
  for (let b = 0; b < 256; b++) table[BYTE_TO_UNICODE[b].charCodeAt(0)] = b;
  return table;
}

/** The byte a single mapped character stands for, or -1 when the code unit is not part of the mapping. */
export function unicodeCharToByte(charCode: number): number {
  return charCode < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[charCode] : -1;
}

/** Maps raw bytes to their byte-level string (one char per byte). */
export function bytesToUnicode(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_UNICODE[bytes[i]];
  return s;
}

const utf8Encoder = new TextEncoder();

/**
 * UTF-8 encodes `text` and maps each byte to its character. Pure-ASCII text (the common case) skips the
 * TextEncoder allocation. Lone surrogates become U+FFFD (EF BF BD), as TextEncoder does.
 */
export function textToByteLevel(text: string): string {
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (!ascii) return bytesToUnicode(utf8Encoder.encode(text));
  let s = '';
  for (let i = 0; i < text.length; i++) s += BYTE_TO_UNICODE[text.charCodeAt(i)];
  return s;
}

/**
 * Maps a byte-level string back to bytes. Characters outside the mapping (a vocab entry that is not
 * byte-level, e.g. a raw '中') are passed through as their own UTF-8 bytes rather than dropped.
 */
export function byteLevelToBytes(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const b = unicodeCharToByte(s.charCodeAt(i));
    if (b >= 0) {
      out.push(b);
      continue;
    }
    const cp = s.codePointAt(i) as number;
    if (cp > 0xffff) i++;
    for (const x of utf8Encoder.encode(String.fromCodePoint(cp))) out.push(x);
  }
  return Uint8Array.from(out);
}
