/**
 * createApp(deps): the one HTTP app, built with Hono and mounted by every runtime adapter.
 *
 * Routes
 *   GET  /healthz                 liveness (open)
 *   GET  /readyz                  readiness: the model is loaded (a lazy model loads here) (open)
 *   GET  /metrics                 Prometheus text
 *   GET  /v1/models               the served model
 *   GET  /v1/models/{id}          the served model's object (OpenAI's models.retrieve); 404 for other ids
 *   POST /v1/chat/completions     OpenAI chat, SSE or JSON (prompt: the model's chat template)
 *   POST /v1/completions          OpenAI completions, SSE or JSON
 *   POST /v1/responses            OpenAI Responses (stateless: input carries the conversation), SSE or JSON;
 *        /v1/responses/{id}…      404 RESPONSE_NOT_STORED (no response is kept to retrieve, delete or cancel)
 *   POST /v1/generate             native: GenerationConfig fields, SSE (event: token|done|error) or JSON
 *
 * A known path asked with another method gets 405 with an Allow header (HEAD works wherever GET
 * does); an unknown path gets 404.
 *
 * Request path: route/metrics bookkeeping → CORS → API key (health routes open) → body limit →
 * zod validation → router (edge or GPU) → local engine (limiter slot) or GPU pass-through.
 * Every error becomes a response in errors.ts, and every response carries x-bitnet-route.
 */
import { zValidator } from '@hono/zod-validator';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import type { z } from 'zod';
import { GenerationConfig } from '../api/generation-config.ts';
import { BitNetError, isBitNetError } from '../errors.ts';
import type { GenerationOutcome } from '../generate/engine.ts';
import { ApiKeys } from './auth.ts';
import { type ChatTemplateOverride, chatTemplateResolver } from './chat-template.ts';
import { type EmbeddingsRequest, embeddingInputs, embeddingsBody, embeddingsSchema } from './embeddings.ts';
import { errorBody, errorResponse, toBitNetError } from './errors.ts';
import type { StreamWire } from './gpu-stream.ts';
import { Limiter, type LimiterOptions } from './limiter.ts';
import {
  checkJob,
  collect,
  estimatePromptTokens,
  type Job,
  type LocalDeps,
  type PromptInput,
  type Runs,
  startAll,
  startLocal,
  toEnginePrompt,
} from './local.ts';
import { nativeLogprob, TokenNames } from './logprobs-wire.ts';
import { type AppMetrics, createMetrics } from './metrics.ts';
import { ModelHolder, type ModelSource } from './model-holder.ts';
import {
  type ChoiceOutcome,
  type ChoiceRun,
  chatPrompt,
  choiceJobs,
  completionBody,
  completionChunks,
  completionPrompts,
  echoText,
  newIdentity,
  samplingConfig,
} from './openai.ts';
import { requestIdOf } from './request-id.ts';
import { responsesSchema, responsesToChat } from './responses.ts';
import { newResponsesIdentity, responseBody, responseEvents } from './responses-wire.ts';
import { type Route, Router, type RouterOptions } from './router.ts';
import { chatCompletionSchema, completionSchema, generateSchema, validationError } from './schemas.ts';
import { eventStream, SSE_HEADERS, sseEvent } from './sse.ts';
import { activeTools } from './tool-wire.ts';

export interface CorsOptions {
  /** Allowed origins, or '*' (default: no CORS headers at all). */
  origins: '*' | string[];
  maxAgeSeconds?: number;
}

export interface AppDeps {
  /** The local model, loaded or as a loader run on first use. */
  model: ModelSource;
  /** The id clients send as `model` and see in /v1/models (default: from the model's name, or "bitnet"). */
  modelId?: string;
  /** Weight bytes, when known before loading (lets the router keep a too-large model off the edge). */
  modelBytes?: number;
  /** Bearer API keys; none = no auth (adapters decide whether that is allowed). */
  apiKeys?: readonly string[];
  cors?: CorsOptions;
  /** Request body limit (default 1 MiB). */
  bodyLimitBytes?: number;
  limits?: LimiterOptions;
  /** max_tokens when the request has none (default 256). */
  defaultMaxTokens?: number;
  router?: RouterOptions;
  /**
   * Overrides the model's chat template (a ChatTemplate, a Jinja source, or 'bitnet' | 'chatml' |
   * 'embedded' | 'auto'). Default: the model's own (`tokenizer.chatTemplate`: the GGUF's
   * `tokenizer.chat_template` when it works, else the built-in 2B-4T template for a vocab with
   * `<|eot_id|>`, else ChatML). See chat-template.ts.
   */
  chatTemplate?: ChatTemplateOverride;
  /** fetch for the GPU endpoint (tests, or a runtime's service binding). */
  fetch?: typeof fetch;
  /** Monotonic milliseconds, for latencies and the circuit breaker. */
  now?: () => number;
}

