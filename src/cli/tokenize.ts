/**
 * `bitnet tokenize --model FILE (--text TEXT | --input STRINGS.json) [--bos] [--parse-special]
 *                  [--pre-tokenizer default|llama-bpe|gpt-2] [--json]`
 *
 * Reads only the GGUF header and metadata (a vocab-only GGUF with no tensors works; the weights of a full
 * model are never read). Output:
 *   --text TEXT           the ids, comma-separated (ready for --prompt-ids); with --json a JSON array
 *   --input FILE.json     FILE holds a JSON array of strings ('-' reads stdin); prints a JSON array of id arrays
 * No BOS unless --bos (then the vocab's BOS id is prepended; an error if it has none). Special-token text
 * such as `<|eot_id|>` is plain text unless --parse-special. The pre-tokenizer is the file's
 * `tokenizer.ggml.pre` (absent: llama.cpp's `default`, as bitnet.cpp) unless --pre-tokenizer says otherwise.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { BitNetError } from '../errors.ts';
import { readGGUF } from '../gguf/reader.ts';
import { openSource } from '../sources/open.ts';
import { createTokenizerFromGGUF } from '../tokenizer/bpe.ts';
import { preTokenizerFlag, required, str } from './args.ts';
import { resolveCliLocation } from './model-location.ts';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function readInputStrings(path: string): Promise<string[]> {
  let raw: string;
  try {
    raw = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (e) {
    throw BitNetError.Io('INPUT_UNREADABLE', `cannot read --input ${path}: ${(e as Error).message}`, { path }, e);
  }
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw BitNetError.Config('BAD_INPUT', `--input ${path} is not JSON: ${(e as Error).message}`, { path });
  }
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw BitNetError.Config('BAD_INPUT', `--input ${path} must hold a JSON array of strings`, { path });
  }
  return v;
}

export async function tokenizeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      text: { type: 'string' },
      input: { type: 'string' },
      bos: { type: 'boolean' },
      'parse-special': { type: 'boolean' },
      'pre-tokenizer': { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const preTokenizer = preTokenizerFlag(values);
  const text = str(values, 'text');
  const input = str(values, 'input');
  if ((text === undefined) === (input === undefined)) {
    throw BitNetError.Config('BAD_FLAG', 'give exactly one of --text and --input', {});
  }
  const texts = input !== undefined ? await readInputStrings(input) : [text as string];

  const src = await openSource(await resolveCliLocation(location, { convert: false }));
  let meta: Awaited<ReturnType<typeof readGGUF>>['metadata'];
  try {
    meta = (await readGGUF(src)).metadata;
  } finally {
    await src.close?.();
  }
  const tok = createTokenizerFromGGUF(meta, { preTokenizer });
  const bos = tok.specialTokens.bosTokenId;
  if (values.bos && bos === undefined) {
    throw BitNetError.Tokenization('NO_BOS_TOKEN', '--bos: the vocabulary has no BOS token', {});
  }
  const parseSpecial = values['parse-special'] === true;
  const out = texts.map((t) => {
    const ids = tok.encode(t, { parseSpecial });
    return values.bos ? [bos as number, ...ids] : ids;
  });
  if (input !== undefined) console.log(JSON.stringify(out));
  else if (values.json) console.log(JSON.stringify(out[0]));
  else console.log(out[0].join(','));
  return 0;
}
