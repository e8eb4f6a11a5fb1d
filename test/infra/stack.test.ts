// The AWS stack (infra/), checked on its synthesized CloudFormation templates with
// aws-cdk-lib/assertions: the shard bucket, the CPU function and its streaming URL, secrets, IAM
// scope, log retention, alarms, parameters, and both GPU endpoints (Lambda Managed Instances with
// an AcceleratorConfig; ECS on GPU EC2 instances).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, DEFAULTS, fromObject, GPU_DOCKERFILE, loadConfig } from '../../infra/lib/config.ts';
import { BitnetStack } from '../../infra/lib/stack.ts';
import { cleanup, idOf, idsOf, repoRoot, type Synth, synth, tempDirFor } from './synth.ts';

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: unknown; Sid?: string };

/** Every statement of the inline/default policies attached to a role. */
function roleStatements(s: Synth, roleId: string): Statement[] {
  const out: Statement[] = [];
  for (const r of Object.values(s.json.Resources)) {
    if (r.Type !== 'AWS::IAM::Policy') continue;
    const roles = (r.Properties!.Roles as { Ref: string }[]).map((x) => x.Ref);
    if (!roles.includes(roleId)) continue;
    out.push(...(r.Properties!.PolicyDocument as { Statement: Statement[] }).Statement);
  }
  return out;
}

afterAll(cleanup);

const actions = (st: Statement) => (Array.isArray(st.Action) ? st.Action : [st.Action]).sort();

/** `${Bucket.Arn}/${ModelPrefix}*`: the one prefix of the shard bucket. */
const packObjects = (bucketId: string) => ({
  'Fn::Join': ['', [{ 'Fn::GetAtt': [bucketId, 'Arn'] }, '/', { Ref: 'ModelPrefix' }, '*']],
});

