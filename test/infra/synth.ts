// Synthesizes the AWS stack for the infra tests: offline, without Docker, into a temporary cloud
// assembly. The GPU image builds from gpu-lambda/Dockerfile; while that file is not in the
// repository yet, a stand-in build context (one FROM line) takes its place so the rest of the
// stack can still be checked: the GPU image's own wiring is the same either way.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { type BitnetConfig, fromObject, GPU_DOCKERFILE, loadConfig } from '../../infra/lib/config.ts';
import { BitnetStack } from '../../infra/lib/stack.ts';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const hasGpuDockerfile = existsSync(join(repoRoot, GPU_DOCKERFILE));

let standIn: string | undefined;
/** The GPU build context: the repository, or a stand-in while gpu-lambda/Dockerfile is missing. */
export function gpuImageContext(): { directory: string; file: string } | undefined {
  if (hasGpuDockerfile) return undefined;
  if (!standIn) {
    standIn = mkdtempSync(join(tmpdir(), 'bitnet-gpu-context-')); // kept: shared by every synth
    mkdirSync(join(standIn, 'gpu-lambda'));
    writeFileSync(join(standIn, GPU_DOCKERFILE), 'FROM scratch\n');
  }
  return { directory: standIn, file: GPU_DOCKERFILE };
}

export interface Synth {
  stack: BitnetStack;
  template: Template;
  json: { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>; [k: string]: unknown };
  outdir: string;
  /** The asset manifest of the stack (file and Docker image assets). */
  assets: {
    files: Record<string, { source: { path: string; packaging: string } }>;
    dockerImages: Record<string, { source: { directory: string; dockerFile?: string; platform?: string } }>;
  };
}

/**
 * Builds and synthesizes one stack. `bundle: false` skips the CPU function's esbuild step (the
 * template is the same; only the asset's content is missing).
 */
const made: string[] = [];

/** A temporary directory removed by `cleanup()`. */
export function tempDirFor(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Removes the cloud assemblies and other temporary directories made so far (call in afterAll). */
export function cleanup(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function synth(context: Partial<Record<keyof BitnetConfig, unknown>> = {}, o: { bundle?: boolean } = {}): Synth {
  const outdir = tempDirFor('bitnet-cdk-');
  const app = new App({ outdir, context: o.bundle === false ? { 'aws:cdk:bundling-stacks': [] } : {} });
  const stack = new BitnetStack(app, 'bitnet-test', {
    config: loadConfig(fromObject(context)),
    repoRoot,
    gpuImageContext: gpuImageContext(),
  });
  const template = Template.fromStack(stack);
  app.synth();
  const assetsFile = readdirSync(outdir).find((f) => f.endsWith('.assets.json'))!;
  return {
    stack,
    template,
    json: template.toJSON() as Synth['json'],
    outdir,
    assets: JSON.parse(readFileSync(join(outdir, assetsFile), 'utf8')),
  };
}

/** Logical ids of the resources of a type. */
export function idsOf(s: Synth, type: string): string[] {
  return Object.entries(s.json.Resources)
    .filter(([, r]) => r.Type === type)
    .map(([id]) => id);
}

/** The one logical id of a type whose id starts with `prefix`. */
export function idOf(s: Synth, type: string, prefix: string): string {
  const ids = idsOf(s, type).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1)
    throw new Error(`expected one ${type} starting with ${prefix}, got ${ids.join(', ') || 'none'}`);
  return ids[0];
}
