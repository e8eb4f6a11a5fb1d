/** A wasm kernel thread (see node-pool.ts): instantiate, report ready, then serve jobs until told to exit. */
import { parentPort, workerData } from 'node:worker_threads';
import { RC } from './exports.ts';
import { instantiate } from './loader.ts';

const { module, memory, rc, f16Table, tid } = workerData as {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  rc: number;
  f16Table: number;
  tid: number;
};
const k = instantiate(module, memory);
k.set_tables(f16Table);
// The job counter before we report ready: the first job will move it past this value.
const seen = Atomics.load(new Int32Array(memory.buffer, rc + RC.jobSeq, 1), 0);
parentPort!.postMessage('ready');
k.worker_loop(rc, tid, seen);
