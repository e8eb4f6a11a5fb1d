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

describe('Router: max_tokens capped at the context, Retry-After, x-bitnet-forwarded', () => {
  const CTX = 4096;
  const req = (promptTokens: number, maxTokens: number) => ({
    work: promptTokens + maxTokens,
    promptTokens,
    modelBytes: 1000,
    contextLength: CTX,
    forwarded: false,
  });

  it('max_tokens = the context with a small prompt: GPU while it is up, the edge when it is down', async () => {
    let t = 0;
    const r = new Router(
      { gpu: { url: 'http://gpu' }, edgeMaxTokens: 512, breaker: { failureThreshold: 1, openMs: 10_000 } },
      () => t,
      async () => new Response('ok'),
    );
    expect(await r.decide(req(10, CTX))).toMatchObject({ route: 'gpu', reason: 'large', localCapable: true });
    expect(await r.decide(req(10, 1 << 20))).toMatchObject({ route: 'gpu', localCapable: true });
    expect(await r.decide(req(10, 100))).toMatchObject({ route: 'edge', reason: 'small' });
    r.breaker.failure(); // open
    t = 1;
    expect(await r.decide(req(10, CTX))).toMatchObject({ route: 'edge', reason: 'gpu-unavailable' });
    expect(await r.decide(req(CTX - 1, CTX))).toMatchObject({ route: 'edge', reason: 'gpu-unavailable' });
    // a prompt the context cannot hold is not made to fit by the cap
    const e = await r.decide(req(CTX + 1, 10)).catch((x) => x);
    expect(e.code).toBe('GPU_UNAVAILABLE');
    // without the prompt's share (older callers) the work is taken as given
    const old = await r.decide({ ...req(10, CTX), promptTokens: undefined }).catch((x) => x);
    expect(old.code).toBe('GPU_UNAVAILABLE');
  });

  it('an explicit localMaxTokens still bounds the capped work', async () => {
    const r = new Router(
      { gpu: { url: 'http://gpu' }, edgeMaxTokens: 8, localMaxTokens: 100, breaker: { failureThreshold: 1 } },
      () => 0,
      async () => new Response('ok'),
    );
    r.breaker.failure();
    expect(await r.decide({ ...req(50, 50), contextLength: 128 })).toMatchObject({ route: 'edge' });
    // 50 + min(1000, 128 − 50) = 128 > 100
    expect((await r.decide({ ...req(50, 1000), contextLength: 128 }).catch((x) => x)).code).toBe('GPU_UNAVAILABLE');
  });

  it('Retry-After is the time left until the breaker probes again (ceil seconds, at least 1)', async () => {
    let t = 0;
    const r = new Router(
      {
        gpu: { url: 'http://gpu' },
        edgeMaxTokens: 8,
        localMaxTokens: 100,
        breaker: { failureThreshold: 1, openMs: 10_000 },
      },
      () => t,
      async () => new Response('ok'),
    );
    expect(r.retryAfterSeconds()).toBe(1); // closed: asking again may work at once
    r.breaker.failure();
    const retry = async () => (await r.decide({ ...req(50, 500), contextLength: 8192 }).catch((x) => x)).details;
    expect((await retry()).retryAfterSeconds).toBe(10);
    t = 3_500;
    expect((await retry()).retryAfterSeconds).toBe(7);
    expect(r.breaker.retryAfterMs()).toBe(6_500);
    t = 9_999;
    expect((await retry()).retryAfterSeconds).toBe(1);
  });

  it('x-bitnet-forwarded is trusted only with this instance’s GPU key (or where nothing can be checked)', async () => {
    const withKey = new Router({ gpu: { url: 'http://gpu', apiKey: 'gpu-secret' } }, () => 0);
    expect(await withKey.trustsForwarded('Bearer gpu-secret')).toBe(true);
    expect(await withKey.trustsForwarded('bearer  gpu-secret ')).toBe(true);
    for (const a of ['Bearer client-key', 'Bearer gpu-secre', 'gpu-secret', '', undefined, null])
      expect([a, await withKey.trustsForwarded(a)]).toEqual([a, false]);
    expect(await new Router({}, () => 0).trustsForwarded(undefined)).toBe(true); // no GPU: changes nothing
    expect(await new Router({ gpu: { url: 'http://gpu' } }, () => 0).trustsForwarded('Bearer x')).toBe(true);
  });
});

describe('CircuitBreaker.retryAfterMs', () => {
  it('counts down while open, 0 otherwise', async () => {
    let t = 100;
    const b = new CircuitBreaker({ failureThreshold: 1, openMs: 1000 }, () => t);
    expect(b.retryAfterMs()).toBe(0);
    b.failure();
    expect(b.retryAfterMs()).toBe(1000);
    t = 700;
    expect(b.retryAfterMs()).toBe(400);
    t = 5000;
    expect(b.retryAfterMs()).toBe(0);
    expect(await b.allow(async () => true)).toBe(true);
    expect(b.retryAfterMs()).toBe(0);
  });
});
