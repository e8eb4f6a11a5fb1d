/**
 * The GPU endpoint's alternative (`-c gpu=ecs`): the same container image as an ECS service on GPU
 * EC2 instances, behind an Application Load Balancer.
 *
 *   Auto Scaling group of NVIDIA instances (g6.xlarge by default), launch template with the ECS
 *   GPU-optimized Amazon Linux 2023 AMI (resolved from its public SSM parameter at deploy time),
 *   IMDSv2 only, encrypted gp3 root volume
 *     → ECS capacity provider (managed scaling: instances follow the tasks)
 *     → EC2 task definition, one container with `gpuCount: 1` (the agent pins one GPU per task)
 *     → service behind an ALB (HTTPS with `-c gpuCertificateArn=… -c gpuDomainName=…`, else HTTP),
 *       health check on /readyz.
 *
 * The key reaches the container as BITNET_API_KEYS through ECS's own secrets injection (the
 * execution role reads the secret at task start); the task role reads the shard pack.
 */
import { Annotations, Duration, type RemovalPolicy } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ecrImage, type GpuImageSource, gpuAssetOptions } from './gpu-image.ts';

export interface GpuEcsProps {
  vpc: ec2.IVpc;
  image: GpuImageSource;
  instanceType: string;
  /** Container memory reservation, MiB. */
  memoryMB: number;
  minInstances: number;
  maxInstances: number;
  port: number;
  timeoutSeconds: number;
  concurrency: number;
  certificateArn?: string;
  domainName?: string;
  modelLocation: string;
  modelId: string;
  maxQueue: string;
  readModel: iam.PolicyStatement;
  apiKey: secretsmanager.ISecret;
  logRetention: logs.RetentionDays;
  removalPolicy: RemovalPolicy;
}

export const GPU_CONTAINER = 'gpu';

export class GpuEcs extends Construct {
  readonly cluster: ecs.Cluster;
  readonly service: ecs.Ec2Service;
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  readonly targetGroup: elbv2.ApplicationTargetGroup;
  readonly taskRole: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly url: string;

  constructor(scope: Construct, id: string, p: GpuEcsProps) {
    super(scope, id);
    this.cluster = new ecs.Cluster(this, 'Cluster', { vpc: p.vpc });

    const instanceSg = new ec2.SecurityGroup(this, 'InstanceSecurityGroup', {
      vpc: p.vpc,
      description: 'bitnet-edge GPU container instances (inbound only from the load balancer)',
      allowAllOutbound: true,
    });
    const instanceRole = new iam.Role(this, 'InstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'bitnet-edge GPU container instance (the ECS agent)',
    });
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: new ec2.InstanceType(p.instanceType),
      machineImage: ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU),
      userData: ec2.UserData.forLinux(),
      role: instanceRole,
      securityGroup: instanceSg,
      requireImdsv2: true,
      // The CUDA image is large; the AMI's default root volume is not.
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(100, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
        },
      ],
    });
    const asg = new autoscaling.AutoScalingGroup(this, 'Instances', {
      vpc: p.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      launchTemplate,
      minCapacity: p.minInstances,
      maxCapacity: p.maxInstances,
    });
    const capacity = new ecs.AsgCapacityProvider(this, 'GpuCapacity', {
      autoScalingGroup: asg,
      enableManagedScaling: true,
      enableManagedTerminationProtection: true,
    });
    this.cluster.addAsgCapacityProvider(capacity);

    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: p.logRetention, removalPolicy: p.removalPolicy });
    this.taskRole = new iam.Role(this, 'TaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'bitnet-edge GPU task: read its shard pack',
    });
    this.taskRole.addToPolicy(p.readModel);
    const task = new ecs.Ec2TaskDefinition(this, 'Task', { taskRole: this.taskRole });
    const image =
      p.image.kind === 'asset'
        ? ecs.ContainerImage.fromAsset(p.image.directory, gpuAssetOptions(p.image.file))
        : (() => {
            const { repository, tagOrDigest } = ecrImage(this, 'Repository', p.image.uri);
            return ecs.ContainerImage.fromEcrRepository(repository, tagOrDigest);
          })();
    task.addContainer(GPU_CONTAINER, {
      image,
      gpuCount: 1,
      memoryReservationMiB: p.memoryMB,
      portMappings: [{ containerPort: p.port }],
      environment: {
        BITNET_MODEL: p.modelLocation,
        BITNET_MODEL_ID: p.modelId,
        BITNET_MAX_CONCURRENT: String(p.concurrency),
        BITNET_MAX_QUEUE: p.maxQueue,
        PORT: String(p.port),
      },
      secrets: { BITNET_API_KEYS: ecs.Secret.fromSecretsManager(p.apiKey) },
      logging: ecs.LogDrivers.awsLogs({ streamPrefix: 'gpu', logGroup: this.logGroup }),
    });

    this.service = new ecs.Ec2Service(this, 'Service', {
      cluster: this.cluster,
      taskDefinition: task,
      desiredCount: p.minInstances,
      capacityProviderStrategies: [{ capacityProvider: capacity.capacityProviderName, weight: 1 }],
      // One GPU per task: a deployment starts the new task (the capacity provider adds an
      // instance) before it stops the old one.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
    });

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'LoadBalancer', {
      vpc: p.vpc,
      internetFacing: true,
      dropInvalidHeaderFields: true,
      // Streams pause while a long prompt is prefilled; the first token may take a while.
      idleTimeout: Duration.seconds(Math.min(4000, Math.max(60, p.timeoutSeconds))),
    });
    const listener = p.certificateArn
      ? this.loadBalancer.addListener('Https', {
          port: 443,
          certificates: [elbv2.ListenerCertificate.fromArn(p.certificateArn)],
          sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
        })
      : this.loadBalancer.addListener('Http', { port: 80 });
    if (!p.certificateArn)
      Annotations.of(this).addWarningV2(
        'bitnet:gpu-ecs-http',
        'The GPU load balancer listens on plain HTTP: the GPU key crosses the internet in clear. Pass -c gpuCertificateArn=… -c gpuDomainName=… for HTTPS.',
      );
    this.targetGroup = listener.addTargets('Gpu', {
      port: p.port,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targets: [this.service.loadBalancerTarget({ containerName: GPU_CONTAINER, containerPort: p.port })],
      healthCheck: { path: '/readyz', healthyHttpCodes: '200', interval: Duration.seconds(15) },
      deregistrationDelay: Duration.seconds(30),
    });
    this.url = p.certificateArn
      ? `https://${p.domainName ?? this.loadBalancer.loadBalancerDnsName}`
      : `http://${this.loadBalancer.loadBalancerDnsName}`;
  }
}
