#!/usr/bin/env node
// The `bitnet` command. Runs under Node >= 22 (type stripping); npm scripts and npx put the
// pinned Node 22 from node_modules/.bin first on PATH.
import { keepYoungGenerationSmall } from '../src/adapters/node-heap.ts';
import { main } from '../src/cli/main.ts';

keepYoungGenerationSmall(); // before the model's metadata and tokenizer are built (node-heap.ts)

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e);
    process.exitCode = 1;
  },
);
