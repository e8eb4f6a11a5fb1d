/**
 * The GPU container image: built from gpu-lambda/Dockerfile with the repository root as its build
 * context, or an image already in ECR (`-c gpuImageUri=…`, e.g. one built by CI).
 *
 * Synth never runs Docker: an image asset is only staged (its context copied into cdk.out and
 * listed in the asset manifest); `cdk deploy` (cdk-assets) builds and pushes it. The context
 * leaves out what an image never needs (node_modules, caches, build outputs, the git history); a
 * `.dockerignore` at the repository root, if there is one, is applied as well.
 */
import { IgnoreMode, Stack } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import type { Construct } from 'constructs';

export type GpuImageSource = { kind: 'asset'; directory: string; file: string } | { kind: 'ecr'; uri: string };

export const GPU_CONTEXT_EXCLUDE = [
  '.git',
  '.wrangler',
  '**/node_modules',
  '.cache',
  'dist',
  'coverage',
  'tmp',
  'cdk.out',
  'infra/cdk.out',
  'gpu-lambda/**/build',
  '**/*.gguf',
];

/** Options for DockerImageCode.fromImageAsset / ContainerImage.fromAsset (x86_64: Lambda's accelerators need it). */
export function gpuAssetOptions(file: string) {
  return { file, platform: Platform.LINUX_AMD64, ignoreMode: IgnoreMode.DOCKER, exclude: GPU_CONTEXT_EXCLUDE };
}

/** An ECR image URI as a repository and a tag or digest. */
export function ecrImage(
  scope: Construct,
  id: string,
  uri: string,
): { repository: ecr.IRepository; tagOrDigest: string } {
  const m =
    /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([^:@\s]+)(?::([^@\s]+)|@(sha256:[a-f0-9]{64}))$/.exec(
      uri,
    );
  if (!m) throw new Error(`not an ECR image URI with a tag or digest: ${uri}`);
  const [, account, region, name, tag, digest] = m;
  const repository = ecr.Repository.fromRepositoryAttributes(scope, id, {
    repositoryName: name,
    repositoryArn: `arn:${Stack.of(scope).partition}:ecr:${region}:${account}:repository/${name}`,
  });
  return { repository, tagOrDigest: tag ?? digest };
}
