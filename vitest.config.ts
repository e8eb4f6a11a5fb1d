import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests import `bitnet-edge` by its name and must see the sources, never a build in lib/: the
  // package's "bitnet-edge-source" export condition, ahead of Vite's own for Node (ssr) modules.
  // Without 'module', as vitest's default: these also go to Node as --conditions, and 'module'
  // sends @aws-sdk/* to ESM builds that Node cannot load.
  ssr: {
    resolve: { conditions: ['bitnet-edge-source', ...defaultServerConditions.filter((c) => c !== 'module')] },
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Model-level tests run real forward passes on a 2-core CI machine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