/** Per-request bookkeeping, read by the outer middleware when the response is done. */
class Obs {
  route: Route = 'edge';
  reason: string | undefined;
  fallback: string | undefined;
  /** Set when the body is a stream: metrics are recorded when it ends, not when headers go out. */
  deferred = false;
  status = 0;
  private recorded = false;
  readonly start: number;
  private readonly record: (o: Obs) => void;

  constructor(start: number, record: (o: Obs) => void) {
    this.start = start;
    this.record = record;
  }

  /** A deferred body ended before the status was known (an empty GPU body): recorded with it. */
  endedEarly = false;

  finish(): void {
    if (this.status === 0) {
      this.endedEarly = true;
      return;
    }
    if (this.recorded) return;
    this.recorded = true;
    this.record(this);
  }
}

type AppEnv = { Variables: { obs: Obs; requestId: string } };
type Ctx = Context<AppEnv>;

const OPEN_PATHS = new Set(['/healthz', '/readyz']);
const ENDPOINTS = new Set([
  '/healthz',
  '/readyz',
  '/metrics',
  '/v1/models',
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/responses',
  '/v1/embeddings',
  '/v1/generate',
]);
/** The metrics label of /v1/models/{id}: one series, whatever ids clients ask for. */
const MODEL_PATH = '/v1/models/{id}';

/** Where a GET route and a POST route are, for 405 and its Allow header (HEAD goes with GET). */
const GET_PATHS = ['/healthz', '/readyz', '/metrics', '/v1/models', '/v1/models/:id{.+}'];
const POST_PATHS = ['/v1/chat/completions', '/v1/completions', '/v1/responses', '/v1/embeddings', '/v1/generate'];

/** GenerationConfig's ceiling on maxNewTokens; OpenAI's max_tokens is clamped to it (and to the context). */
const MAX_NEW_TOKENS = 1 << 20;

/**
 * How often a request may have been forwarded between instances (x-bitnet-forwarded carries the
 * count) before this instance refuses to forward it again: edge → GPU is one hop.
 */
const MAX_FORWARD_HOPS = 3;

/** The id served when AppDeps.modelId is not given: the model's name as a slug. */
export function modelIdFromName(name: string): string {
  return (
    name
      .toLowerCase()
      .replace(/[^a-z0-9.]+/g, '-')
      .replace(/^-+|-+$/g, '') || 'bitnet'
  );
}

/**
 * The wire names of one route's fields, so that errors raised below the HTTP layer (the engine's
 * prompt checks, GenerationConfig's validation) name the field the client sent (`param`).
 */
/** How a generation route answers: a stream or not, and its stream's format (gpu-stream.ts). */
interface Wire {
  stream: boolean;
  format: StreamWire;
}

interface WireNames {
  /** The field holding the prompt: messages, prompt or promptIds. */
  prompt: string;
  /** A GenerationConfig field → the request's field (default: the same name). */
  field?: Readonly<Record<string, string>>;
}

/** Engine errors that are about the prompt. */
const PROMPT_ERRORS = new Set(['PROMPT_TOO_LONG', 'BAD_TOKEN', 'EMPTY_PROMPT', 'KV_SEQ_TOO_LONG', 'TOKENIZER_MISSING']);

/** Errors about a grammar or a schema → the GenerationConfig field they are about. */
const CONSTRAINT_FIELDS: Readonly<Record<string, string>> = {
  INVALID_GRAMMAR: 'grammar',
  GRAMMAR_TOO_AMBIGUOUS: 'grammar',
  GRAMMAR_TOO_COMPLEX: 'grammar',
  INVALID_JSON_SCHEMA: 'jsonSchema',
  UNSUPPORTED_JSON_SCHEMA: 'jsonSchema',
};

export { requestIdOf } from './request-id.ts';

