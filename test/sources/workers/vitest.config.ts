// The R2 source inside workerd (@cloudflare/vitest-plugin): a local R2 bucket bound as MODELS, the
// Cache API, and the Workers memory budget. Run: npx vitest run --config test/sources/workers/vitest.config.ts
import { fileURLToPath } from 'node:url';
import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { defineConfig } from 'vitest/config';

const root = fileURLToPath(new URL('../../..', import.meta.url));

export default defineConfig({
  root,
  plugins: [
    cloudflareTest({
      miniflare: {
        // Must not be later than the workerd build in use (see wrangler.toml).
        compatibilityDate: '2026-08-01',
        r2Buckets: ['MODELS'],
      },
    }),
  ],
  test: {
    name: 'workerd-sources',
    include: ['test/sources/workers/**/*.workerd.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