function functionEnv(s: Synth, fnId: string): Record<string, unknown> {
  return (s.json.Resources[fnId].Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
}

describe('AWS stack, GPU on Lambda Managed Instances (the default)', () => {
  let s: Synth;
  let bucketId: string;
  let cpuFn: string;
  let gpuFn: string;
  beforeAll(() => {
    s = synth({});
    bucketId = idOf(s, 'AWS::S3::Bucket', 'Shards');
    cpuFn = idOf(s, 'AWS::Lambda::Function', 'CpuFunction');
    gpuFn = idOf(s, 'AWS::Lambda::Function', 'GpuLambdaFunction');
  });

  it('shard bucket: private, encrypted, versioned, kept when the stack goes', () => {
    s.template.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: Match.objectLike({
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
        VersioningConfiguration: { Status: 'Enabled' },
      }),
    });
  });

  it('bucket policy: only denials (no HTTP, no TLS < 1.2), no grant to anyone', () => {
    const policies = idsOf(s, 'AWS::S3::BucketPolicy');
    expect(policies).toHaveLength(1);
    const p = s.json.Resources[policies[0]].Properties!;
    expect(p.Bucket).toEqual({ Ref: bucketId });
    const sts = (p.PolicyDocument as { Statement: Statement[] }).Statement;
    expect(sts.every((st) => st.Effect === 'Deny')).toBe(true);
    expect(sts).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Effect: 'Deny',
          Action: 's3:*',
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
        }),
        expect.objectContaining({
          Effect: 'Deny',
          Action: 's3:*',
          Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } },
        }),
      ]),
    );
  });

  it('parameters: the model location, the sizes and the routing thresholds', () => {
    s.template.hasParameter('ModelPrefix', {
      Type: 'String',
      Default: DEFAULTS.modelPrefix,
      AllowedPattern: Match.stringLikeRegexp('/\\$$'),
    });
    s.template.hasParameter('ModelId', { Type: 'String', Default: 'bitnet' });
    s.template.hasParameter('EdgeMaxTokens', { Type: 'Number', Default: 512, MinValue: 0 });
    s.template.hasParameter('MaxConcurrent', { Type: 'Number', Default: 2 });
    s.template.hasParameter('MaxQueue', { Type: 'Number', Default: 16 });
    s.template.hasParameter('CpuMemoryMB', { Type: 'Number', Default: 4096, MinValue: 128, MaxValue: 10240 });
    s.template.hasParameter('GpuMemoryMB', { Type: 'Number', Default: DEFAULTS.gpuMemoryMB });
    s.template.hasParameter('GpuAcceleratorMemoryGiB', {
      Type: 'Number',
      Default: 24,
      AllowedValues: ['3', '6', '12', '16', '24', '48'],
    });
    // …and they reach the functions.
    expect(functionEnv(s, cpuFn)).toMatchObject({
      BITNET_MODEL: { 'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/', { Ref: 'ModelPrefix' }]] },
      BITNET_MODEL_ID: { Ref: 'ModelId' },
      BITNET_EDGE_MAX_TOKENS: { Ref: 'EdgeMaxTokens' },
      BITNET_MAX_CONCURRENT: { Ref: 'MaxConcurrent' },
      BITNET_MAX_QUEUE: { Ref: 'MaxQueue' },
    });
    expect(functionEnv(s, gpuFn)).toMatchObject({
      BITNET_MODEL: { 'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/', { Ref: 'ModelPrefix' }]] },
    });
  });

  it('CPU function: Node 22, WASM engine bundle, memory up to 10 GB, shards from S3 with a /tmp cache', () => {
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Handler: 'index.handler',
      Architectures: ['x86_64'],
      MemorySize: { Ref: 'CpuMemoryMB' },
      EphemeralStorage: { Size: DEFAULTS.cpuEphemeralMB },
      Timeout: DEFAULTS.cpuTimeoutSeconds,
      Environment: {
        Variables: Match.objectLike({
          BITNET_DISK_CACHE_DIR: '/tmp/bitnet-cache',
          BITNET_DISK_CACHE_MAX_BYTES: String(1536 * 2 ** 20), // 3/4 of the 2048 MB /tmp
        }),
      },
    });
    // The Parameters and Secrets extension (a layer, per region) serves the secrets to the handler.
    const layers = s.json.Resources[cpuFn].Properties!.Layers as unknown[];
    expect(JSON.stringify(layers)).toContain('Fn::FindInMap');
    expect(JSON.stringify(s.json.Mappings)).toMatch(/AWS-Parameters-and-Secrets-Lambda-Extension/);
  });

  it('CPU function bundle: built by the local esbuild (ESM, kernels embedded, AWS SDK inside), no Docker', () => {
    const code = s.json.Resources[cpuFn].Properties!.Code as { S3Key: string };
    const hash = code.S3Key.replace(/\.zip$/, '');
    const file = join(s.outdir, `asset.${hash}`, 'index.mjs');
    expect(existsSync(file)).toBe(true);
    const js = readFileSync(file, 'utf8');
    expect(js.startsWith("import { createRequire as __bitnetCreateRequire } from 'node:module'")).toBe(true);
    expect(js).toContain('GetObjectCommand'); // @aws-sdk/client-s3, bundled (no runtime SDK)
    expect(js).toContain('secretsmanager/get?secretId=');
    // The two kernel builds, as bytes (esbuild's binary loader).
    expect(js.match(/Uint8Array\.fromBase64|__toBinary/g)?.length ?? 0).toBeGreaterThan(0);
    // Only the GPU image is a Docker asset; the CPU code is a file asset.
    expect(Object.values(s.assets.files).some((a) => a.source.path === `asset.${hash}`)).toBe(true);
  });

  it('the CPU function answers through a streaming Function URL (app-level Bearer keys)', () => {
    s.template.hasResourceProperties('AWS::Lambda::Url', {
      TargetFunctionArn: { 'Fn::GetAtt': [cpuFn, 'Arn'] },
      InvokeMode: 'RESPONSE_STREAM',
      AuthType: 'NONE',
    });
    s.template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunctionUrl',
      FunctionName: { 'Fn::GetAtt': [cpuFn, 'Arn'] },
      FunctionUrlAuthType: 'NONE',
    });
  });

  it('API keys live in Secrets Manager; the template never holds a key value', () => {
    const secrets = idsOf(s, 'AWS::SecretsManager::Secret');
    expect(secrets.map((id) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual(['ApiKeys', 'GpuApiKey']);
    for (const id of secrets)
      expect(s.json.Resources[id].Properties!.GenerateSecretString).toMatchObject({ ExcludePunctuation: true });
    const apiKeys = secrets.find((id) => id.startsWith('ApiKeys'))!;
    const gpuKey = secrets.find((id) => id.startsWith('GpuApiKey'))!;
    // The CPU function gets ARNs and reads the values itself (Parameters and Secrets extension).
    expect(functionEnv(s, cpuFn)).toMatchObject({
      BITNET_API_KEYS_SECRET_ARN: { Ref: apiKeys },
      BITNET_GPU_API_KEY_SECRET_ARN: { Ref: gpuKey },
    });
    expect(functionEnv(s, cpuFn)).not.toHaveProperty('BITNET_API_KEYS');
    expect(functionEnv(s, cpuFn)).not.toHaveProperty('BITNET_GPU_API_KEY');
    // The GPU container reads BITNET_API_KEYS only: a dynamic reference CloudFormation resolves at deploy.
    expect(functionEnv(s, gpuFn).BITNET_API_KEYS).toEqual({
      'Fn::Join': ['', ['{{resolve:secretsmanager:', { Ref: gpuKey }, ':SecretString:::}}']],
    });
    expect(JSON.stringify(s.json)).not.toMatch(/"SecretString"/);
  });

  it('IAM: each function role holds exactly its logs, one bucket prefix and its own secrets', () => {
    const secret = (prefix: string) => idOf(s, 'AWS::SecretsManager::Secret', prefix);
    const expectRole = (fnId: string, logGroupPrefix: string, secrets: string[]) => {
      const roleId = (s.json.Resources[fnId].Properties!.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
      const role = s.json.Resources[roleId].Properties!;
      expect(role.ManagedPolicyArns).toBeUndefined();
      expect(role.AssumeRolePolicyDocument).toMatchObject({
        Statement: [{ Action: 'sts:AssumeRole', Principal: { Service: 'lambda.amazonaws.com' } }],
      });
      const sts = roleStatements(s, roleId);
      expect(sts.every((st) => st.Effect === 'Allow')).toBe(true);
      expect(sts.map((st) => ({ actions: actions(st), resource: st.Resource }))).toEqual([
        {
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resource: { 'Fn::GetAtt': [idOf(s, 'AWS::Logs::LogGroup', logGroupPrefix), 'Arn'] },
        },
        { actions: ['s3:GetObject'], resource: packObjects(bucketId) },
        ...secrets.map((id) => ({
          actions: ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue'],
          resource: { Ref: id },
        })),
      ]);
    };
    expectRole(cpuFn, 'CpuLogs', [secret('ApiKeys'), secret('GpuApiKey')]);
    expectRole(gpuFn, 'GpuLambdaLogs', []);
    // Nothing anywhere allows a wildcard action, or s3/secrets on every resource.
    for (const [id, r] of Object.entries(s.json.Resources)) {
      if (r.Type !== 'AWS::IAM::Policy') continue;
      for (const st of (r.Properties!.PolicyDocument as { Statement: Statement[] }).Statement) {
        expect([id, actions(st).filter((a) => a === '*' || a.endsWith(':*'))]).toEqual([id, []]);
        if (st.Resource === '*')
          expect([id, actions(st).filter((a) => /^(s3|secretsmanager):/.test(a))]).toEqual([id, []]);
      }
    }
  });

  it('GPU: the gpu-lambda image on a Lambda Managed Instances capacity provider of NVIDIA x86 instances', () => {
    s.template.hasResourceProperties('AWS::Lambda::CapacityProvider', {
      InstanceRequirements: { AllowedInstanceTypes: DEFAULTS.gpuInstanceTypes, Architectures: ['x86_64'] },
      CapacityProviderScalingConfig: { MaxVCpuCount: DEFAULTS.gpuMaxVCpus, ScalingMode: 'Auto' },
      VpcConfig: {
        SubnetIds: Match.arrayWith([{ Ref: Match.stringLikeRegexp('^VpcprivateSubnet') }]),
        SecurityGroupIds: [{ 'Fn::GetAtt': [Match.stringLikeRegexp('^GpuLambdaInstanceSecurityGroup'), 'GroupId'] }],
      },
    });
    const cp = idOf(s, 'AWS::Lambda::CapacityProvider', 'GpuLambdaCapacityProvider');
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      PackageType: 'Image',
      Architectures: ['x86_64'],
      MemorySize: { Ref: 'GpuMemoryMB' },
      CapacityProviderConfig: {
        LambdaManagedInstancesCapacityProviderConfig: {
          CapacityProviderArn: { 'Fn::GetAtt': [cp, 'Arn'] },
          PerExecutionEnvironmentMaxConcurrency: DEFAULTS.gpuConcurrency,
        },
      },
      FunctionScalingConfig: { MinExecutionEnvironments: 1, MaxExecutionEnvironments: 2 },
      // Set through an escape hatch (aws-cdk-lib 2.276 has no acceleratorConfig).
      AcceleratorConfig: { AcceleratorMemorySize: { Ref: 'GpuAcceleratorMemoryGiB' } },
    });
    s.template.hasResourceProperties('AWS::Lambda::Url', {
      TargetFunctionArn: { 'Fn::GetAtt': [gpuFn, 'Arn'] },
      InvokeMode: 'RESPONSE_STREAM',
    });
    // The image: gpu-lambda/Dockerfile, linux/amd64, staged for `cdk deploy` (synth ran no Docker).
    const images = Object.values(s.assets.dockerImages);
    expect(images).toHaveLength(1);
    expect(images[0].source).toMatchObject({ dockerFile: GPU_DOCKERFILE, platform: 'linux/amd64' });
    expect(existsSync(join(s.outdir, images[0].source.directory, GPU_DOCKERFILE))).toBe(true);
    const imageUri = JSON.stringify(s.json.Resources[gpuFn].Properties!.Code);
    expect(imageUri).toContain('container-assets');
  });

  it('routing: the CPU function forwards large requests to the GPU Function URL with the GPU key', () => {
    const gpuUrl = idOf(s, 'AWS::Lambda::Url', 'GpuLambdaFunctionFunctionUrl');
    expect(functionEnv(s, cpuFn)).toMatchObject({ BITNET_GPU_URL: { 'Fn::GetAtt': [gpuUrl, 'FunctionUrl'] } });
    // a non-streaming answer may take as long as the GPU function may run (gpuTimeoutSeconds)
    expect(functionEnv(s, cpuFn).BITNET_GPU_TIMEOUT_S).toBe('300');
    s.template.hasOutput('GpuEndpointUrl', { Value: { 'Fn::GetAtt': [gpuUrl, 'FunctionUrl'] } });
    s.template.hasOutput('CpuFunctionUrl', Match.anyValue());
    s.template.hasOutput('ShardBucketName', { Value: { Ref: bucketId } });
  });

  it('log retention: every log group expires, every function logs to its own group', () => {
    const groups = idsOf(s, 'AWS::Logs::LogGroup');
    expect(groups.length).toBeGreaterThanOrEqual(2);
    for (const g of groups) expect(s.json.Resources[g].Properties!.RetentionInDays).toBe(DEFAULTS.logRetentionDays);
    for (const fn of idsOf(s, 'AWS::Lambda::Function'))
      expect(groups).toContain(
        (s.json.Resources[fn].Properties!.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref,
      );
  });

  it('alarms: errors, URL 5xx, throttles and p95 latency on both functions, to an SNS topic', () => {
    const topic = idOf(s, 'AWS::SNS::Topic', 'AlarmsTopic');
    for (const fn of [cpuFn, gpuFn]) {
      for (const [metric, stat] of [
        ['Errors', { Statistic: 'Sum' }],
        ['Url5xxCount', { Statistic: 'Sum' }],
        ['Throttles', { Statistic: 'Sum' }],
        ['Duration', { ExtendedStatistic: 'p95' }],
      ] as const) {
        s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
          Namespace: 'AWS/Lambda',
          MetricName: metric,
          Dimensions: [{ Name: 'FunctionName', Value: { Ref: fn } }],
          ...stat,
          ComparisonOperator: 'GreaterThanOrEqualToThreshold',
          TreatMissingData: 'notBreaching',
          AlarmActions: [{ Ref: topic }],
        });
      }
    }
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Duration',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: cpuFn } }],
      Threshold: DEFAULTS.cpuLatencyP95Ms,
    });
  });
});

