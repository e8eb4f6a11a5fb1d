// `npm run infra:synth`, as CI runs it: the CDK app synthesized offline, with no AWS account and
// no Docker (CDK_DOCKER points at a program that always fails, so any docker call would break
// the synth). Image assets are only staged; the CPU function is bundled by the local esbuild.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GPU_DOCKERFILE } from '../../infra/lib/config.ts';
import { cleanup, hasGpuDockerfile, repoRoot, tempDirFor } from './synth.ts';

afterAll(cleanup);

function runScript(context?: Record<string, unknown>) {
  const outdir = tempDirFor('bitnet-infra-synth-');
  const script = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).scripts['infra:synth'] as string;
  const env: Record<string, string | undefined> = {
    ...process.env,
    PATH: `${join(repoRoot, 'node_modules/.bin')}:${dirname(process.execPath)}:${process.env.PATH}`,
    CDK_OUTDIR: outdir,
    CDK_DOCKER: '/bin/false',
    // No credentials, no account: the stack is environment-agnostic.
    CDK_DEFAULT_ACCOUNT: undefined,
    CDK_DEFAULT_REGION: undefined,
    AWS_ACCESS_KEY_ID: undefined,
    AWS_PROFILE: undefined,
    CDK_CONTEXT_JSON: context ? JSON.stringify(context) : undefined,
  };
  const r = spawnSync('sh', ['-c', script], { cwd: repoRoot, encoding: 'utf8', env, timeout: 120_000 });
  return { ...r, outdir, out: `${r.stdout}${r.stderr}` };
}

describe('npm run infra:synth', () => {
  it('synthesizes bitnet-edge-dev offline: template, CPU bundle, staged GPU image', () => {
    // Until gpu-lambda/Dockerfile is in the repository, the GPU image comes from an ECR URI instead.
    const r = runScript(
      hasGpuDockerfile ? undefined : { gpuImageUri: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/bitnet-gpu:v1' },
    );
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('synthesized bitnet-edge-dev');
    const template = JSON.parse(readFileSync(join(r.outdir, 'bitnet-edge-dev.template.json'), 'utf8'));
    expect(Object.values(template.Resources as Record<string, { Type: string }>).map((x) => x.Type)).toEqual(
      expect.arrayContaining(['AWS::S3::Bucket', 'AWS::Lambda::Url', 'AWS::Lambda::CapacityProvider']),
    );
    const bundles = readdirSync(r.outdir).filter((d) => existsSync(join(r.outdir, d, 'index.mjs')));
    expect(bundles).toHaveLength(1);
    if (!hasGpuDockerfile) return;
    const assets = JSON.parse(readFileSync(join(r.outdir, 'bitnet-edge-dev.assets.json'), 'utf8'));
    const images = Object.values(
      assets.dockerImages as Record<string, { source: { directory: string; dockerFile: string } }>,
    );
    expect(images.map((i) => i.source.dockerFile)).toEqual([GPU_DOCKERFILE]);
    // The staged build context has what the Dockerfile copies, and none of the heavy folders.
    const context = join(r.outdir, images[0].source.directory);
    for (const f of [
      'package.json',
      'package-lock.json',
      'src',
      'gpu-lambda/server.ts',
      'gpu-lambda/engine',
      GPU_DOCKERFILE,
    ])
      expect(existsSync(join(context, f)), f).toBe(true);
    for (const f of ['node_modules', '.git', '.cache', 'dist', 'gpu-lambda/engine/build'])
      expect(existsSync(join(context, f)), f).toBe(false);
  });
});
