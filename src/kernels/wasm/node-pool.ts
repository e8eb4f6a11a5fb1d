/**
 * Node worker pool for the wasm backend (Node, AWS Lambda, the container). Imported lazily by
 * backend.ts, so `node:worker_threads` is loaded only where threads are asked for.
 *
 * Each worker instantiates the same compiled module over the same shared memory and sits in the
 * kernel's worker_loop (wasm/src/forward.ts): it waits (atomics) for the job counter to move, runs
 * its share of forward(rc, tid), meets the others at the barriers, and waits again. The workers
 * are unref'd so an idle pool never keeps the process alive.
 */
import { Worker } from 'node:worker_threads';
import type { ThreadPool } from './backend.ts';

export interface PoolInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  rc: number;
  f16Table: number;
  workers: number;
}

class NodePool implements ThreadPool {
  readonly size: number;
  private readonly workers: Worker[];
  constructor(workers: Worker[]) {
    this.workers = workers;
    this.size = workers.length;
  }
  dispose(): void {
    // the kernel's exit flag has been raised by the backend; terminate() is the backstop
    for (const w of this.workers) void w.terminate();
  }
}

export async function startNodePool(init: PoolInit): Promise<ThreadPool> {
  const url = new URL('./node-worker.ts', import.meta.url);
  const workers: Worker[] = [];
  try {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < init.workers; i++) {
      const w = new Worker(url, {
        workerData: { module: init.module, memory: init.memory, rc: init.rc, f16Table: init.f16Table, tid: i + 1 },
      });
      workers.push(w);
      ready.push(
        new Promise<void>((resolve, reject) => {
          w.once('message', (msg: unknown) => (msg === 'ready' ? resolve() : reject(new Error(String(msg)))));
          w.once('error', reject);
          w.once('exit', (code) => reject(new Error(`worker exited with code ${code} before it was ready`)));
        }),
      );
    }
    await Promise.all(ready);
    for (const w of workers) w.unref();
    return new NodePool(workers);
  } catch (e) {
    for (const w of workers) void w.terminate();
    throw e;
  }
}
