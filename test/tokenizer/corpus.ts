/**
 * Tokenizer test corpora: a curated varied corpus and seeded random generators (held-out text no
 * implementation was tuned on). Seeds are fixed; change them to draw fresh corpora.
 */
import { ASSIGNED_AFTER_LLAMA_CPP_UNICODE } from '../../src/tokenizer/unicode-compat.ts';

/** mulberry32: small seeded PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const CURATED: readonly string[] = [
  '',
  ' ',
  'Hello, world!',
  'Hello world',
  ' Hello world',
  '  leading and trailing  ',
  "I'm sure you're right, we'll see; they'd've DON'T It's O'Neil's 'quoted' '' 'S 'T 'RE 'Ve 'LL",
  'function add(a, b) {\n\treturn a + b; // sum\n}\n\nconst x = add(1, 2) ?? 0;',
  'def f(x):\n    if x >= 10 and x != 3:\n        return [i**2 for i in range(x)]\n',
  '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }\n',
  "SELECT * FROM users WHERE id = $1 AND name <> 'x' ORDER BY created_at DESC;",
  'x => x*2; a===b || c!==d && e<=f >= g; i++; j--; k **= 2; arr[0]?.b?.[c]',
  '<div class="a">&nbsp;&lt;tag&gt;</div> <!-- comment --> {{ template }} $' + '{var}',
  'Family: 👩‍👩‍👧‍👦 flags 🇺🇸🇯🇵🏴‍☠️ skin 👍🏽 heart ❤️ keycap 1️⃣ rainbow 🏳️‍🌈 technologist 👩🏾‍💻',
  '😀😃😄😁😆😅😂🤣🥲☺️😊😇🙂🙃😉',
  '日本語のテキストです。中文文本，한국어 텍스트',
  '漢字かなカナ混じり文、句読点。「括弧」『二重』（全角）１２３',
  'مرحبا بالعالم — שלום עולם (RTL) ‏mark‎ ١٢٣ ۴۵۶',
  'नमस्ते दुनिया, हिन्दी में लिखा गया पाठ। १२३४ क्षत्रिय',
  'ภาษาไทย ไม่มีช่องว่าง ระหว่างคำ ๑๒๓',
  'Ελληνικά, Русский текст, Ўзбек, Հայերեն, ქართული',
  'Numbers: 0 7 42 123 1234 12345678901234567890 3.14159 -2.5e-10 ٣٤٥٦ ²³ Ⅻ ½ ⅞ 1,000,000 10^9',
  'whitespace:   \t\t \n\n\n  \r\n \u00a0\u3000\u2028 end   ',
  '\n',
  '\n\n\n',
  '\t',
  '   ',
  'a\n\nb',
  'trailing newline\n',
  'URL https://example.com/a/b?q=1&x=%20y#frag and mailto:someone@example.org',
  'file:///C:/Users/x/Documents/report_v2.final.pdf ftp://[::1]:21/a',
  '\uFEFFBOM at start, NEL\u0085here, combining e\u0301 and Zalgo Z\u0335\u0321a\u0334',
  "$PATH | grep ^~/x <a href='y'>z</a> `code` ~~strike~~ ||or|| ^^",
  '<|begin_of_text|>not special unless parsed<|eot_id|>',
  '<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
  '<s> </s> <unk> [INST] hi [/INST]',
  'ALLCAPS WORDS AND MiXeD CaSe wOrDs',
  'e.g. i.e. etc... "smart quotes" ‘single’ — en–dash … ellipsis',
  'Ünïcödé àccents: café naïve façade Ångström Œuvre straße',
  '\u0000\u0001\u0007\u001b[31mansi\u001b[0m\u007f',
  'private use \uE000\uF8FF \u{F0000} and unassigned \u{E0080} \u{10FFFD}',
  'new in Unicode 16/17: \u{1FA89}\u{1FA8F} \u{11380}\u{11381} \u{1CC00} \u{16100}',
  'Unicode 16 letters and digits: a\u{1C89}b x\u{10D40}\u{10D41}7 \u{A7CB}\u{A7CC}',
  'lone surrogates \uD800 and \uDFFF here',
  // where JS-regex tokenizers (JS \s, Unicode 17) differ from HF / llama.cpp (White_Space, Unicode 15.1):
  'a \u0085b',
  'a \uFEFFb',
  'a \u{10D40}b',
];

/** Code points assigned after Unicode 15.1 (llama.cpp's tables), where JS libraries disagree with llama.cpp. */
export function isNewerUnicode(cp: number): boolean {
  for (const [a, b] of ASSIGNED_AFTER_LLAMA_CPP_UNICODE) if (cp >= a && cp <= b) return true;
  return false;
}