describe('AWS stack, GPU on ECS with GPU EC2 instances (-c gpu=ecs)', () => {
  let s: Synth;
  beforeAll(() => {
    s = synth({ gpu: 'ecs' }, { bundle: false });
  });

  it('an Auto Scaling group of g6 instances on the ECS GPU-optimized AMI, as the cluster capacity provider', () => {
    const amiParam = Object.entries(s.json.Parameters as Record<string, { Type: string; Default?: string }>).find(
      ([, p]) => p.Default === '/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id',
    );
    expect(amiParam?.[1].Type).toBe('AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>');
    s.template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        InstanceType: 'g6.xlarge',
        ImageId: { Ref: amiParam![0] },
        MetadataOptions: { HttpTokens: 'required' },
        BlockDeviceMappings: [
          { DeviceName: '/dev/xvda', Ebs: Match.objectLike({ Encrypted: true, VolumeType: 'gp3' }) },
        ],
      }),
    });
    s.template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      MinSize: String(DEFAULTS.gpuMinInstances),
      MaxSize: String(DEFAULTS.gpuMaxInstances),
    });
    s.template.hasResourceProperties('AWS::ECS::CapacityProvider', {
      AutoScalingGroupProvider: Match.objectLike({ ManagedScaling: Match.objectLike({ Status: 'ENABLED' }) }),
    });
    s.template.resourceCountIs('AWS::Lambda::CapacityProvider', 0);
  });

  it('a task with one GPU, its key injected by ECS from Secrets Manager, behind an ALB checking /readyz', () => {
    const gpuKey = idOf(s, 'AWS::SecretsManager::Secret', 'GpuApiKey');
    s.template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      RequiresCompatibilities: ['EC2'],
      ContainerDefinitions: [
        Match.objectLike({
          Name: 'gpu',
          ResourceRequirements: [{ Type: 'GPU', Value: '1' }],
          MemoryReservation: { Ref: 'GpuMemoryMB' },
          PortMappings: [Match.objectLike({ ContainerPort: 8080 })],
          Secrets: [{ Name: 'BITNET_API_KEYS', ValueFrom: { Ref: gpuKey } }],
          Environment: Match.arrayWith([Match.objectLike({ Name: 'BITNET_MODEL' })]),
        }),
      ],
    });
    s.template.hasResourceProperties('AWS::ECS::Service', {
      CapacityProviderStrategy: [Match.objectLike({ Weight: 1 })],
      DeploymentConfiguration: Match.objectLike({ MinimumHealthyPercent: 100 }),
    });
    s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
      HealthCheckPath: '/readyz',
      Matcher: { HttpCode: '200' },
    });
    s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Scheme: 'internet-facing' });
    // The task role reads the shard pack, nothing else.
    const taskRole = idOf(s, 'AWS::IAM::Role', 'GpuEcsTaskRole');
    expect(roleStatements(s, taskRole).map((st) => [actions(st), st.Resource])).toEqual([
      [['s3:GetObject'], packObjects(idOf(s, 'AWS::S3::Bucket', 'Shards'))],
    ]);
    // The CPU function routes to the load balancer.
    const cpuFn = idOf(s, 'AWS::Lambda::Function', 'CpuFunction');
    expect(JSON.stringify(functionEnv(s, cpuFn).BITNET_GPU_URL)).toContain('DNSName');
  });

  it('plain HTTP without a certificate is flagged; HTTPS with one', () => {
    Annotations.fromStack(s.stack).hasWarning('*', Match.stringLikeRegexp('plain HTTP'));
    const https = synth(
      {
        gpu: 'ecs',
        gpuCertificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/abc',
        gpuDomainName: 'gpu.example.com',
      },
      { bundle: false },
    );
    https.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Protocol: 'HTTPS',
      Certificates: [{ CertificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/abc' }],
    });
    https.template.hasOutput('GpuEndpointUrl', { Value: 'https://gpu.example.com' });
  });

  it('alarms: target 5xx, load balancer 5xx, p95 target response time, unhealthy tasks', () => {
    for (const metric of ['HTTPCode_Target_5XX_Count', 'HTTPCode_ELB_5XX_Count', 'UnHealthyHostCount'])
      s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/ApplicationELB',
        MetricName: metric,
      });
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'TargetResponseTime',
      ExtendedStatistic: 'p95',
      Threshold: DEFAULTS.gpuLatencyP95Ms / 1000,
    });
    for (const g of idsOf(s, 'AWS::Logs::LogGroup'))
      expect(s.json.Resources[g].Properties!.RetentionInDays).toBe(DEFAULTS.logRetentionDays);
  });
});

