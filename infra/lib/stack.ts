/**
 * The AWS side of bitnet-edge, one stack:
 *
 *   ShardBucket ── s3://<bucket>/<ModelPrefix>manifest.json + shards (private, encrypted, versioned)
 *   Secrets     ── ApiKeys (client keys), GpuApiKey (the GPU endpoint's own key)
 *   CpuFunction ── Node 22 + WASM engine, Function URL (RESPONSE_STREAM), routes large requests to ↓
 *   GPU         ── 'lambda': Lambda Managed Instances + AcceleratorConfig, Function URL
 *                  'ecs':    ECS on GPU EC2 behind an ALB
 *                  'none':   no GPU endpoint
 *   Alarms      ── errors and latency of each endpoint → SNS
 *
 * CloudFormation parameters (defaults from the context, see config.ts): ModelPrefix, ModelId,
 * EdgeMaxTokens, MaxConcurrent, MaxQueue, CpuMemoryMB, and for the GPU endpoint
 * GpuMemoryMB and (lambda) GpuAcceleratorMemoryGiB.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CfnOutput, CfnParameter, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { Alarms } from './alarms.ts';
import { ACCELERATOR_MEMORY_SIZES, type BitnetConfig, ConfigError, GPU_DOCKERFILE, LAMBDA_LIMITS } from './config.ts';
import { CpuFunction } from './cpu-function.ts';
import { GpuEcs } from './gpu-ecs.ts';
import type { GpuImageSource } from './gpu-image.ts';
import { GpuLambda } from './gpu-lambda.ts';
import { ShardBucket } from './shard-bucket.ts';

export interface BitnetStackProps extends StackProps {
  config: BitnetConfig;
  /** Repository root: the CPU bundle's project root and the GPU image's build context. */
  repoRoot: string;
  /** The GPU image's build context and Dockerfile (default: repoRoot and gpu-lambda/Dockerfile). */
  gpuImageContext?: { directory: string; file: string };
}

/** The retention enum value for a number of days (CloudWatch accepts only some). */
function retention(days: number): logs.RetentionDays {
  const allowed = Object.values(logs.RetentionDays).filter((v): v is number => typeof v === 'number' && v > 0);
  const ok = allowed.includes(days);
  if (!ok)
    throw new ConfigError(`logRetentionDays must be one of ${allowed.sort((a, b) => a - b).join(', ')}, got ${days}`);
  return days as logs.RetentionDays;
}

export class BitnetStack extends Stack {
  readonly shards: ShardBucket;
  readonly apiKeys: secretsmanager.Secret;
  readonly gpuApiKey: secretsmanager.Secret | undefined;
  readonly cpu: CpuFunction;
  readonly gpuLambda: GpuLambda | undefined;
  readonly gpuEcs: GpuEcs | undefined;
  readonly alarms: Alarms;

