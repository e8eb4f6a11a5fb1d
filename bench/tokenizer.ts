/**
 * Tokenizer throughput: encode ~1 MB of mixed text (English prose, code, CJK, other scripts, numbers, emoji,
 * whitespace runs) with our tokenizers and with the JS reference libraries, in the same process.
 *
 *   node bench/tokenizer.ts [--mb 1] [--runs 5]
 *
 * Prints one JSON object. "cold" runs use a fresh tokenizer (empty per-piece cache; construction is timed
 * separately), as the JS libraries start every encode call with an empty cache; "warm" runs reuse it.
 * `speedupVsLlama3TokenizerJs` = llama3-tokenizer-js median time / our cold median time (llama-bpe, same vocab).
 */
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';
import llama2 from 'llama-tokenizer-js';
import llama3 from 'llama3-tokenizer-js';
import { createTokenizerFromGGUF, type Tokenizer } from '../src/tokenizer/index.ts';
import { prng } from '../test/tokenizer/corpus.ts';
import { bitnet2b4tMetadata, llama2Metadata } from '../test/tokenizer/vocabs.ts';

const { values } = parseArgs({ options: { mb: { type: 'string' }, runs: { type: 'string' } } });
const MB = Number(values.mb ?? 1);
const RUNS = Number(values.runs ?? 5);

/** Deterministic mixed text of about `bytes` UTF-8 bytes. */
function mixedText(bytes: number): string {
  const r = prng(20240501);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const syll = 'ka ri to na me lo su pe vi da ne mo ra sha tion ing er an re on en at or es ti ar al'.split(' ');
  const common =
    "the of and to in is that it was for on are with as I his they be at one have this from or had by word but what some we can out other were all there when up use your how said an each she which do their time if will way about many then them write would like so these her long make thing see him two has look more day could go come did number no most people my over know water than call first who may down side been now find any new work part take get place made live where after back little only round man year came show every good me give our under name very through just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell does set three want air well also play small end put home read hand port large spell add even land here must big high such follow act why ask men change went light kind off need house picture try us again animal point mother world near build self earth father don't it's we're you'll they've I'd".split(
      ' ',
    );
  const word = () =>
    r() < 0.8 ? pick(common) : Array.from({ length: 2 + Math.floor(r() * 3) }, () => pick(syll)).join('');
  const code = [
    'function f(a, b) {\n  return a + b;\n}\n',
    'for (let i = 0; i < n; i++) {\n    sum += arr[i] * 2;\n}\n',
    'def main():\n    print("hello", x)\n\n',
    'if (x != null && y >= 10) { throw new Error(`bad $' + '{x}`); }\n',
    'const { data } = await fetch(url, { method: "POST" });\n',
  ];
  const cjk = () =>
    Array.from({ length: 5 + Math.floor(r() * 20) }, () =>
      String.fromCodePoint(0x4e00 + Math.floor(r() * 0x5000)),
    ).join('');
  const other = [
    'Привет, как дела? ',
    'مرحبا بالعالم ',
    'नमस्ते दुनिया ',
    'Γειά σου κόσμε ',
    'こんにちは、世界。',
    '안녕하세요 세계 ',
  ];
  const emoji = ['😀', '👩‍👩‍👧‍👦', '🇺🇸', '👍🏽', '❤️', '🎉', '🚀'];
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    const k = r();
    let s: string;
    if (k < 0.55)
      s = Array.from({ length: 5 + Math.floor(r() * 20) }, word).join(' ') + pick(['. ', ', ', '! ', '? ', '.\n\n']);
    else if (k < 0.7) s = pick(code);
    else if (k < 0.78) s = cjk();
    else if (k < 0.86) s = pick(other);
    else if (k < 0.93) s = `${Math.floor(r() * 1e9)} ${(r() * 1000).toFixed(3)} ${Math.floor(r() * 100)}% `;
    else if (k < 0.97) s = pick(emoji) + ' ';
    else s = pick(['    ', '\n', '\t\t', '  \n  ', '\r\n']);
    parts.push(s);
    size += Buffer.byteLength(s);
  }
  return parts.join('');
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// A full GC before every timed run, so that garbage from earlier runs (old tokenizers) is not collected
// inside someone else's timing.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