/** `e` with `details.param` set to the wire field it is about, when it names none yet. */
function withParam(e: unknown, names: WireNames): unknown {
  if (!isBitNetError(e) || typeof e.details.param === 'string') return e;
  let param: string | undefined;
  if (PROMPT_ERRORS.has(e.code)) param = names.prompt;
  else if (e.code in CONSTRAINT_FIELDS) param = names.field?.[CONSTRAINT_FIELDS[e.code]] ?? CONSTRAINT_FIELDS[e.code];
  else if (
    (e.code === 'INVALID_GENERATION_CONFIG' || e.code.startsWith('SAMPLER_')) &&
    typeof e.details.field === 'string'
  )
    param = names.field?.[e.details.field] ?? e.details.field;
  if (param === undefined) return e;
  return new BitNetError(e.kind, e.code, e.message, { ...e.details, param }, (e as Error).cause);
}

/** OpenAI field names of the GenerationConfig fields samplingConfig fills. */
const openAIFields = (maxTokensField: string): Record<string, string> => ({
  maxNewTokens: maxTokensField,
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  logitBias: 'logit_bias',
  stopSequences: 'stop',
  seed: 'seed',
  logprobs: 'logprobs',
  topLogprobs: 'top_logprobs',
  responseFormat: 'response_format',
  jsonSchema: 'response_format.json_schema.schema',
  grammar: 'grammar',
});

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const now = deps.now ?? (() => performance.now());
  const limiter = new Limiter(deps.limits);
  const metrics: AppMetrics = createMetrics({
    queueDepth: () => limiter.queued,
    active: () => limiter.active,
    decodeStats: () => holder.current()?.engine.decodeStats,
  });
  let modelId = deps.modelId ?? 'bitnet';
  const holder = new ModelHolder(deps.model, (m) => {
    const info = m.modelInfo();
    if (deps.modelId === undefined && typeof deps.model !== 'function') modelId = modelIdFromName(info.name);
    metrics.info.set(1, { model: modelId, backend: m.engine.backendName, synthetic: String(info.synthetic) });
  });
  const router = new Router(deps.router ?? {}, now, deps.fetch, {
    onBreaker: (s) => {
      metrics.breakerState.set(s === 'closed' ? 0 : s === 'half-open' ? 1 : 2);
      metrics.breakerTransitions.inc({ to: s });
    },
    onProbe: (ok) => metrics.probes.inc({ result: ok ? 'ok' : 'failed' }),
  });
  metrics.breakerState.set(0);
  const keys = new ApiKeys(deps.apiKeys ?? []);
  const templateFor = chatTemplateResolver(deps.chatTemplate);
  const defaultMaxTokens = deps.defaultMaxTokens ?? 256;
  const local: LocalDeps = { limiter, templateFor, holder, metrics, now };

  const app = new Hono<AppEnv>();

  // Bookkeeping first, so every response (errors and 401s included) gets the route headers.
  app.use('*', async (c, next) => {
    const obs = new Obs(now(), (o) => {
      const endpoint = ENDPOINTS.has(c.req.path)
        ? c.req.path
        : c.req.path.startsWith('/v1/models/')
          ? MODEL_PATH
          : 'other';
      metrics.requests.inc({ endpoint, status: String(o.status), route: o.route });
      metrics.duration.observe((now() - o.start) / 1000, { endpoint, route: o.route });
    });
    c.set('obs', obs);
    // OpenAI's request id (the SDK's `_request_id`): the client's own when it sent a sane one; a
    // request forwarded to the GPU carries the same id
    const requestId = requestIdOf(c.req.header('x-request-id'));
    c.set('requestId', requestId);
    await next();
    c.res.headers.set('x-request-id', requestId);
    c.res.headers.set('x-bitnet-route', obs.route);
    if (obs.reason) c.res.headers.set('x-bitnet-route-reason', obs.reason);
    if (obs.fallback) c.res.headers.set('x-bitnet-fallback', obs.fallback);
    obs.status = c.res.status;
    if (!obs.deferred || obs.endedEarly) obs.finish();
  });

  if (deps.cors) {
    app.use(
      '*',
      cors({
        origin: deps.cors.origins,
        // No allowHeaders list: the preflight's Access-Control-Request-Headers are echoed (with
        // Vary). Clients send headers no fixed list keeps up with (the OpenAI SDK's x-stainless-*,
        // openai-organization, openai-project, …), and a header missing from the answer fails
        // the whole preflight. Allowing them grants nothing: requests are authorized by the Bearer
        // key, never by cookies (no credentials mode), and the origin check stays as configured.
        allowMethods: ['GET', 'POST', 'OPTIONS'],
        exposeHeaders: [
          'x-request-id',
          'x-bitnet-route',
          'x-bitnet-route-reason',
          'x-bitnet-fallback',
          'retry-after',
          'allow',
        ],
        maxAge: deps.cors.maxAgeSeconds ?? 600,
      }),
    );
  }

  app.use('*', async (c, next) => {
    if (keys.enabled && !OPEN_PATHS.has(c.req.path)) await keys.check(c.req.header('authorization'));
    await next();
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  app.get('/readyz', async (c) => {
    if (!router.fitsMemory(deps.modelBytes)) {
      // This instance never runs the model: it is ready when the GPU endpoint is usable.
      const ok = router.gpu !== undefined && router.breaker.state !== 'open';
      return c.json({ status: ok ? 'ready' : 'unavailable', local: false, gpu: router.breaker.state }, ok ? 200 : 503);
    }
    const m = await holder.get();
    return c.json({
      status: 'ready',
      model: modelId,
      backend: m.engine.backendName,
      threads: m.engine.numThreads ?? 1,
      gpu: router.gpu ? router.breaker.state : 'none',
    });
  });

  app.get('/metrics', (c) =>
    c.body(metrics.registry.render(), 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }),
  );

  /** The served model as an OpenAI model object (extended with what is known once it is loaded). */
  const modelObject = () => {
    const m = holder.current();
    const info = m?.modelInfo();
    return {
      id: modelId,
      object: 'model',
      created: 0,
      owned_by: 'bitnet-edge',
      ...(info && {
        name: info.name,
        synthetic: info.synthetic,
        ...(info.synthetic && {
          description: 'synthetic model with random weights: the text it generates is noise',
        }),
        architecture: info.architecture,
        quantization: info.quantization.type,
        context_length: info.contextLength,
        backend: m?.engine.backendName,
      }),
    };
  };
  const unknownModel = (requested: string) =>
    BitNetError.Model('MODEL_NOT_FOUND', `model "${requested}" is not served here (this server serves "${modelId}")`, {
      param: 'model',
    });

  app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelObject()] }));

  // OpenAI's models.retrieve. Ids may hold slashes ("owner/name"), sent raw or as %2F.
  app.get('/v1/models/:id{.+}', (c) => {
    const id = c.req.param('id');
    if (id !== modelId) throw unknownModel(id);
    return c.json(modelObject());
  });

  const limit = bodyLimit({
    maxSize: deps.bodyLimitBytes ?? 1 << 20,
    onError: () => {
      throw BitNetError.Config('PAYLOAD_TOO_LARGE', `the request body is over ${deps.bodyLimitBytes ?? 1 << 20} bytes`);
    },
  });
  const json = async (c: Ctx, next: () => Promise<void>) => {
    const type = c.req.header('content-type') ?? '';
    if (!/^application\/(.+\+)?json\b/i.test(type)) {
      throw BitNetError.Config(
        'UNSUPPORTED_MEDIA_TYPE',
        'send the request body as JSON with Content-Type: application/json',
      );
    }
    await next();
  };
  const validate = <S extends z.ZodType>(schema: S) =>
    zValidator('json', schema, (r) => {
      if (!r.success) throw validationError(r.error);
    });

  /**
   * max_tokens as the local engine takes it: at most GenerationConfig's ceiling and the context
   * length. Generation stops at the context anyway, so this changes no answer; it lets any
   * positive max_tokens through (OpenAI clients send large ones) instead of a 400 about
   * maxNewTokens, a field the client never sent.
   */
  const clampMaxTokens = (n: number): number =>
    Math.min(n, MAX_NEW_TOKENS, holder.current()?.modelInfo().contextLength ?? MAX_NEW_TOKENS);

  /** Edge or GPU for one generation request, then the local runs or the pass-through. */
  async function serve(
    c: Ctx,
    requestedModel: string | undefined,
    jobs: readonly Job[],
    names: WireNames,
    wire: Wire,
    respond: (runs: Runs, obs: Obs) => Promise<Response> | Response,
  ): Promise<Response> {
    try {
      return await route(c, requestedModel, jobs, wire, respond);
    } catch (e) {
      throw withParam(e, names);
    }
  }

  async function route(
    c: Ctx,
    requestedModel: string | undefined,
    jobs: readonly Job[],
    wire: Wire,
    respond: (runs: Runs, obs: Obs) => Promise<Response> | Response,
  ): Promise<Response> {
    const obs = c.get('obs');
    if (requestedModel !== undefined && requestedModel !== modelId) throw unknownModel(requestedModel);
    const m = holder.current();
    const ctx = m?.modelInfo().contextLength;
    const sizes = jobs.map((j) => ({
      prompt: estimatePromptTokens(j.prompt, m?.tokenizer, templateFor),
      maxNew: new GenerationConfig(j.config).maxNewTokens,
    }));
    // each generation (n, several prompts) counted as the engine will run it: max_tokens only up to
    // what the context leaves after its prompt; the request's work is their sum
    const effective = sizes.map((z) =>
      ctx === undefined ? z.prompt + z.maxNew : z.prompt + Math.min(z.maxNew, Math.max(0, ctx - z.prompt)),
    );
    // x-bitnet-forwarded: the number of hops so far (older instances send "1").
    const fwd = c.req.header('x-bitnet-forwarded');
    const hops = fwd === undefined ? 0 : /^\d{1,6}$/.test(fwd.trim()) ? Math.max(1, Number(fwd.trim())) : 1;
    const forwarded = hops > 0 && (await router.trustsForwarded(c.req.header('authorization')));
    const decision = await router
      .decide({
        work: effective.reduce((a, b) => a + b, 0),
        largestJob: Math.max(...effective),
        modelBytes: deps.modelBytes,
        contextLength: ctx,
        forwarded,
      })
      .catch((e: unknown) => {
        // too large for the edge while the GPU's circuit is open: the GPU's request, refused
        if (isBitNetError(e) && e.code === 'GPU_UNAVAILABLE') {
          obs.route = 'gpu';
          obs.reason = 'gpu-unavailable';
        }
        throw e;
      });
    metrics.routes.inc({ route: decision.route, reason: decision.reason });
    obs.route = decision.route;
    obs.reason = decision.reason;
    const signal = c.req.raw.signal;

    if (decision.route === 'gpu' && router.gpu) {
      if (hops >= MAX_FORWARD_HOPS) {
        throw BitNetError.Config(
          'FORWARD_LOOP',
          `this request has been forwarded ${hops} times between bitnet-edge instances; not forwarding it again (check each instance's GPU URL)`,
          { hops },
        );
      }
      const hooks = {
        onMidStreamFailure: () => {
          router.breaker.failure();
          metrics.gpuFailures.inc({ phase: 'mid_stream' });
        },
        onEnd: () => obs.finish(),
      };
      const r = await router.gpu.forward(
        {
          path: c.req.path,
          body: await c.req.text(),
          requestId: c.get('requestId'),
          hops: hops + 1,
          stream: wire.stream,
          wire: wire.format,
          accept: c.req.header('accept'),
        },
        signal,
        hooks,
      );
      if (r.ok) {
        router.breaker.success();
        obs.deferred = true; // recorded when the passed-through body ends
        return r.response;
      }
      if (r.countsAsFailure) router.breaker.failure();
      metrics.gpuFailures.inc({ phase: 'before_first_byte' });
      obs.fallback = `gpu-${r.phase}`;
      if (!decision.localCapable) {
        metrics.fallbacks.inc({ outcome: 'unavailable' });
        // until the breaker lets the GPU be tried again (1 s while it is still closed), or the
        // GPU's own Retry-After when it asked for longer
        const retryAfterSeconds = Math.max(router.retryAfterSeconds(), r.retryAfterSeconds ?? 0);
        const message = `${r.error.message}; the request is too large for the edge`;
        throw r.phase === 'timeout'
          ? BitNetError.Timeout('GPU_TIMEOUT', message, { phase: r.phase, ...r.error.details })
          : BitNetError.Io('GPU_UNAVAILABLE', message, { phase: r.phase, retryAfterSeconds });
      }
      metrics.fallbacks.inc({ outcome: 'edge' });
      obs.route = 'edge';
    }
    // The first run starts now, so that what can fail early (the prompt, the model) sets the status;
    // the others start one after another as the response consumes them, each with its own slot
    // (or, where the backend batches concurrent generations, all at once in one slot: startAll).
    // several: every one is checked before any runs (a bad prompt among them fails the request at once)
    if (jobs.length > 1) for (const j of jobs) await checkJob(local, j);
    if (jobs.length > 1 && (await holder.get()).engine.runsGenerationsTogether) {
      // a backend that batches concurrent generations (cuda): all of them start now and compute
      // together; the response still reads them in order
      const all = await startAll(local, jobs, signal, obs.start);
      const cancelAll = async () => {
        await Promise.all(all.map((r) => r.cancel()));
      };
      try {
        return await respond({ jobs, tokenizer: all[0].tokenizer, run: async (i) => all[i], cancel: cancelAll }, obs);
      } catch (e) {
        // an answer that failed (a choice's error, not streamed) stops the runs still going
        await cancelAll();
        throw e;
      }
    }
    const first = await startLocal(local, jobs[0].prompt, jobs[0].config, signal, obs.start);
    let current = first;
    const runs: Runs = {
      jobs,
      tokenizer: first.tokenizer,
      async run(i) {
        if (i === 0) return first;
        current = await startLocal(local, jobs[i].prompt, jobs[i].config, signal, obs.start);
        return current;
      },
      cancel: () => current.cancel(),
    };
    return respond(runs, obs);
  }

  /** A streaming response over local runs; metrics are recorded when the stream ends. */
  const streamResponse = (runs: Runs, obs: Obs, chunks: AsyncGenerator<string, void>) => {
    obs.deferred = true;
    const body = eventStream(chunks, () => {
      void runs.cancel();
      obs.finish();
    });
    return new Response(body, { status: 200, headers: SSE_HEADERS });
  };

  /** The OpenAI routes' choices, one run after another (index i is the i-th job). */
  async function* choiceRuns(runs: Runs, echo: boolean): AsyncGenerator<ChoiceRun, void> {
    for (let i = 0; i < runs.jobs.length; i++) {
      const run = await runs.run(i);
      const job = runs.jobs[i];
      yield {
        index: i,
        events: run.events,
        countsPrompt: job.firstOfPrompt,
        ...(echo ? { echo: { text: echoText(job.prompt, run.tokenizer) } } : {}),
      };
    }
  }

  async function collectChoices(runs: Runs, echo: boolean): Promise<ChoiceOutcome[]> {
    const out: ChoiceOutcome[] = [];
    for await (const ch of choiceRuns(runs, echo)) {
      let r = await ch.events.next();
      while (!r.done) r = await ch.events.next();
      out.push({ index: ch.index, outcome: r.value, countsPrompt: ch.countsPrompt, echo: ch.echo });
    }
    return out;
  }

  app.post('/v1/chat/completions', limit, json, validate(chatCompletionSchema), async (c) => {
    const b = c.req.valid('json') as z.infer<typeof chatCompletionSchema>;
    const maxTokens = clampMaxTokens(b.max_completion_tokens ?? b.max_tokens ?? defaultMaxTokens);
    const names = {
      prompt: 'messages',
      field: openAIFields(b.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens'),
    };
    const jobs = choiceJobs([chatPrompt(b)], samplingConfig(b, maxTokens), b.n ?? 1);
    const tools = activeTools(b) !== undefined;
    return serve(c, b.model, jobs, names, { stream: b.stream === true, format: 'openai' }, async (runs, obs) => {
      const ident = newIdentity('chat', modelId);
      const tokNames = new TokenNames(runs.tokenizer);
      if (b.stream)
        return streamResponse(
          runs,
          obs,
          completionChunks(
            'chat',
            ident,
            choiceRuns(runs, false),
            b.stream_options?.include_usage === true,
            tokNames,
            b.logprobs === true,
            tools,
          ),
        );
      return c.json(completionBody('chat', ident, await collectChoices(runs, false), tokNames, tools));
    });
  });

  app.post('/v1/completions', limit, json, validate(completionSchema), async (c) => {
    const b = c.req.valid('json') as z.infer<typeof completionSchema>;
    const jobs = choiceJobs(
      completionPrompts(b),
      samplingConfig(b, clampMaxTokens(b.max_tokens ?? defaultMaxTokens)),
      b.n ?? 1,
    );
    const echo = b.echo === true;
    return serve(
      c,
      b.model,
      jobs,
      { prompt: 'prompt', field: { ...openAIFields('max_tokens'), topLogprobs: 'logprobs' } },
      { stream: b.stream === true, format: 'openai' },
      async (runs, obs) => {
        const ident = newIdentity('completion', modelId);
        const tokNames = new TokenNames(runs.tokenizer);
        if (b.stream)
          return streamResponse(
            runs,
            obs,
            completionChunks(
              'completion',
              ident,
              choiceRuns(runs, echo),
              b.stream_options?.include_usage === true,
              tokNames,
              b.logprobs != null,
            ),
          );
        return c.json(completionBody('completion', ident, await collectChoices(runs, echo), tokNames));
      },
    );
  });

  app.post('/v1/responses', limit, json, validate(responsesSchema), async (c) => {
    const b = c.req.valid('json') as z.output<typeof responsesSchema>;
    // the same conversation as a chat request: same template, tools, constraints and sampling
    const chat = responsesToChat(b);
    const maxTokens = clampMaxTokens(b.max_output_tokens ?? defaultMaxTokens);
    const names = {
      prompt: 'input',
      field: {
        ...openAIFields('max_output_tokens'),
        responseFormat: 'text.format',
        jsonSchema: 'text.format.schema',
        topLogprobs: 'top_logprobs',
      },
    };
    const tools = activeTools(chat) !== undefined;
    return serve(
      c,
      b.model,
      choiceJobs([chatPrompt(chat)], samplingConfig(chat, maxTokens), 1),
      names,
      { stream: b.stream === true, format: 'responses' },
      async (runs, obs) => {
        const ident = newResponsesIdentity(modelId);
        const run = await runs.run(0);
        const tokNames = new TokenNames(runs.tokenizer);
        if (b.stream) return streamResponse(runs, obs, responseEvents(ident, b, run.events, tools, tokNames));
        return c.json(responseBody(ident, b, await collect(run), tools, tokNames));
      },
    );
  });

  // Embeddings run on the edge only: the cuda backend returns no hidden states.
  app.post('/v1/embeddings', limit, json, validate(embeddingsSchema), async (c) => {
    const b = c.req.valid('json') as EmbeddingsRequest;
    if (b.model !== undefined && b.model !== modelId) throw unknownModel(b.model);
    const signal = c.req.raw.signal;
    const m = await holder.get();
    const embed = m.engine.embed;
    if (!embed) {
      throw BitNetError.Config('EMBEDDINGS_UNAVAILABLE', 'this server computes no embeddings with its model', {
        backend: m.engine.backendName,
      });
    }
    const width = m.modelInfo().hiddenSize;
    if (b.dimensions !== undefined && b.dimensions !== width) {
      throw BitNetError.Config(
        'INVALID_EMBED_OPTIONS',
        `dimensions must be this model's hidden size, ${width} (its embeddings are not trained to be cut shorter)`,
        { param: 'dimensions', dimensions: b.dimensions, hiddenSize: width },
      );
    }
    // every input checked before any runs: a bad one fails the request at once
    const prompts = embeddingInputs(b.input).map((p) => toEnginePrompt(p, m.tokenizer, templateFor).prompt);
    const named = (e: unknown, i: number) => withParam(e, { prompt: prompts.length > 1 ? `input[${i}]` : 'input' });
    for (const [i, p] of prompts.entries()) {
      try {
        m.engine.checkEmbed?.(p, { pooling: b.pooling });
      } catch (e) {
        throw named(e, i);
      }
    }
    const release = await limiter.acquire(signal);
    const vectors: Float32Array[] = [];
    let tokens = 0;
    try {
      for (const [i, p] of prompts.entries()) {
        const r = await embed
          .call(m.engine, p, { pooling: b.pooling, normalize: b.normalize, signal })
          .catch((e: unknown) => Promise.reject(named(e, i)));
        vectors.push(r.embedding);
        tokens += r.promptTokens;
      }
    } finally {
      release();
    }
    metrics.tokens.inc({ type: 'prompt' }, tokens);
    return c.json(embeddingsBody(modelId, vectors, tokens, b.encoding_format));
  });

  app.post('/v1/generate', limit, json, validate(generateSchema), async (c) => {
    const { model, prompt, promptIds, stream, ...config } = c.req.valid('json') as z.infer<typeof generateSchema>;
    const input: PromptInput =
      prompt !== undefined ? { kind: 'text', text: prompt } : { kind: 'ids', ids: promptIds ?? [] };
    const names = { prompt: prompt !== undefined ? 'prompt' : 'promptIds' };
    const wire = { stream: stream === true, format: 'native' } as const;
    return serve(c, model, choiceJobs([input], config, 1), names, wire, async (runs, obs) => {
      const run = await runs.run(0);
      const tokNames = new TokenNames(runs.tokenizer);
      if (stream) return streamResponse(runs, obs, nativeChunks(run.events, modelId, tokNames));
      return c.json(nativeOutcome(await collect(run), modelId, tokNames));
    });
  });

  // OpenAI's stored-response routes (retrieve, delete, cancel, input_items): this server keeps none.
  app.all('/v1/responses/:rest{.+}', (c) => {
    throw BitNetError.Config(
      'RESPONSE_NOT_STORED',
      `this server keeps no responses (${c.req.method} ${c.req.path}); send the whole conversation in input`,
    );
  });

  // A known path with another method: 405 and Allow, registered after the routes so that it only
  // answers what they did not (HEAD is dispatched to the GET routes by Hono).
  const notAllowed = (allow: string[]) => (c: Ctx) =>
    errorResponse(
      BitNetError.Config('METHOD_NOT_ALLOWED', `${c.req.method} is not allowed on ${c.req.path}; use ${allow[0]}`),
      { allow: [...allow, ...(deps.cors ? ['OPTIONS'] : [])].join(', ') },
    );
  for (const p of GET_PATHS) app.all(p, notAllowed(['GET', 'HEAD']));
  for (const p of POST_PATHS) app.all(p, notAllowed(['POST']));

  app.notFound(() => errorResponse(BitNetError.Config('NOT_FOUND', 'no such route')));
  app.onError((err) => errorResponse(err));
  return app;
}

