/**
 * The deployment's settings: read from CDK context (`-c key=value`, infra/cdk.json, or an object in
 * tests), checked, with defaults. Structural choices (which GPU endpoint, instance types, VPC) are
 * context only; values an operator tunes per deploy (model location and id, routing thresholds and
 * limits, the memory sizes of the CPU and GPU functions, the accelerator memory) also become
 * CloudFormation parameters whose defaults come from here, so `cdk deploy --parameters
 * EdgeMaxTokens=1024` changes them without a new synth.
 */

/** Which GPU endpoint the stack builds. */
export type GpuMode = 'lambda' | 'ecs' | 'none';
export type Stage = 'dev' | 'prod';

export interface BitnetConfig {
  stage: Stage;
  /** 'lambda': Lambda Managed Instances with an accelerator; 'ecs': ECS on GPU EC2 behind an ALB; 'none'. */
  gpu: GpuMode;

  // --- the model and routing (CloudFormation parameter defaults)
  /** Key prefix of the shard pack in the bucket, ending in '/' (its manifest.json is read). */
  modelPrefix: string;
  modelId: string;
  /** Work (prompt + max_tokens) up to which the CPU function answers itself (router's edgeMaxTokens). */
  edgeMaxTokens: number;
  maxConcurrent: number;
  maxQueue: number;

  // --- the CPU function
  cpuMemoryMB: number;
  /** /tmp size, MB: the shard block cache lives there (BITNET_DISK_CACHE_DIR, 3/4 of it). */
  cpuEphemeralMB: number;
  cpuTimeoutSeconds: number;
  cpuArchitecture: 'x86_64' | 'arm64';

  // --- the GPU endpoint
  /** An ECR image URI to run instead of building gpu-lambda/Dockerfile (e.g. one built by CI). */
  gpuImageUri?: string;
  /** GPU instance types: the capacity provider's allow-list (lambda), the first one for the ASG (ecs). */
  gpuInstanceTypes: string[];
  /** Lambda AcceleratorConfig.AcceleratorMemorySize, GiB of memory per GPU device (3, 6, 12, 16, 24, 48). */
  gpuAcceleratorMemoryGiB: number;
  /** Function memory (lambda) or container memory reservation (ecs), MB. */
  gpuMemoryMB: number;
  /** Capacity provider ceiling, vCPUs (12..15000). */
  gpuMaxVCpus: number;
  /** Execution environments (lambda) or instances and tasks (ecs) kept running, and the most. */
  gpuMinInstances: number;
  gpuMaxInstances: number;
  /** Requests one GPU server generates at once (its BITNET_MAX_CONCURRENT; they share GPU batches),
   *  and the concurrent invocations one execution environment receives (lambda). */
  gpuConcurrency: number;
  gpuTimeoutSeconds: number;
  /** The port the GPU container listens on (ecs). */
  gpuPort: number;
  /** ACM certificate for an HTTPS listener on the ALB (ecs); without it the listener is HTTP. */
  gpuCertificateArn?: string;
  /** The name the certificate covers, a CNAME/alias to the ALB (ecs, with gpuCertificateArn). */
  gpuDomainName?: string;
  natGateways: number;

  // --- operations
  logRetentionDays: number;
  alarmEmail?: string;
  /** Errors (Lambda Errors or ALB 5xx) in 5 minutes that raise the alarm. */
  alarmErrors: number;
  /** p95 latency thresholds, ms: the CPU function's Duration; the GPU's Duration or target response time. */
  cpuLatencyP95Ms: number;
  gpuLatencyP95Ms: number;
}

