import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests import `bitnet-edge` by its name and must see the sources, never a build in lib/: the
  // package's "bitnet-edge-source" export condition, ahead of Vite's own for Node (ssr) modules.
  ssr: { resolve: { conditions: ['bitnet-edge-source', ...defaultServerConditions] } },
  test: {
    include: ['test/**/*.test.ts'],
    // Model-level tests run real forward passes on a 2-core CI machine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