/** The native body (and the stream's done event). */
function nativeOutcome(o: GenerationOutcome, model: string, names: TokenNames) {
  return {
    model,
    text: o.text,
    tokenIds: o.tokenIds,
    promptTokens: o.promptTokens,
    generatedTokens: o.generatedTokens,
    cachedPromptTokens: o.cachedPromptTokens,
    finishReason: o.finishReason,
    timings: o.timings,
    ...(o.logprobs ? { logprobs: o.logprobs.map((lp) => nativeLogprob(lp, names)) } : {}),
    ...(o.promptLogprobs ? { promptLogprobs: o.promptLogprobs.map((lp) => nativeLogprob(lp, names)) } : {}),
  };
}

/**
 * The native stream:
 *   event: token  {id, text[, logprob]}  one per generated token, in order (the ids are the
 *                              outcome's tokenIds); text may be "" while it is held back (a possible
 *                              stop match, an incomplete UTF-8 sequence); logprob with `logprobs`
 *   event: token  {text}       at most once, last: held-back text released after the last token.
 *                              It is no token (the engine's id −1), so it has no id; it stays a
 *                              token event so that clients joining the token events' texts get
 *                              the whole text, as they always did
 *   event: done   {model, text, tokenIds, promptTokens, generatedTokens, cachedPromptTokens, finishReason, timings[, logprobs]
 *                              [, promptLogprobs]}
 *   event: error  {error}      instead of done, when the generation fails after the stream began
 * So the token events with an id are exactly tokenIds, and all token texts joined are done.text.
 */
async function* nativeChunks(
  events: Awaited<ReturnType<typeof startLocal>>['events'],
  model: string,
  names: TokenNames,
): AsyncGenerator<string, void> {
  try {
    let r = await events.next();
    while (!r.done) {
      const { id, text, logprob } = r.value;
      yield sseEvent(
        'token',
        id < 0 ? { text } : logprob ? { id, text, logprob: nativeLogprob(logprob, names) } : { id, text },
      );
      r = await events.next();
    }
    yield sseEvent('done', nativeOutcome(r.value, model, names));
  } catch (e) {
    const err = toBitNetError(e);
    if (err.code !== 'CANCELLED') yield sseEvent('error', errorBody(err));
  } finally {
    await events.return(undefined as never).catch(() => {});
  }
}
