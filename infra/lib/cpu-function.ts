/**
 * The CPU function: Node 22, the WASM engine, up to 10 GB of memory, its shard pack read from S3 by
 * range (with a block cache in /tmp), served through a Function URL in RESPONSE_STREAM mode.
 *
 * Code: infra/lambda/handler.ts bundled by NodejsFunction with the project's own esbuild (never
 * Docker: forceDockerBundling is off and esbuild is a dev dependency). The bundle carries the AWS
 * SDK it was tested with (no externals) and the kernel builds as bytes.
 *
 * Keys: `BITNET_API_KEYS_SECRET_ARN` / `BITNET_GPU_API_KEY_SECRET_ARN` name Secrets Manager secrets
 * that the handler reads through the Parameters and Secrets extension on its first request; the
 * key values never appear in the template or the function's configuration.
 */
import { join } from 'node:path';
import { Duration, type RemovalPolicy, Size } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface CpuFunctionProps {
  /** Repository root: the bundle's project root (package-lock.json, src/, wasm/build/). */
  repoRoot: string;
  architecture: 'x86_64' | 'arm64';
  memoryMB: number;
  /** /tmp, MB: a synth-time value (the block cache's limit is derived from it). */
  ephemeralMB: number;
  timeoutSeconds: number;
  /** BITNET_MODEL: `s3://bucket/prefix/` (the pack's manifest.json). */
  modelLocation: string;
  modelId: string;
  edgeMaxTokens: string;
  maxConcurrent: string;
  maxQueue: string;
  /** The statement that lets the function read its shard pack (and nothing else in the bucket). */
  readModel: iam.PolicyStatement;
  apiKeys: secretsmanager.ISecret;
  /** The GPU endpoint; timeoutSeconds: its function timeout (ALB idle timeout), the longest wait for a non-streaming answer. */
  gpu?: { url: string; apiKey: secretsmanager.ISecret; timeoutSeconds?: number };
  logRetention: logs.RetentionDays;
  removalPolicy: RemovalPolicy;
}

/** The kernel builds the bundle embeds (npm run build:wasm writes them). */
export const KERNEL_FILES = ['wasm/build/bitnet-relaxed.wasm', 'wasm/build/bitnet-simd.wasm'];

export class CpuFunction extends Construct {
  readonly fn: nodejs.NodejsFunction;
  readonly url: lambda.FunctionUrl;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, p: CpuFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: p.logRetention, removalPolicy: p.removalPolicy });
    // Least privilege: no managed policies; logs to its own group, one prefix of the bucket, two secrets.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'bitnet-edge CPU function: write its logs, read its shard pack and its two secrets',
    });
    this.logGroup.grantWrite(this.role);
    this.role.addToPolicy(p.readModel);
    p.apiKeys.grantRead(this.role);
    p.gpu?.apiKey.grantRead(this.role);

    const environment: Record<string, string> = {
      BITNET_MODEL: p.modelLocation,
      BITNET_MODEL_ID: p.modelId,
      BITNET_API_KEYS_SECRET_ARN: p.apiKeys.secretArn,
      BITNET_EDGE_MAX_TOKENS: p.edgeMaxTokens,
      BITNET_MAX_CONCURRENT: p.maxConcurrent,
      BITNET_MAX_QUEUE: p.maxQueue,
      // Shard blocks cached on the function's /tmp, in three quarters of it (the rest for the runtime).
      BITNET_DISK_CACHE_DIR: '/tmp/bitnet-cache',
      BITNET_DISK_CACHE_MAX_BYTES: String(Math.floor(p.ephemeralMB * 0.75) * 1024 * 1024),
    };
    if (p.gpu) {
      environment.BITNET_GPU_URL = p.gpu.url;
      environment.BITNET_GPU_API_KEY_SECRET_ARN = p.gpu.apiKey.secretArn;
      // a non-streaming answer comes whole at the end: wait as long as the GPU side may run
      if (p.gpu.timeoutSeconds !== undefined) environment.BITNET_GPU_TIMEOUT_S = String(p.gpu.timeoutSeconds);
    }

    const entry = join(p.repoRoot, 'infra/lambda/handler.ts');
    this.fn = new nodejs.NodejsFunction(this, 'Function', {
      description: 'bitnet-edge: BitNet b1.58 on the WASM engine (OpenAI-compatible, streaming)',
      entry,
      handler: 'handler',
      projectRoot: p.repoRoot,
      depsLockFilePath: join(p.repoRoot, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: p.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
      memorySize: p.memoryMB,
      ephemeralStorageSize: Size.mebibytes(p.ephemeralMB),
      timeout: Duration.seconds(p.timeoutSeconds),
      role: this.role,
      logGroup: this.logGroup,
      environment,
      paramsAndSecrets: lambda.ParamsAndSecretsLayerVersion.fromVersion(lambda.ParamsAndSecretsVersions.V1_0_103, {
        cacheEnabled: true,
        cacheSize: 10,
        logLevel: lambda.ParamsAndSecretsLogLevel.WARN,
      }),
      bundling: {
        // Local esbuild only: synth must never need Docker.
        forceDockerBundling: false,
        format: nodejs.OutputFormat.ESM,
        target: 'node22',
        platform: 'node',
        mainFields: ['module', 'main'],
        // Bundle everything, the AWS SDK included: the version the tests ran, not the runtime's.
        externalModules: [],
        loader: { '.wasm': 'binary' },
        // CommonJS dependencies get `require` inside the ESM bundle.
        banner:
          "import { createRequire as __bitnetCreateRequire } from 'node:module'; const require = __bitnetCreateRequire(import.meta.url);",
        minify: true,
        keepNames: true,
        sourceMap: false,
        logLevel: nodejs.LogLevel.WARNING,
      },
    });
    this.url = this.fn.addFunctionUrl({
      // The app checks Bearer keys itself (IAM auth would need SigV4 from every client).
      authType: lambda.FunctionUrlAuthType.NONE,
      invokeMode: lambda.InvokeMode.RESPONSE_STREAM,
    });
  }
}