const POOLS: readonly (readonly [number, number])[] = [
  [0x20, 0x7e], // ASCII
  [0xa0, 0x24f], // Latin-1, Latin Extended
  [0x370, 0x3ff], // Greek
  [0x400, 0x4ff], // Cyrillic
  [0x590, 0x5ff], // Hebrew
  [0x600, 0x6ff], // Arabic
  [0x900, 0x97f], // Devanagari
  [0xe00, 0xe7f], // Thai
  [0x2000, 0x206f], // General punctuation
  [0x2100, 0x23ff], // Letterlike, number forms, arrows, math
  [0x3000, 0x30ff], // CJK punctuation, Hiragana, Katakana
  [0x4e00, 0x9fff], // CJK
  [0xac00, 0xd7a3], // Hangul
  [0xff00, 0xffef], // Fullwidth
  [0x1f300, 0x1faff], // Emoji and symbols (includes Unicode 16/17 additions)
  [0x10000, 0x10ffff], // anything astral
];
const WS = [0x09, 0x0a, 0x0d, 0x20, 0x20, 0x20, 0x85, 0xa0, 0x3000, 0x2028, 0x200b, 0xfeff];
const JOINERS = [0x200d, 0xfe0f, 0x1f3fb, 0x1f3fd, 0x301, 0x308];
const WORDS =
  "the of and to in is that it was for on are with as I his they be at one have this from or had by hot word but what some we can out other were all there when up use your how said an each she which do their time if will way about many then them write would like so these her long make thing see him two has look more day could go come did number sound no most people my over know water than call first who may down side been now find any new work part take get place made live where after back little only round man year came show every good me give our under name very through just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell does set three want air well also play small end put home read hand port large spell add even land here must big high such follow act why ask men change went light kind off need house picture try us again animal point mother world near build self earth father don't it's we're you'll they've I'd".split(
    ' ',
  );

function codePoint(rand: () => number, allowNewer: boolean): number {
  for (;;) {
    const k = rand();
    let cp: number;
    if (k < 0.12) cp = WS[Math.floor(rand() * WS.length)];
    else if (k < 0.16) cp = JOINERS[Math.floor(rand() * JOINERS.length)];
    else if (k < 0.2) cp = 0x30 + Math.floor(rand() * 10);
    else {
      const [a, b] = POOLS[Math.floor(rand() * POOLS.length)];
      cp = a + Math.floor(rand() * (b - a + 1));
    }
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    if (!allowNewer && isNewerUnicode(cp)) continue;
    return cp;
  }
}

/** Random valid text: a mix of words, numbers, punctuation runs, whitespace runs and random code points. */
export function randomText(rand: () => number, opts: { maxLen?: number; allowNewer?: boolean } = {}): string {
  const maxLen = opts.maxLen ?? 60;
  const allowNewer = opts.allowNewer ?? true;
  const target = 1 + Math.floor(rand() * maxLen);
  let s = '';
  while (s.length < target) {
    const k = rand();
    if (k < 0.3) s += (rand() < 0.7 ? ' ' : '') + WORDS[Math.floor(rand() * WORDS.length)];
    else if (k < 0.4) s += String(Math.floor(rand() * 10 ** (1 + Math.floor(rand() * 8))));
    else if (k < 0.5)
      s += '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'[Math.floor(rand() * 32)].repeat(1 + Math.floor(rand() * 3));
    else if (k < 0.6) s += [' ', '  ', '\n', '\n\n', '\t', ' \n', '\r\n', '    '][Math.floor(rand() * 8)];
    else s += String.fromCodePoint(codePoint(rand, allowNewer));
  }
  return s;
}

/** `n` random texts from `seed`. */
export function randomCorpus(seed: number, n: number, opts?: { maxLen?: number; allowNewer?: boolean }): string[] {
  const rand = prng(seed);
  return Array.from({ length: n }, () => randomText(rand, opts));
}

/** Random text with the special-token texts of a vocab sprinkled in (for parseSpecial parity). */
export function randomWithSpecials(seed: number, n: number, specials: readonly string[]): string[] {
  const rand = prng(seed);
  return Array.from({ length: n }, () => {
    let s = '';
    const parts = 1 + Math.floor(rand() * 5);
    for (let i = 0; i < parts; i++) {
      s += randomText(rand, { maxLen: 20, allowNewer: false });
      if (rand() < 0.7) s += specials[Math.floor(rand() * specials.length)];
    }
    return s;
  });
}
