/**
 * The GPU endpoint on Lambda Managed Instances (LMI): the gpu-lambda container image as a function
 * on a capacity provider of NVIDIA instances, with an accelerator per execution environment, and
 * a Function URL (RESPONSE_STREAM) that the routers (the Worker, the CPU function) forward to.
 *
 * The accelerator. Lambda's API, CloudFormation (`AWS::Lambda::Function` property `AcceleratorConfig`
 * with the one field `AcceleratorMemorySize`: 3, 6, 12, 16, 24 or 48 GiB of memory per GPU device;
 * it needs a CapacityProviderConfig, PackageType Image and x86_64) and SAM have it; aws-cdk-lib
 * 2.276.0, the newest on the registry when this was written, does not (its CfnFunction has no
 * acceleratorConfig; the L2 `acceleratorConfig` arrives in 2.278.0). So it is set with an escape
 * hatch on the L1: `addPropertyOverride('AcceleratorConfig.AcceleratorMemorySize', n)`. With
 * aws-cdk-lib ≥ 2.278 this becomes `acceleratorConfig: { acceleratorMemorySize }` on the function.
 *
 * The capacity provider's instance requirements can only name instance types and an architecture
 * (AllowedInstanceTypes, Architectures, ExcludedInstanceTypes): GPU instances are chosen by allowing
 * only NVIDIA types (g5/g6/… by default) on x86_64.
 *
 * The container (gpu-lambda/Dockerfile, gpu-lambda/server.ts) is the HTTP app on the cuda backend
 * behind the Lambda Web Adapter extension (response streaming, readiness on /readyz), which the
 * image configures itself. It reads its key from BITNET_API_KEYS and has no Secrets Manager client
 * (a container image cannot take the Parameters and Secrets layer either), so the key reaches it
 * as a CloudFormation dynamic reference, `{{resolve:secretsmanager:<GpuApiKey>:SecretString}}`:
 * resolved by CloudFormation at deploy time, never written in the template, but held in the
 * function's configuration (readable with lambda:GetFunctionConfiguration) and refreshed only by
 * a deploy. Without a key the server would serve unauthenticated, so it must always get one.
 */
import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ecrImage, type GpuImageSource, gpuAssetOptions } from './gpu-image.ts';

export interface GpuLambdaProps {
  vpc: ec2.IVpc;
  image: GpuImageSource;
  instanceTypes: string[];
  /** GiB per GPU device: a number, or a CloudFormation parameter's token. */
  acceleratorMemoryGiB: number;
  memoryMB: number;
  maxVCpus: number;
  minEnvironments: number;
  maxEnvironments: number;
  concurrencyPerEnvironment: number;
  timeoutSeconds: number;
  modelLocation: string;
  modelId: string;
  maxQueue: string;
  readModel: iam.PolicyStatement;
  apiKey: secretsmanager.ISecret;
  logRetention: logs.RetentionDays;
  removalPolicy: RemovalPolicy;
}

export class GpuLambda extends Construct {
  readonly fn: lambda.DockerImageFunction;
  readonly url: lambda.FunctionUrl;
  readonly capacityProvider: lambda.CapacityProvider;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, p: GpuLambdaProps) {
    super(scope, id);
    // The instances: private subnets; outbound only (ECR, S3, Secrets Manager, CloudWatch).
    const sg = new ec2.SecurityGroup(this, 'InstanceSecurityGroup', {
      vpc: p.vpc,
      description: 'bitnet-edge GPU capacity provider instances (no inbound)',
      allowAllOutbound: true,
    });
    this.capacityProvider = new lambda.CapacityProvider(this, 'CapacityProvider', {
      subnets: p.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnets,
      securityGroups: [sg],
      architectures: [lambda.Architecture.X86_64],
      instanceTypeFilter: lambda.InstanceTypeFilter.allow(p.instanceTypes.map((t) => new ec2.InstanceType(t))),
      maxVCpuCount: p.maxVCpus,
      scalingOptions: lambda.ScalingOptions.auto(),
    });

    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: p.logRetention, removalPolicy: p.removalPolicy });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'bitnet-edge GPU function: write its logs, read its shard pack',
    });
    this.logGroup.grantWrite(this.role);
    this.role.addToPolicy(p.readModel);

    const code =
      p.image.kind === 'asset'
        ? lambda.DockerImageCode.fromImageAsset(p.image.directory, gpuAssetOptions(p.image.file))
        : (() => {
            const { repository, tagOrDigest } = ecrImage(this, 'Repository', p.image.uri);
            return lambda.DockerImageCode.fromEcr(repository, { tagOrDigest });
          })();

    this.fn = new lambda.DockerImageFunction(this, 'Function', {
      description: 'bitnet-edge: BitNet b1.58 on the CUDA engine (Lambda Managed Instances, GPU)',
      code,
      architecture: lambda.Architecture.X86_64,
      memorySize: p.memoryMB,
      timeout: Duration.seconds(p.timeoutSeconds),
      role: this.role,
      logGroup: this.logGroup,
      environment: {
        BITNET_MODEL: p.modelLocation,
        BITNET_MODEL_ID: p.modelId,
        // Resolved by CloudFormation at deploy time (see the header).
        BITNET_API_KEYS: p.apiKey.secretValue.unsafeUnwrap(),
        BITNET_MAX_CONCURRENT: String(p.concurrencyPerEnvironment),
        BITNET_MAX_QUEUE: p.maxQueue,
      },
    });
    this.capacityProvider.addFunction(this.fn, {
      perExecutionEnvironmentMaxConcurrency: p.concurrencyPerEnvironment,
      latestPublishedScalingConfig: {
        minExecutionEnvironments: p.minEnvironments,
        maxExecutionEnvironments: p.maxEnvironments,
      },
    });
    // Escape hatch: aws-cdk-lib 2.276 has no AcceleratorConfig (see the header).
    const cfn = this.fn.node.defaultChild as lambda.CfnFunction;
    cfn.addPropertyOverride('AcceleratorConfig.AcceleratorMemorySize', p.acceleratorMemoryGiB);
    // The schema bundled with aws-cdk-lib 2.276 predates the property; its synth-time validator
    // (rule F3002, "additional properties are not allowed") would flag the override.
    Validations.of(cfn).acknowledge({
      id: 'CloudFormation-Validate::F3002',
      reason: 'AWS::Lambda::Function AcceleratorConfig is newer than the CloudFormation schema in aws-cdk-lib 2.276',
    });

    this.url = this.fn.addFunctionUrl({
      authType: lambda.FunctionUrlAuthType.NONE,
      invokeMode: lambda.InvokeMode.RESPONSE_STREAM,
    });
  }
}
