/**
 * One macrotask turn. The backends that compute synchronously inside their promises (reference,
 * wasm) would otherwise run a whole generation in microtasks, and the batching backends (wasm,
 * cuda) wait one turn before a step so that every sequence whose previous step just resolved
 * joins the next. setImmediate where it exists (Node: no 1 ms clamp), setTimeout(0) elsewhere
 * (workerd, browsers).
 */
const schedule: (f: () => void) => void =
  (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => void setTimeout(f, 0));

/** Runs f after one macrotask turn. */
export function defer(f: () => void): void {
  schedule(f);
}

/** Resolves after one macrotask turn. */
export function nextTurn(): Promise<void> {
  return new Promise((r) => schedule(r));
}