export const DEFAULTS: BitnetConfig = {
  stage: 'dev',
  gpu: 'lambda',
  modelPrefix: 'models/bitnet-b1.58-2b-4t/',
  modelId: 'bitnet',
  edgeMaxTokens: 512,
  maxConcurrent: 2,
  maxQueue: 16,
  cpuMemoryMB: 4096,
  cpuEphemeralMB: 2048,
  cpuTimeoutSeconds: 300,
  cpuArchitecture: 'x86_64',
  gpuInstanceTypes: ['g6.xlarge', 'g6.2xlarge', 'g5.xlarge', 'g5.2xlarge'],
  gpuAcceleratorMemoryGiB: 24,
  gpuMemoryMB: 8192,
  gpuMaxVCpus: 32,
  gpuMinInstances: 1,
  gpuMaxInstances: 2,
  gpuConcurrency: 16,
  gpuTimeoutSeconds: 300,
  gpuPort: 8080,
  natGateways: 1,
  logRetentionDays: 30,
  alarmErrors: 5,
  cpuLatencyP95Ms: 120_000,
  gpuLatencyP95Ms: 60_000,
};

/** The GPU image built by `cdk deploy` (never by synth), relative to the repository root. */
export const GPU_DOCKERFILE = 'gpu-lambda/Dockerfile';

export const ACCELERATOR_MEMORY_SIZES = [3, 6, 12, 16, 24, 48] as const;

/** Lambda's limits for a function on the default (Firecracker) platform. */
export const LAMBDA_LIMITS = { minMemoryMB: 128, maxMemoryMB: 10_240, maxEphemeralMB: 10_240, maxTimeoutSeconds: 900 };

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Getter = (key: string) => unknown;

function str(get: Getter, key: keyof BitnetConfig): string | undefined {
  const v = get(key);
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' && typeof v !== 'number') throw new ConfigError(`context "${key}" must be a string`);
  return String(v);
}

function int(get: Getter, key: keyof BitnetConfig, min: number, max: number): number {
  const raw = str(get, key);
  if (raw === undefined) return DEFAULTS[key] as number;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ConfigError(`context "${key}" must be an integer in ${min}..${max}, got "${raw}"`);
  return n;
}

function oneOf<T extends string>(get: Getter, key: keyof BitnetConfig, values: readonly T[]): T {
  const raw = str(get, key) ?? (DEFAULTS[key] as T);
  if (!values.includes(raw as T))
    throw new ConfigError(`context "${key}" must be one of ${values.join(', ')}, got "${raw}"`);
  return raw as T;
}

