/**
 * Alarms on errors and latency, all to one SNS topic (with an e-mail subscription when
 * `-c alarmEmail=…` is given). Missing data is "not breaching": an idle endpoint is not an alarm.
 *
 *   Lambda (CPU, GPU): Errors (sum, 5 min), Url5xxCount (sum, 5 min), Throttles, Duration p95.
 *   ECS (GPU):         target 5xx (sum, 5 min), target response time p95, unhealthy hosts.
 *
 * Duration of a streaming function is the whole generation; its p95 threshold is set per endpoint
 * (cpuLatencyP95Ms, gpuLatencyP95Ms) with that in mind.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

const FIVE_MINUTES = Duration.minutes(5);

export class Alarms extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, p: { email?: string }) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'Topic', { displayName: 'bitnet-edge alarms', enforceSSL: true });
    if (p.email) this.topic.addSubscription(new subs.EmailSubscription(p.email));
  }

  private add(id: string, metric: cloudwatch.IMetric, threshold: number, description: string, evaluationPeriods = 1) {
    const alarm = new cloudwatch.Alarm(this, id, {
      metric,
      threshold,
      evaluationPeriods,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: description,
    });
    alarm.addAlarmAction(new actions.SnsAction(this.topic));
    alarm.addOkAction(new actions.SnsAction(this.topic));
    this.alarms.push(alarm);
    return alarm;
  }

  /** Errors, URL 5xx, throttles and p95 duration of a function behind a Function URL. */
  forFunction(name: string, fn: lambda.IFunction, o: { errors: number; latencyP95Ms: number }): void {
    const url5xx = new cloudwatch.Metric({
      namespace: 'AWS/Lambda',
      metricName: 'Url5xxCount',
      dimensionsMap: { FunctionName: fn.functionName },
      statistic: cloudwatch.Stats.SUM,
      period: FIVE_MINUTES,
    });
    this.add(
      `${name}Errors`,
      fn.metricErrors({ period: FIVE_MINUTES, statistic: cloudwatch.Stats.SUM }),
      o.errors,
      `${name}: ${o.errors}+ invocation errors in 5 minutes`,
    );
    this.add(`${name}Url5xx`, url5xx, o.errors, `${name}: ${o.errors}+ Function URL 5xx answers in 5 minutes`);
    this.add(
      `${name}Throttles`,
      fn.metricThrottles({ period: FIVE_MINUTES, statistic: cloudwatch.Stats.SUM }),
      o.errors,
      `${name}: ${o.errors}+ throttled invocations in 5 minutes`,
    );
    this.add(
      `${name}LatencyP95`,
      fn.metricDuration({ period: FIVE_MINUTES, statistic: cloudwatch.Stats.p(95) }),
      o.latencyP95Ms,
      `${name}: p95 duration at or over ${o.latencyP95Ms} ms for 15 minutes`,
      3,
    );
  }

  /** Target 5xx, p95 target response time and unhealthy targets of a load-balanced service. */
  forTargetGroup(
    name: string,
    lb: elbv2.ApplicationLoadBalancer,
    tg: elbv2.ApplicationTargetGroup,
    o: { errors: number; latencyP95Ms: number },
  ): void {
    this.add(
      `${name}Target5xx`,
      tg.metrics.httpCodeTarget(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, {
        period: FIVE_MINUTES,
        statistic: cloudwatch.Stats.SUM,
      }),
      o.errors,
      `${name}: ${o.errors}+ target 5xx answers in 5 minutes`,
    );
    this.add(
      `${name}Elb5xx`,
      lb.metrics.httpCodeElb(elbv2.HttpCodeElb.ELB_5XX_COUNT, {
        period: FIVE_MINUTES,
        statistic: cloudwatch.Stats.SUM,
      }),
      o.errors,
      `${name}: ${o.errors}+ load balancer 5xx answers in 5 minutes (no healthy target, timeouts)`,
    );
    this.add(
      `${name}LatencyP95`,
      tg.metrics.targetResponseTime({ period: FIVE_MINUTES, statistic: cloudwatch.Stats.p(95) }),
      o.latencyP95Ms / 1000,
      `${name}: p95 target response time at or over ${o.latencyP95Ms} ms for 15 minutes`,
      3,
    );
    this.add(
      `${name}Unhealthy`,
      tg.metrics.unhealthyHostCount({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
      1,
      `${name}: a GPU task is failing its /readyz health check`,
      5,
    );
  }
}
