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
import { RC } from './exports.ts';

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

/**
 * The worker's whole program, run as an eval'd CommonJS script so that no second file has to
 * travel with the code: bundles (scripts/bundle.ts, the stack's NodejsFunction, the container)
 * carry one .mjs, and a `new URL('./worker.ts', import.meta.url)` would not exist beside it.
 * It instantiates the module over the shared memory with the imports the module asks for (the
 * same values as loader.ts kernelImports: memory, Math.exp, a throwing abort), reports ready with
 * the job counter it saw, and serves jobs in worker_loop until the backend raises the exit flag.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { module, memory, rc, f16Table, tid, jobSeqOffset } = workerData;
const env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module !== 'env') throw new Error('unexpected kernel import ' + imp.module + '.' + imp.name);
  if (imp.name === 'memory') env.memory = memory;
  else if (imp.name === 'exp') env.exp = Math.exp;
  else if (imp.name === 'abort') env.abort = () => { throw new Error('wasm kernel abort'); };
  else throw new Error('unexpected kernel import env.' + imp.name);
}
const k = new WebAssembly.Instance(module, { env }).exports;
k.set_tables(f16Table);
// the job counter before we report ready: the first job will move it past this value
const seen = Atomics.load(new Int32Array(memory.buffer, rc + jobSeqOffset, 1), 0);
parentPort.postMessage('ready');
k.worker_loop(rc, tid, seen);
`;

export async function startNodePool(init: PoolInit): Promise<ThreadPool> {
  const workers: Worker[] = [];
  try {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < init.workers; i++) {
      const w = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: {
          module: init.module,
          memory: init.memory,
          rc: init.rc,
          f16Table: init.f16Table,
          tid: i + 1,
          jobSeqOffset: RC.jobSeq,
        },
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
