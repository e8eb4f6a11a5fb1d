/**
 * `bitnet chat --model LOCATION [--system TEXT] [sampling flags, as generate's] [--json]`: a conversation on the
 * terminal. Each line on stdin is a user message (an empty line is skipped; `/exit` or the end of
 * input ends the chat); the model's own chat template renders the whole conversation each turn, as
 * the HTTP chat route does, and the prompt cache makes a turn prefill only what is new since the
 * last one. The reply streams to stdout; a stats line goes to stderr. With --json, one object per
 * turn on stdout instead: {turn, reply, promptTokens, cachedPromptTokens, generatedTokens,
 * finishReason, timings}.
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { GenerationConfig } from '../api/generation-config.ts';
import { BitNetError } from '../errors.ts';
import { type ChatMessage, chatTemplateResolver, renderChat } from '../http/chat-template.ts';
import { withStopStrings } from '../http/local.ts';
import { num, oneOf, required, str } from './args.ts';
import { openCliModel, resolveCliLocation } from './model-location.ts';
import { SAMPLING_OPTIONS, samplingFromFlags } from './sampling-flags.ts';

export async function chatCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      system: { type: 'string' },
      ...SAMPLING_OPTIONS,
      threads: { type: 'string' },
      backend: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const location = required(str(values, 'model'), 'model');
  const config = new GenerationConfig(samplingFromFlags(values, 256)).validate();
  const backend = oneOf(values, 'backend', ['reference', 'wasm', 'cuda'] as const);
  const model = await openCliModel(await resolveCliLocation(location, { quiet: values.json === true }), {
    backend,
    numThreads: num(values, 'threads', { int: true, min: 1 }),
  });
  const tok = model.tokenizer;
  if (!tok)
    throw BitNetError.Tokenization(
      'TOKENIZER_MISSING',
      'this model has no tokenizer, so it cannot chat; use `bitnet generate --prompt-ids` instead',
    );
  const template = chatTemplateResolver()(tok);
  const interactive = process.stdin.isTTY === true && !values.json;
  if (interactive) {
    if (model.modelInfo().synthetic) console.error('(synthetic model: random weights, the replies are noise)');
    console.error('(one message per line; /exit or Ctrl-D ends the chat)');
  }
  const messages: ChatMessage[] = [];
  const system = str(values, 'system');
  if (system) messages.push({ role: 'system', content: system });

  const lines = createInterface({ input: process.stdin, terminal: interactive });
  if (interactive) process.stdout.write('> ');
  let turn = 0;
  for await (const raw of lines) {
    const line = raw.trim();
    if (line === '/exit') break;
    if (line === '') {
      if (interactive) process.stdout.write('> ');
      continue;
    }
    messages.push({ role: 'user', content: line });
    const rendered = renderChat(tok, template, messages);
    const events = model.engine.stream({ ids: rendered.ids }, withStopStrings(config.toJSON(), rendered.stopStrings));
    let r = await events.next();
    while (!r.done) {
      if (!values.json && r.value.text) process.stdout.write(r.value.text);
      r = await events.next();
    }
    const o = r.value;
    messages.push({ role: 'assistant', content: o.text });
    turn++;
    if (values.json) {
      const out = {
        turn,
        reply: o.text,
        promptTokens: o.promptTokens,
        cachedPromptTokens: o.cachedPromptTokens,
        generatedTokens: o.generatedTokens,
        finishReason: o.finishReason,
        timings: o.timings,
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      process.stdout.write('\n');
      console.error(
        `[${o.generatedTokens} tokens, ${((o.generatedTokens * 1000) / Math.max(o.timings.totalMs, 1e-9)).toFixed(2)} tok/s; ` +
          `prompt ${o.promptTokens} tokens, ${o.cachedPromptTokens} from the prompt cache; first token ${o.timings.firstTokenMs.toFixed(0)} ms]`,
      );
      if (interactive) process.stdout.write('> ');
    }
  }
  lines.close();
  return 0;
}
