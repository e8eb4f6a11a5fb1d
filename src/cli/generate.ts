/**
 * `bitnet generate --model PATH|URL (--prompt TEXT | --prompt-ids 1,2,3) [sampling flags] [--json]`.
 * Text prompts get BOS per the vocabulary; --prompt-ids are used as given. Without --json the
 * text streams to stdout as it is generated.
 */
import { parseArgs } from 'node:util';
import { GenerationConfig } from '../api/generation-config.ts';
import { BitNetError } from '../errors.ts';
import { MAX_TOP_LOGPROBS } from '../generate/logprobs.ts';
import { nativeLogprob, TokenNames } from '../http/logprobs-wire.ts';
import { idList, num, oneOf, preTokenizerFlag, required, str } from './args.ts';
import { openCliModel, resolveCliLocation } from './model-location.ts';
import { SAMPLING_OPTIONS, samplingFromFlags } from './sampling-flags.ts';

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      'prompt-ids': { type: 'string' },
      ...SAMPLING_OPTIONS,
      logprobs: { type: 'string' },
      threads: { type: 'string' },
      backend: { type: 'string' },
      'pre-tokenizer': { type: 'string' },
      'keep-special': { type: 'boolean' },
      'parse-special': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const prompt = str(values, 'prompt');
  const promptIds = str(values, 'prompt-ids');
  if ((prompt === undefined) === (promptIds === undefined)) {
    throw BitNetError.Config('BAD_FLAG', 'give exactly one of --prompt and --prompt-ids', {});
  }
  const topLogprobs = num(values, 'logprobs', { int: true, min: 0, max: MAX_TOP_LOGPROBS });
  if (topLogprobs !== undefined && !values.json)
    throw BitNetError.Config('BAD_FLAG', '--logprobs needs --json (they are reported in its output)', {
      flag: 'logprobs',
    });
  const config = new GenerationConfig({
    ...samplingFromFlags(values, 128),
    logprobs: topLogprobs !== undefined,
    topLogprobs: topLogprobs ?? 0,
    skipSpecialTokens: !values['keep-special'],
  }).validate();
  const backend = oneOf(values, 'backend', ['reference', 'wasm', 'cuda'] as const);
  const threads = num(values, 'threads', { int: true, min: 1 });
  const t0 = performance.now();
  const model = await openCliModel(await resolveCliLocation(location), {
    backend,
    numThreads: threads,
    preTokenizer: preTokenizerFlag(values),
  });
  const loadMs = performance.now() - t0;
  // --parse-special: `<|eot_id|>` in --prompt is that token (llama-cli's -p), for prompts rendered by hand
  const p =
    prompt === undefined
      ? { ids: idList(promptIds!, 'prompt-ids') }
      : values['parse-special']
        ? { text: prompt, parseSpecial: true }
        : prompt;

  if (values.json) {
    const r = await model.generateDetailed(p, config);
    const names = new TokenNames(model.tokenizer);
    const out = {
      text: r.text,
      tokenIds: r.tokenIds,
      promptTokens: r.promptTokens,
      generatedTokens: r.generatedTokens,
      finishReason: r.finishReason,
      timings: {
        loadMs,
        prefillMs: r.stats.prefillMs,
        decodeMs: r.stats.decodeMs,
        totalMs: r.stats.totalMs,
        timeToFirstTokenMs: r.stats.timeToFirstTokenMs,
        tokensPerSecond: r.stats.tokensPerSecond,
        prefillTokensPerSecond: r.stats.prefillTokensPerSecond,
      },
      ...(r.logprobs ? { logprobs: r.logprobs.map((lp) => nativeLogprob(lp, names)) } : {}),
      backend: model.engine.backendName,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return 0;
  }
  if (model.modelInfo().synthetic) console.error('(synthetic model: random weights, the text is noise)');
  for await (const piece of model.generateStream(p, config)) process.stdout.write(piece);
  process.stdout.write('\n');
  const m = model.lastMetrics();
  if (m)
    console.error(
      `${m.generatedTokens} tokens, ${m.tokensPerSecond.toFixed(2)} tok/s, first token ${m.timeToFirstToken.toFixed(0)} ms`,
    );
  return 0;
}
