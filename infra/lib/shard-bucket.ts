/**
 * The S3 bucket for shard packs (docs/shard-pack.md): private, encrypted, versioned, TLS only.
 * A pack lives under one prefix (`<prefix>manifest.json`, `<prefix>shard-NNNNN.bin`); readers get
 * `s3:GetObject` on that prefix and nothing else (no listing, no writes).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export class ShardBucket extends Construct {
  readonly bucket: s3.Bucket;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // SSE-S3: readers need no KMS grant. A customer key would add kms:Decrypt to every reader.
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      // Shards are large and immutable per pack version; old versions are kept a month for rollback.
      lifecycleRules: [
        { id: 'expire-old-versions', noncurrentVersionExpiration: Duration.days(30) },
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      // The weights outlive the stack: deleting the stack leaves the bucket and its objects.
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  /** Read access to one pack: `s3:GetObject` on `<prefix>*` (HeadObject is authorised by GetObject). */
  readPackStatement(prefix: string): iam.PolicyStatement {
    return new iam.PolicyStatement({
      sid: 'ReadShardPack',
      actions: ['s3:GetObject'],
      resources: [this.bucket.arnForObjects(`${prefix}*`)],
    });
  }
}
