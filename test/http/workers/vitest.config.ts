// The Worker tests: they run inside workerd (@cloudflare/vitest-plugin), with the Worker from
// the root wrangler.toml, a local R2 bucket, and test keys. `npm test` runs this project after
// the Node one.
import { fileURLToPath } from 'node:url';
import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { defineConfig } from 'vitest/config';

const root = fileURLToPath(new URL('../../..', import.meta.url));

export default defineConfig({
  root,
  plugins: [
    cloudflareTest({
      // The source entry (wrangler.toml's `main` is the esbuild bundle that deploys).
      main: `${root}/src/adapters/cloudflare.ts`,
      wrangler: { configPath: `${root}/wrangler.toml` },
      miniflare: {
        bindings: { BITNET_API_KEYS: 'worker-test-key', MODEL_ID: 'bitnet-worker-test', MODEL_KEY: 'models/tiny.gguf' },
      },
    }),
  ],
  test: {
    name: 'workerd',
    include: ['test/http/workers/**/*.workerd.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
