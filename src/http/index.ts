/**
 * bitnet-edge/http: the runtime-neutral HTTP app (no node:*, cloudflare:* or AWS imports).
 * Adapters (bitnet-edge/node, /cloudflare, /aws-lambda) build `AppDeps` and mount `createApp`.
 */
export { type AppDeps, type CorsOptions, createApp } from './app.ts';
export { ApiKeys, parseKeyList, timingSafeEqualBytes } from './auth.ts';
export {
  type ChatMessage,
  type ChatTemplateOverride,
  chatTemplateResolver,
  messagesToText,
  type RenderedChat,
  renderChat,
} from './chat-template.ts';
export { type BreakerOptions, type BreakerState, CircuitBreaker } from './circuit-breaker.ts';
export { errorBody, errorResponse, statusOf, statusTable, toBitNetError } from './errors.ts';
export type { GpuEndpointOptions } from './gpu.ts';
export { Limiter, type LimiterOptions } from './limiter.ts';
export type { ModelSource, ServedModel } from './model-holder.ts';
export { type Decision, type Route, Router, type RouterOptions } from './router.ts';
