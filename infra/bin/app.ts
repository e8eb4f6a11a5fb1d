/**
 * The CDK app: `npm run infra:synth` (offline: no AWS account, no Docker), or through the CDK CLI
 * from infra/: `npx cdk deploy -c stage=prod` (see docs/deploy.md).
 *
 * Settings come from the context (infra/cdk.json, `-c key=value`; infra/lib/config.ts lists them).
 * The stack is environment-agnostic unless CDK_DEFAULT_ACCOUNT/REGION are set (the CLI sets them
 * from the credentials it deploys with), so synth needs none.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App } from 'aws-cdk-lib';
import { loadConfig } from '../lib/config.ts';
import { BitnetStack } from '../lib/stack.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Builds the app; `outdir` defaults to $CDK_OUTDIR (set by the CLI) or infra/cdk.out. */
export function buildApp(opts: { outdir?: string; context?: Record<string, unknown> } = {}): App {
  const app = new App({
    outdir: opts.outdir ?? process.env.CDK_OUTDIR ?? join(repoRoot, 'infra/cdk.out'),
    context: opts.context,
  });
  const config = loadConfig((k) => app.node.tryGetContext(k));
  const account = process.env.CDK_DEFAULT_ACCOUNT;
  const region = process.env.CDK_DEFAULT_REGION;
  new BitnetStack(app, `bitnet-edge-${config.stage}`, {
    config,
    repoRoot,
    env: account && region ? { account, region } : undefined,
    description: `bitnet-edge (${config.stage}): shard bucket, CPU Lambda (WASM), GPU endpoint (${config.gpu})`,
  });
  return app;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const assembly = buildApp().synth();
  for (const s of assembly.stacks) console.error(`synthesized ${s.stackName}: ${s.templateFullPath}`);
}
