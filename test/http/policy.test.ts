// The pieces with state or policy, alone: the limiter, the circuit breaker, the routing policy.
import { describe, expect, it } from 'vitest';
import { isBitNetError } from '../../src/errors.ts';
import { CircuitBreaker } from '../../src/http/circuit-breaker.ts';
import { Limiter } from '../../src/http/limiter.ts';
import { Router } from '../../src/http/router.ts';

describe('Limiter', () => {
  it('runs maxConcurrent, queues maxQueue in order, refuses the rest with QUEUE_FULL', async () => {
    const l = new Limiter({ maxConcurrent: 2, maxQueue: 2, retryAfterSeconds: 5 });
    const r1 = await l.acquire();
    const r2 = await l.acquire();
    const order: number[] = [];
    const q3 = l.acquire().then((r) => {
      order.push(3);
      return r;
    });
    const q4 = l.acquire().then((r) => {
      order.push(4);
      return r;
    });
    expect([l.active, l.queued]).toEqual([2, 2]);
    const e = await l.acquire().catch((x) => x);
    expect(isBitNetError(e) && e.code).toBe('QUEUE_FULL');
    expect(e.details.retryAfterSeconds).toBe(5);
    r1();
    r1(); // idempotent
    const r3 = await q3;
    expect([l.active, l.queued]).toEqual([2, 1]);
    r2();
    const r4 = await q4;
    expect(order).toEqual([3, 4]);
    r3();
    r4();
    expect([l.active, l.queued]).toEqual([0, 0]);
  });

  it('an aborted waiter leaves the queue with CANCELLED', async () => {
    const l = new Limiter({ maxConcurrent: 1, maxQueue: 3 });
    const r = await l.acquire();
    const ac = new AbortController();
    const p = l.acquire(ac.signal);
    expect(l.queued).toBe(1);
    ac.abort();
    expect((await p.catch((x) => x)).code).toBe('CANCELLED');
    expect(l.queued).toBe(0);
    r();
    expect(l.active).toBe(0);
  });
});

describe('CircuitBreaker', () => {
  it('opens after N consecutive failures, probes once after the wait, closes on a good probe', async () => {
    let t = 0;
    const states: string[] = [];
    const b = new CircuitBreaker(
      { failureThreshold: 2, openMs: 1000 },
      () => t,
      (s) => states.push(s),
    );
    let probes = 0;
    const good = async () => {
      probes++;
      return true;
    };
    const bad = async () => {
      probes++;
      return false;
    };
    b.failure();
    b.success(); // resets the count
    b.failure();
    expect(b.state).toBe('closed');
    b.failure();
    expect(b.state).toBe('open');
    expect(await b.allow(good)).toBe(false); // still waiting
    expect(probes).toBe(0);
    t = 1000;
    expect(await b.allow(bad)).toBe(false); // half-open probe fails → open again, wait restarts
    expect(b.state).toBe('open');
    t = 1500;
    expect(await b.allow(good)).toBe(false);
    t = 2000;
    const [x, y] = await Promise.all([b.allow(good), b.allow(good)]); // one shared probe
    expect([x, y]).toEqual([true, true]);
    expect(probes).toBe(2);
    expect(b.state).toBe('closed');
    expect(states).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
  });
});

describe('Router policy', () => {
  const mk = (o: ConstructorParameters<typeof Router>[0]) =>
    new Router(
      o,
      () => 0,
      async () => new Response('ok'),
    );
  const input = (work: number, extra = {}) => ({
    work,
    modelBytes: 1000,
    contextLength: 128,
    forwarded: false,
    ...extra,
  });

  it('without a GPU everything is local', async () => {
    expect(await mk({}).decide(input(10_000))).toMatchObject({ route: 'edge', reason: 'no-gpu' });
  });

  it('small work stays on the edge, large work goes to the GPU', async () => {
    const r = mk({ gpu: { url: 'http://gpu' }, edgeMaxTokens: 64 });
    expect(await r.decide(input(64))).toMatchObject({ route: 'edge', reason: 'small', localCapable: true });
    expect(await r.decide(input(65))).toMatchObject({ route: 'gpu', reason: 'large', localCapable: true });
    expect(await r.decide(input(500))).toMatchObject({ route: 'gpu', reason: 'large', localCapable: false });
    expect(await r.decide(input(500, { forwarded: true }))).toMatchObject({ route: 'edge', reason: 'forwarded' });
  });

  it('a model over the memory budget never runs locally', async () => {
    const r = mk({ gpu: { url: 'http://gpu' }, localMemoryBudgetBytes: 999 });
    expect(await r.decide(input(1))).toMatchObject({ route: 'gpu', reason: 'model-too-large', localCapable: false });
    expect(r.fitsMemory(999)).toBe(true);
  });

  it('with the circuit open: local if it fits, else GPU_UNAVAILABLE', async () => {
    const r = mk({
      gpu: { url: 'http://gpu' },
      edgeMaxTokens: 8,
      localMaxTokens: 100,
      breaker: { failureThreshold: 1, openMs: 5000 },
    });
    r.breaker.failure();
    expect(await r.decide(input(50))).toMatchObject({ route: 'edge', reason: 'gpu-unavailable' });
    const e = await r.decide(input(101)).catch((x) => x);
    expect([e.code, e.details.retryAfterSeconds]).toEqual(['GPU_UNAVAILABLE', 5]);
  });
});
