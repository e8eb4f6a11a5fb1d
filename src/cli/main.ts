/** `bitnet` CLI dispatch. Errors print their code and message; --json prints them as JSON on stderr. */
import { isBitNetError } from '../errors.ts';

const USAGE = `bitnet <command> [options]

Commands:
  generate   --model PATH (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N --temperature T --top-k K
             --top-p P --repetition-penalty R --seed S --stop TEXT ...] [--threads N] [--backend reference|wasm] [--json]
  logits     --model PATH --prompt-ids 1,2,3 --json
  synth      (--preset tiny|large|2b-4t | --arch A --hidden H --layers L --heads N --kv-heads M --ffn F --vocab V --ctx C)
             --qtype i2_s|tq2_0|tq1_0|f16 [--embd-type f16|q8_0|q4_0|q6_k] [--activation silu|relu2] --seed S --out FILE.gguf
  inspect    FILE [--json]
  tokenize   --model FILE (--text TEXT | --input STRINGS.json) [--bos] [--parse-special] [--pre-tokenizer P] [--json]
  convert    --model GGUF|HF_DIR --out DIR [--layout i2s|tl1|tl2] [--head keep|f16|q8_0|q6_k|int4] [--shard-size 64MiB] [--json]
  pull       OWNER/REPO [--file F ...] [--out DIR] [--revision R] [--json]

Models load from a path, file://, https://, s3://bucket/key or a shard-pack directory / manifest.json.
`;

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  generate: async () => (await import('./generate.ts')).generateCommand,
  logits: async () => (await import('./logits.ts')).logitsCommand,
  synth: async () => (await import('./synth.ts')).synthCommand,
  inspect: async () => (await import('./inspect.ts')).inspectCommand,
  tokenize: async () => (await import('./tokenize.ts')).tokenizeCommand,
  serve: async () => (await import('./serve.ts')).serveCommand,
  convert: async () => (await import('./convert.ts')).convertCommand,
  pull: async () => (await import('./pull.ts')).pullCommand,
  bench: async () => (await import('./bench.ts')).benchCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    console.error(`unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  const json = rest.includes('--json');
  try {
    return await (await load())(rest);
  } catch (e) {
    if (isBitNetError(e)) {
      if (json) console.error(JSON.stringify({ error: e.toJSON() }));
      else console.error(`error [${e.kind}/${e.code}]: ${e.message}`);
      return 1;
    }
    if (e instanceof TypeError && (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}
