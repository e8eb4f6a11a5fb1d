// A bundled Worker inside workerd (Miniflare): its ES module and .wasm modules from one directory,
// an R2 bucket WEIGHTS holding the model under MODEL_KEY, and the given vars.
import { join } from 'node:path';
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';

export async function bundledWorker(
  dir: string,
  script: string,
  wasm: string[],
  bindings: Record<string, string> & { MODEL_KEY: string },
  model: Uint8Array,
): Promise<Miniflare> {
  // Miniflare 5 takes a new option shape; the v4 one (as in its README) goes through its converter.
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      modulesRoot: dir,
      modules: [
        { type: 'ESModule', path: join(dir, script) },
        ...wasm.map((f) => ({ type: 'CompiledWasm' as const, path: join(dir, f) })),
      ],
      compatibilityDate: '2026-08-01',
      compatibilityFlags: ['enable_request_signal'], // as wrangler.toml
      r2Buckets: ['WEIGHTS'],
      bindings,
    }),
  );
  const bucket = (await mf.getR2Bucket('WEIGHTS')) as unknown as { put(k: string, v: Uint8Array): Promise<unknown> };
  await bucket.put(bindings.MODEL_KEY, new Uint8Array(model));
  return mf;
}