  constructor(scope: Construct, id: string, props: BitnetStackProps) {
    super(scope, id, props);
    const c = props.config;
    const removalPolicy = c.stage === 'prod' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
    const logRetention = retention(c.logRetentionDays);
    Tags.of(this).add('project', 'bitnet-edge');
    Tags.of(this).add('stage', c.stage);

    // --- parameters: what an operator changes at deploy time without a new synth
    const modelPrefix = new CfnParameter(this, 'ModelPrefix', {
      type: 'String',
      default: c.modelPrefix,
      allowedPattern: "^[A-Za-z0-9!_.*'()/-]+/$",
      description: 'Key prefix of the shard pack in the shard bucket, ending in "/" (its manifest.json is loaded)',
    });
    const modelId = new CfnParameter(this, 'ModelId', {
      type: 'String',
      default: c.modelId,
      minLength: 1,
      description: 'The model id clients send and /v1/models lists',
    });
    const edgeMaxTokens = new CfnParameter(this, 'EdgeMaxTokens', {
      type: 'Number',
      default: c.edgeMaxTokens,
      minValue: 0,
      description: 'Routing: work (prompt + max_tokens) up to which the CPU function answers; larger goes to the GPU',
    });
    const maxConcurrent = new CfnParameter(this, 'MaxConcurrent', {
      type: 'Number',
      default: c.maxConcurrent,
      minValue: 1,
      description: 'Generations run at once per CPU execution environment',
    });
    const maxQueue = new CfnParameter(this, 'MaxQueue', {
      type: 'Number',
      default: c.maxQueue,
      minValue: 0,
      description: 'Requests waiting per execution environment before 429',
    });
    const cpuMemoryMB = new CfnParameter(this, 'CpuMemoryMB', {
      type: 'Number',
      default: c.cpuMemoryMB,
      minValue: LAMBDA_LIMITS.minMemoryMB,
      maxValue: LAMBDA_LIMITS.maxMemoryMB,
      description: 'CPU function memory, MB (128-10240; vCPUs grow with it, ~6 at the top)',
    });

    // --- storage and secrets
    this.shards = new ShardBucket(this, 'Shards');
    const bucket = this.shards.bucket;
    const modelLocation = `s3://${bucket.bucketName}/${modelPrefix.valueAsString}`;
    const readModel = () => this.shards.readPackStatement(modelPrefix.valueAsString);

    this.apiKeys = new secretsmanager.Secret(this, 'ApiKeys', {
      description: 'bitnet-edge client API keys (comma-separated) for the CPU function',
      generateSecretString: { passwordLength: 48, excludePunctuation: true, includeSpace: false },
      removalPolicy,
    });
    this.gpuApiKey =
      c.gpu === 'none'
        ? undefined
        : new secretsmanager.Secret(this, 'GpuApiKey', {
            description:
              'bitnet-edge GPU endpoint key: the GPU server accepts it; the routers (CPU function, Worker) send it',
            generateSecretString: { passwordLength: 48, excludePunctuation: true, includeSpace: false },
            removalPolicy,
          });

    // --- the GPU endpoint
    let gpuUrl: string | undefined;
    let gpuMemoryMB: CfnParameter | undefined;
    if (c.gpu !== 'none') {
      const image = this.gpuImage(props);
      const vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: 2,
        natGateways: c.natGateways,
        subnetConfiguration: [
          { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
          { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        ],
        // Shard reads stay off the NAT gateway (and its per-GB charge).
        gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      });
      gpuMemoryMB = new CfnParameter(this, 'GpuMemoryMB', {
        type: 'Number',
        default: c.gpuMemoryMB,
        minValue: 2048,
        maxValue: 32768,
        description:
          c.gpu === 'lambda' ? 'GPU function memory, MB' : 'GPU container memory reservation, MiB (host memory)',
      });
      if (c.gpu === 'lambda') {
        const accel = new CfnParameter(this, 'GpuAcceleratorMemoryGiB', {
          type: 'Number',
          default: c.gpuAcceleratorMemoryGiB,
          allowedValues: ACCELERATOR_MEMORY_SIZES.map(String),
          description: 'Lambda AcceleratorConfig.AcceleratorMemorySize: GiB of memory per GPU device',
        });
        this.gpuLambda = new GpuLambda(this, 'GpuLambda', {
          vpc,
          image,
          instanceTypes: c.gpuInstanceTypes,
          acceleratorMemoryGiB: accel.valueAsNumber,
          memoryMB: gpuMemoryMB.valueAsNumber,
          maxVCpus: c.gpuMaxVCpus,
          minEnvironments: c.gpuMinInstances,
          maxEnvironments: c.gpuMaxInstances,
          concurrencyPerEnvironment: c.gpuConcurrency,
          timeoutSeconds: c.gpuTimeoutSeconds,
          modelLocation,
          modelId: modelId.valueAsString,
          maxQueue: maxQueue.valueAsString,
          readModel: readModel(),
          apiKey: this.gpuApiKey!,
          logRetention,
          removalPolicy,
        });
        gpuUrl = this.gpuLambda.url.url;
      } else {
        this.gpuEcs = new GpuEcs(this, 'GpuEcs', {
          vpc,
          image,
          instanceType: c.gpuInstanceTypes[0],
          memoryMB: gpuMemoryMB.valueAsNumber,
          minInstances: c.gpuMinInstances,
          maxInstances: c.gpuMaxInstances,
          port: c.gpuPort,
          timeoutSeconds: c.gpuTimeoutSeconds,
          concurrency: c.gpuConcurrency,
          certificateArn: c.gpuCertificateArn,
          domainName: c.gpuDomainName,
          modelLocation,
          modelId: modelId.valueAsString,
          maxQueue: maxQueue.valueAsString,
          readModel: readModel(),
          apiKey: this.gpuApiKey!,
          logRetention,
          removalPolicy,
        });
        gpuUrl = this.gpuEcs.url;
      }
    }

    // --- the CPU function
    this.cpu = new CpuFunction(this, 'Cpu', {
      repoRoot: props.repoRoot,
      architecture: c.cpuArchitecture,
      memoryMB: cpuMemoryMB.valueAsNumber,
      ephemeralMB: c.cpuEphemeralMB,
      timeoutSeconds: c.cpuTimeoutSeconds,
      modelLocation,
      modelId: modelId.valueAsString,
      edgeMaxTokens: edgeMaxTokens.valueAsString,
      maxConcurrent: maxConcurrent.valueAsString,
      maxQueue: maxQueue.valueAsString,
      readModel: readModel(),
      apiKeys: this.apiKeys,
      gpu:
        gpuUrl && this.gpuApiKey
          ? { url: gpuUrl, apiKey: this.gpuApiKey, timeoutSeconds: c.gpuTimeoutSeconds }
          : undefined,
      logRetention,
      removalPolicy,
    });

    // --- alarms
    this.alarms = new Alarms(this, 'Alarms', { email: c.alarmEmail });
    this.alarms.forFunction('Cpu', this.cpu.fn, { errors: c.alarmErrors, latencyP95Ms: c.cpuLatencyP95Ms });
    if (this.gpuLambda)
      this.alarms.forFunction('Gpu', this.gpuLambda.fn, { errors: c.alarmErrors, latencyP95Ms: c.gpuLatencyP95Ms });
    if (this.gpuEcs)
      this.alarms.forTargetGroup('Gpu', this.gpuEcs.loadBalancer, this.gpuEcs.targetGroup, {
        errors: c.alarmErrors,
        latencyP95Ms: c.gpuLatencyP95Ms,
      });

    // --- outputs (docs/deploy.md uses them)
    new CfnOutput(this, 'ShardBucketName', { value: bucket.bucketName, description: 'Upload shard packs here' });
    new CfnOutput(this, 'ModelLocation', { value: modelLocation, description: 'BITNET_MODEL of the functions' });
    new CfnOutput(this, 'CpuFunctionUrl', { value: this.cpu.url.url, description: 'The CPU endpoint (streaming)' });
    new CfnOutput(this, 'ApiKeysSecretArn', { value: this.apiKeys.secretArn, description: 'Client keys' });
    if (gpuUrl) {
      new CfnOutput(this, 'GpuEndpointUrl', { value: gpuUrl, description: "The Worker's GPU_URL" });
      new CfnOutput(this, 'GpuApiKeySecretArn', {
        value: this.gpuApiKey!.secretArn,
        description: "The GPU key: the Worker's GPU_API_KEY secret",
      });
    }
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarms.topic.topicArn });
  }

  private gpuImage(props: BitnetStackProps): GpuImageSource {
    const c = props.config;
    if (c.gpuImageUri) return { kind: 'ecr', uri: c.gpuImageUri };
    const ctx = props.gpuImageContext ?? { directory: props.repoRoot, file: GPU_DOCKERFILE };
    if (!existsSync(join(ctx.directory, ctx.file)))
      throw new ConfigError(
        `${join(ctx.directory, ctx.file)} is missing: the GPU image is built from it at deploy time. ` +
          'Pass -c gpuImageUri=<ECR image URI> to use an image built elsewhere, or -c gpu=none.',
      );
    return { kind: 'asset', ...ctx };
  }
}
