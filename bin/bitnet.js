#!/usr/bin/env node
// The `bitnet` command (Node >= 22). Plain JavaScript so that it runs where it is installed:
// Node strips TypeScript types but refuses to for files under node_modules, so an installed
// package runs the compiled lib/ (written by `npm run build`, which `npm pack` runs), while a
// checkout runs the TypeScript sources, never a stale build of them.
const installed = import.meta.url.includes('/node_modules/');
const { runCommandLine } = await import(installed ? '../lib/cli/command-line.js' : '../src/cli/command-line.ts');
runCommandLine();