function time(fn: () => unknown): number {
  gc();
  const t = performance.now();
  fn();
  return performance.now() - t;
}

interface OursResult {
  ids: number[];
  build: number[];
  cold: number[];
  warm: number[];
}

/** One run: a fresh tokenizer (build timed), a cold encode, a warm encode. */
function runOurs(make: () => Tokenizer, text: string, r: OursResult): void {
  let tok: Tokenizer | undefined;
  r.build.push(
    time(() => {
      tok = make();
    }),
  );
  const t = tok as Tokenizer;
  r.cold.push(time(() => (r.ids = t.encode(text, { parseSpecial: true }))));
  r.warm.push(time(() => t.encode(text, { parseSpecial: true })));
}

const text = mixedText(MB * 1_000_000);
const textBytes = Buffer.byteLength(text);
const mbps = (ms: number) => Number((textBytes / 1e6 / (ms / 1000)).toFixed(2));

const bpeMeta = bitnet2b4tMetadata({ pre: 'llama-bpe', bitnetNames: false });
const defMeta = bitnet2b4tMetadata();
const spmMeta = llama2Metadata();

// Warm up the JIT for everyone on a slice first.
const warmup = text.slice(0, 100_000);
llama3.encode(warmup, { bos: false, eos: false });
llama2.encode(warmup, false);
createTokenizerFromGGUF(bpeMeta).encode(warmup);

const fresh = (): OursResult => ({ ids: [], build: [], cold: [], warm: [] });
const ourBpe = fresh();
const ourDefault = fresh();
const ourSpm = fresh();
const l3: number[] = [];
const l2: number[] = [];
let l3ids: number[] = [];
let l2ids: number[] = [];
// Interleaved, so that a busy machine slows every contender alike.
for (let i = 0; i < RUNS; i++) {
  runOurs(() => createTokenizerFromGGUF(bpeMeta), text, ourBpe);
  l3.push(time(() => (l3ids = llama3.encode(text, { bos: false, eos: false }))));
  runOurs(() => createTokenizerFromGGUF(defMeta), text, ourDefault);
  runOurs(() => createTokenizerFromGGUF(spmMeta), text, ourSpm);
  if (i < 3) l2.push(time(() => (l2ids = llama2.encode(text, false)))); // ~10 s each: three runs are enough
}

const summary = (r: OursResult) => ({
  tokens: r.ids.length,
  buildMs: +median(r.build).toFixed(1),
  coldMs: +median(r.cold).toFixed(1),
  warmMs: +median(r.warm).toFixed(1),
  coldMBps: mbps(median(r.cold)),
  warmMBps: mbps(median(r.warm)),
});

const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const l3ms = median(l3);
const l2ms = median(l2);
const result = {
  bench: 'tokenizer-encode',
  node: process.version,
  textBytes,
  textChars: text.length,
  runs: RUNS,
  ours: { 'llama-bpe': summary(ourBpe), default: summary(ourDefault), sentencepiece: summary(ourSpm) },
  'llama3-tokenizer-js': {
    tokens: l3ids.length,
    ms: +l3ms.toFixed(1),
    MBps: mbps(l3ms),
    identicalToOurs: same(l3ids, ourBpe.ids),
  },
  'llama-tokenizer-js': {
    tokens: l2ids.length,
    ms: +l2ms.toFixed(1),
    MBps: mbps(l2ms),
    identicalToOurs: same(l2ids, ourSpm.ids),
  },
  speedupVsLlama3TokenizerJs: +(l3ms / median(ourBpe.cold)).toFixed(2),
  speedupVsLlama3TokenizerJsWarm: +(l3ms / median(ourBpe.warm)).toFixed(2),
  speedupVsLlamaTokenizerJs: +(l2ms / median(ourSpm.cold)).toFixed(2),
};
console.log(JSON.stringify(result, null, 2));
