/** `bitnet` CLI dispatch. Errors print their code and message; --json prints them as JSON on stderr. */
import { BitNetError, isBitNetError } from '../errors.ts';
import { joinNegativeValues, wantsHelp } from './args.ts';

/** Each command's usage, printed by `bitnet CMD --help` and, all together, by `bitnet --help`. */
export const COMMAND_USAGE: Record<string, string> = {
  generate: `generate   --model LOCATION (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N] [--temperature T] [--top-k K]
             [--top-p P] [--min-p P] [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F]
             [--logit-bias ID=BIAS ...] [--seed S] [--stop TEXT ...] [--threads N]
             [--grammar GBNF | --grammar-file PATH | --json-schema JSON | --json-schema-file PATH]
             [--backend reference|wasm|cuda] [--pre-tokenizer default|llama-bpe|gpt-2] [--parse-special] [--keep-special]
             [--json [--logprobs N]]`,
  chat: `chat       --model LOCATION [--system TEXT] [--max-tokens N (256)] [generate's other sampling flags]
             [--threads N] [--backend reference|wasm|cuda] [--json]   (one user message per stdin line; /exit ends)`,
  logits: `logits     --model LOCATION --prompt-ids 1,2,3 [--backend reference|wasm|cuda] [--activations per-token|q8k] [--json]`,
  embed: `embed      --model LOCATION (--text TEXT ... | --prompt-ids 1,2,3) [--pooling mean|last] [--no-normalize]
             [--backend reference|wasm] [--threads N] [--json]`,
  synth: `synth      (--preset tiny|large|2b-4t | --hidden H --layers L --heads N --kv-heads M --ffn F --vocab V --ctx C)
             --qtype i2_s|tq2_0|tq1_0|f16 [--arch bitnet-b1.58|bitnet-25|bitnet-1.58|bitnet]
             [--activation silu|relu2 (silu: --arch bitnet only)]
             [--embd-type f16|q8_0|q4_0|q6_k] [--embd-std X] --seed S --out FILE.gguf [--json]`,
  perplexity: `perplexity --model LOCATION (--file TEXT_FILE | --text TEXT | --prompt-ids 1,2,3) [--ctx N (512)] [--chunks N]
             [--threads N] [--backend reference|wasm|cuda] [--pre-tokenizer default|llama-bpe|gpt-2] [--json]`,
  inspect: `inspect    FILE [--json]`,
  tokenize: `tokenize   --model LOCATION (--text TEXT | --input STRINGS.json) [--bos] [--parse-special]
             [--pre-tokenizer default|llama-bpe|gpt-2] [--json]`,
  convert: `convert    --model GGUF|HF_DIR --out DIR [--layout i2s|tl1|tl2] [--head keep|f16|q8_0|q6_k|int4]
             [--shard-size 64MiB] [--alignment 64] [--quiet] [--json]`,
  pull: `pull       OWNER/REPO [--file F ...] [--out DIR] [--revision R] [--endpoint URL] [--stall-timeout S] [--quiet] [--json]`,
  cache: `cache      [ls] [--json] | rm OWNER/REPO[@REVISION]|checkpoints|KEY [--json]   (the model cache: $BITNET_CACHE_DIR)`,
  bench: `bench      --model LOCATION [--threads N] [--prompt 128] [--gen 64] [--parallel 1] [--runs 3] [--backend wasm|reference] [--json]`,
  serve: `serve      [--model LOCATION] [--model-id ID] [--host H] [--port P] [--api-key K ...] [--max-concurrent N]
             [--max-queue N] [--max-tokens N] [--body-limit BYTES] [--cors-origin O ...] [--gpu-url URL]
             [--gpu-api-key K] [--edge-max-tokens N] [--memory-budget BYTES] [--backend auto|reference|wasm|cuda]
             [--threads N] [--max-batch N (8; 1 = off)] [--prompt-cache N (4; 0 = off)] [--validate-checksums] [--shutdown-grace SECONDS (10)]
             [--request-timeout SECONDS (30; 0 = none)] [--json]`,
};