describe('AWS stack variants', () => {
  it('-c gpu=none: no VPC, no GPU, no GPU key; the CPU function serves everything', () => {
    const s = synth({ gpu: 'none' }, { bundle: false });
    for (const t of ['AWS::EC2::VPC', 'AWS::Lambda::CapacityProvider', 'AWS::ECS::Cluster'])
      s.template.resourceCountIs(t, 0);
    expect(idsOf(s, 'AWS::SecretsManager::Secret')).toHaveLength(1);
    const env = functionEnv(s, idOf(s, 'AWS::Lambda::Function', 'CpuFunction'));
    expect(env).not.toHaveProperty('BITNET_GPU_URL');
    expect(env).not.toHaveProperty('BITNET_GPU_API_KEY_SECRET_ARN');
  });

  it('-c gpuImageUri=…: an image from ECR instead of the Dockerfile (no Docker asset at all)', () => {
    const uri = '123456789012.dkr.ecr.us-east-1.amazonaws.com/bitnet-gpu:v1';
    const s = synth({ gpuImageUri: uri, stage: 'prod', cpuArchitecture: 'arm64' }, { bundle: false });
    expect(Object.keys(s.assets.dockerImages)).toHaveLength(0);
    const gpuFn = idOf(s, 'AWS::Lambda::Function', 'GpuLambdaFunction');
    expect(JSON.stringify(s.json.Resources[gpuFn].Properties!.Code)).toContain('/bitnet-gpu:v1');
    // prod keeps secrets and logs when the stack is deleted.
    for (const id of idsOf(s, 'AWS::SecretsManager::Secret'))
      expect((s.json.Resources[id] as { DeletionPolicy?: string }).DeletionPolicy).toBe('Retain');
    s.template.hasResourceProperties('AWS::Lambda::Function', { Runtime: 'nodejs22.x', Architectures: ['arm64'] });
  });

  it('context values are checked before anything is built', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ gpu: 'tpu' }, /gpu.*lambda, ecs, none/],
      [{ cpuMemoryMB: 20480 }, /cpuMemoryMB.*128\.\.10240/],
      [{ cpuTimeoutSeconds: 3600 }, /cpuTimeoutSeconds/],
      [{ gpuAcceleratorMemoryGiB: 20 }, /3, 6, 12, 16, 24, 48/],
      [{ gpuInstanceTypes: 'c7i.large' }, /not an x86 NVIDIA Ampere-or-newer/],
      [{ gpuInstanceTypes: 'g5g.xlarge' }, /not an x86 NVIDIA/],
      [{ gpuInstanceTypes: 'g6.xlarge,g4dn.xlarge' }, /"g4dn.xlarge"/],
      [{ modelPrefix: 'models/x' }, /ending in "\/"/],
      [{ gpuMaxVCpus: 4 }, /gpuMaxVCpus/],
      [{ gpuMinInstances: 3, gpuMaxInstances: 2 }, /over gpuMaxInstances/],
      [{ gpuImageUri: 'docker.io/library/ubuntu:24.04' }, /ECR image URI/],
      [{ gpuCertificateArn: 'arn:aws:acm:us-east-1:1:certificate/x' }, /gpuDomainName/],
    ];
    for (const [ctx, msg] of bad) expect(() => loadConfig(fromObject(ctx))).toThrow(msg);
    expect(() => loadConfig(fromObject({}))).not.toThrow(ConfigError);
    // CLI context values are strings; lists are comma-separated.
    expect(loadConfig(fromObject({ cpuMemoryMB: '10240', gpuInstanceTypes: 'g6.2xlarge, g6e.xlarge' }))).toMatchObject({
      cpuMemoryMB: 10240,
      gpuInstanceTypes: ['g6.2xlarge', 'g6e.xlarge'],
    });
  });

  it('without gpu-lambda/Dockerfile (and no gpuImageUri), synth says what to do', () => {
    const empty = tempDirFor('bitnet-no-dockerfile-');
    const app = new App({ outdir: tempDirFor('bitnet-cdk-') });
    expect(
      () =>
        new BitnetStack(app, 'no-image', {
          config: loadConfig(fromObject({})),
          repoRoot,
          gpuImageContext: { directory: empty, file: GPU_DOCKERFILE },
        }),
    ).toThrow(/gpu-lambda\/Dockerfile is missing.*gpuImageUri/);
  });
});
