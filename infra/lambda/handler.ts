/**
 * The CPU function's entry point (handler `index.handler`), bundled by the stack's NodejsFunction
 * with the local esbuild: the app of bitnet-edge/aws-lambda behind a streaming Function URL.
 *
 * What it adds to the adapter:
 *   - the kernel builds, embedded as bytes (esbuild's binary loader) and registered with the wasm
 *     loader, as scripts/bundle.ts does for its Lambda bundle;
 *   - API keys from Secrets Manager (./secrets.ts): on the first invocation the secrets named by
 *     `*_SECRET_ARN` are read and set in the environment, and only then is the adapter imported, so
 *     it builds its app from an environment that holds the keys. The dynamic import keeps the
 *     adapter's module (and the app) unevaluated until then; esbuild bundles it lazily.
 * If the secrets cannot be read the request gets a 503 and the next request tries again.
 */

import { registerKernelModules } from '../../src/kernels/wasm/loader.ts';
import relaxed from '../../wasm/build/bitnet-relaxed.wasm';
import simd from '../../wasm/build/bitnet-simd.wasm';
import { resolveSecretEnv } from './secrets.ts';

registerKernelModules({ relaxed, simd });

interface ResponseStream {
  write(chunk: string | Uint8Array): unknown;
  end(): unknown;
}

/** The part of the Node runtimes' `awslambda` global used here. */
interface AwsLambdaGlobal {
  streamifyResponse<H>(handler: H): H;
  HttpResponseStream: {
    from(stream: ResponseStream, meta: { statusCode: number; headers?: Record<string, string> }): ResponseStream;
  };
}

type StreamingHandler = (event: unknown, stream: ResponseStream, context: unknown) => Promise<unknown>;

const runtime = (globalThis as { awslambda?: AwsLambdaGlobal }).awslambda;

let app: Promise<StreamingHandler> | undefined;

async function load(): Promise<StreamingHandler> {
  await resolveSecretEnv(process.env);
  const adapter = await import('../../src/adapters/aws-lambda.ts');
  return adapter.handler as unknown as StreamingHandler;
}

function unavailable(stream: ResponseStream, rt: AwsLambdaGlobal, e: unknown): void {
  console.error('bitnet: start-up failed:', e);
  const out = rt.HttpResponseStream.from(stream, {
    statusCode: 503,
    headers: { 'content-type': 'application/json', 'retry-after': '5' },
  });
  out.write(
    JSON.stringify({
      error: {
        message: 'the server could not start (its secrets are unavailable); try again',
        type: 'server_error',
        param: null,
        code: 'SECRETS_UNAVAILABLE',
      },
    }),
  );
  out.end();
}

async function serve(event: unknown, stream: ResponseStream, context: unknown): Promise<unknown> {
  const rt = runtime!;
  if (!app) {
    app = load();
    app.catch(() => {
      app = undefined;
    });
  }
  let h: StreamingHandler;
  try {
    h = await app;
  } catch (e) {
    unavailable(stream, rt, e);
    return;
  }
  return h(event, stream, context);
}

/** The function's entry point. Outside Lambda (no `awslambda` global), calling it throws. */
export const handler: StreamingHandler = runtime
  ? runtime.streamifyResponse(serve)
  : () => {
      throw new Error('bitnet-edge infra handler: the awslambda global is missing (not in a Lambda Node runtime)');
    };