function list(get: Getter, key: keyof BitnetConfig): string[] {
  const v = get(key);
  if (Array.isArray(v)) return v.map(String);
  const raw = str(get, key);
  if (raw === undefined) return DEFAULTS[key] as string[];
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Reads and checks the settings. `get` is `(k) => app.node.tryGetContext(k)` or a plain object's lookup. */
export function loadConfig(get: Getter): BitnetConfig {
  const c: BitnetConfig = {
    stage: oneOf(get, 'stage', ['dev', 'prod'] as const),
    gpu: oneOf(get, 'gpu', ['lambda', 'ecs', 'none'] as const),
    modelPrefix: str(get, 'modelPrefix') ?? DEFAULTS.modelPrefix,
    modelId: str(get, 'modelId') ?? DEFAULTS.modelId,
    edgeMaxTokens: int(get, 'edgeMaxTokens', 0, 1_000_000),
    maxConcurrent: int(get, 'maxConcurrent', 1, 1024),
    maxQueue: int(get, 'maxQueue', 0, 100_000),
    cpuMemoryMB: int(get, 'cpuMemoryMB', LAMBDA_LIMITS.minMemoryMB, LAMBDA_LIMITS.maxMemoryMB),
    cpuEphemeralMB: int(get, 'cpuEphemeralMB', 512, LAMBDA_LIMITS.maxEphemeralMB),
    cpuTimeoutSeconds: int(get, 'cpuTimeoutSeconds', 1, LAMBDA_LIMITS.maxTimeoutSeconds),
    cpuArchitecture: oneOf(get, 'cpuArchitecture', ['x86_64', 'arm64'] as const),
    gpuImageUri: str(get, 'gpuImageUri'),
    gpuInstanceTypes: list(get, 'gpuInstanceTypes'),
    gpuAcceleratorMemoryGiB: int(get, 'gpuAcceleratorMemoryGiB', 1, 1024),
    gpuMemoryMB: int(get, 'gpuMemoryMB', 2048, 32_768),
    gpuMaxVCpus: int(get, 'gpuMaxVCpus', 12, 15_000),
    gpuMinInstances: int(get, 'gpuMinInstances', 0, 1000),
    gpuMaxInstances: int(get, 'gpuMaxInstances', 1, 1000),
    gpuConcurrency: int(get, 'gpuConcurrency', 1, 64),
    gpuTimeoutSeconds: int(get, 'gpuTimeoutSeconds', 1, LAMBDA_LIMITS.maxTimeoutSeconds),
    gpuPort: int(get, 'gpuPort', 1, 65_535),
    gpuCertificateArn: str(get, 'gpuCertificateArn'),
    gpuDomainName: str(get, 'gpuDomainName'),
    // The GPU instances sit in private subnets and pull from ECR through NAT: at least one.
    natGateways: int(get, 'natGateways', 1, 3),
    logRetentionDays: int(get, 'logRetentionDays', 1, 3653),
    alarmEmail: str(get, 'alarmEmail'),
    alarmErrors: int(get, 'alarmErrors', 1, 1_000_000),
    cpuLatencyP95Ms: int(get, 'cpuLatencyP95Ms', 1, 900_000),
    gpuLatencyP95Ms: int(get, 'gpuLatencyP95Ms', 1, 900_000),
  };
  if (!/^[A-Za-z0-9!_.*'()/-]+\/$/.test(c.modelPrefix))
    throw new ConfigError(`context "modelPrefix" must be an S3 key prefix ending in "/", got "${c.modelPrefix}"`);
  if (!(ACCELERATOR_MEMORY_SIZES as readonly number[]).includes(c.gpuAcceleratorMemoryGiB))
    throw new ConfigError(
      `context "gpuAcceleratorMemoryGiB" must be one of ${ACCELERATOR_MEMORY_SIZES.join(', ')}, got ${c.gpuAcceleratorMemoryGiB}`,
    );
  if (c.gpuInstanceTypes.length === 0) throw new ConfigError('context "gpuInstanceTypes" is empty');
  for (const t of c.gpuInstanceTypes) {
    // x86 NVIDIA families the engine runs on: it is built for sm_80 and sm_90 (gpu-lambda/engine/Makefile),
    // so Ampere or newer: g5 (A10G), g6/gr6 (L4), g6e (L40S), p4 (A100), p5 (H100/H200). Not g4dn
    // (T4, sm_75), p3 (V100) or g5g (Graviton + T4G, arm64).
    if (!/^(g5|g6|g6e|gr6|p[4-9][a-z]*)\.[a-z0-9]+$/.test(t))
      throw new ConfigError(
        `context "gpuInstanceTypes": "${t}" is not an x86 NVIDIA Ampere-or-newer instance type (g5, g6, g6e, gr6, p4, p5)`,
      );
  }
  if (c.gpuMinInstances > c.gpuMaxInstances)
    throw new ConfigError(`gpuMinInstances (${c.gpuMinInstances}) is over gpuMaxInstances (${c.gpuMaxInstances})`);
  if (c.gpuImageUri && !/^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[^:@\s]+[:@][^\s]+$/.test(c.gpuImageUri))
    throw new ConfigError(
      `context "gpuImageUri" must be an ECR image URI with a tag or digest, got "${c.gpuImageUri}"`,
    );
  if (c.gpuCertificateArn && !/^arn:aws[a-z-]*:acm:/.test(c.gpuCertificateArn))
    throw new ConfigError(`context "gpuCertificateArn" must be an ACM certificate ARN, got "${c.gpuCertificateArn}"`);
  if (c.gpuCertificateArn && !c.gpuDomainName)
    throw new ConfigError('context "gpuCertificateArn" needs "gpuDomainName" (the name the certificate covers)');
  return c;
}

/** A lookup over a plain object (tests). */
export const fromObject =
  (o: Partial<Record<keyof BitnetConfig, unknown>>): Getter =>
  (k) =>
    o[k as keyof BitnetConfig];