const LOCATIONS =
  'LOCATION: a path, file://, https://, s3://bucket/key, r2://BINDING/key, a shard-pack directory / manifest.json,\n' +
  'a safetensors checkpoint directory (converted once into the cache), or hf://owner/repo[@revision][/file]\n' +
  '(the Hugging Face hub, through the cache: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).';

const USAGE = `bitnet <command> [options]       (bitnet <command> --help: that command's options)

Commands:
${Object.values(COMMAND_USAGE)
  .map((u) => `  ${u}`)
  .join('\n')}

${LOCATIONS}
`;

const commandUsage = (cmd: string) => `bitnet ${COMMAND_USAGE[cmd].replace(/^(\S+) +/, '$1 ')}\n\n${LOCATIONS}\n`;

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  generate: async () => (await import('./generate.ts')).generateCommand,
  chat: async () => (await import('./chat.ts')).chatCommand,
  logits: async () => (await import('./logits.ts')).logitsCommand,
  perplexity: async () => (await import('./perplexity.ts')).perplexityCommand,
  embed: async () => (await import('./embed.ts')).embedCommand,
  synth: async () => (await import('./synth.ts')).synthCommand,
  inspect: async () => (await import('./inspect.ts')).inspectCommand,
  tokenize: async () => (await import('./tokenize.ts')).tokenizeCommand,
  serve: async () => (await import('./serve.ts')).serveCommand,
  convert: async () => (await import('./convert.ts')).convertCommand,
  pull: async () => (await import('./pull.ts')).pullCommand,
  bench: async () => (await import('./bench.ts')).benchCommand,
  cache: async () => (await import('./cache.ts')).cacheCommand,
};

function report(e: BitNetError, json: boolean): void {
  if (json) console.error(JSON.stringify({ error: e.toJSON() }));
  else console.error(`error [${e.kind}/${e.code}]: ${e.message}`);
}

/**
 * Exit status of usage errors: an unknown command, an unknown, malformed or missing flag, a missing
 * argument, an extra or malformed one (Config/UNKNOWN_COMMAND, BAD_FLAG, MISSING_FLAG, MISSING_ARGUMENT,
 * UNEXPECTED_ARGUMENT, BAD_TARGET).
 */
const USAGE_EXIT = 2;
const USAGE_CODES = new Set(['BAD_FLAG', 'MISSING_FLAG', 'MISSING_ARGUMENT', 'UNEXPECTED_ARGUMENT', 'BAD_TARGET']);

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return cmd ? 0 : USAGE_EXIT;
  }
  const json = args.includes('--json');
  const load = COMMANDS[cmd];
  if (!load) {
    report(
      BitNetError.Config('UNKNOWN_COMMAND', `unknown command "${cmd}"`, {
        command: cmd,
        commands: Object.keys(COMMANDS),
      }),
      json,
    );
    if (!json) console.error(`\n${USAGE}`);
    return USAGE_EXIT;
  }
  if (wantsHelp(args)) {
    console.log(commandUsage(cmd));
    return 0;
  }
  try {
    return await (await load())(joinNegativeValues(args));
  } catch (e) {
    if (isBitNetError(e)) {
      report(e, json);
      // a malformed, conflicting or missing flag value is a usage error like an unknown flag (README)
      return USAGE_CODES.has(e.code) ? USAGE_EXIT : 1;
    }
    // node:util parseArgs: unknown option, missing value, ambiguous value, unexpected positional.
    if (e instanceof TypeError && (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      const err = BitNetError.Config('BAD_FLAG', e.message.replace(/\s*\n\s*/g, ' '), {
        command: cmd,
        parseError: (e as { code?: string }).code,
      });
      report(err, json);
      if (!json) console.error(`\nusage: ${commandUsage(cmd)}`);
      return USAGE_EXIT;
    }
    throw e;
  }
}
