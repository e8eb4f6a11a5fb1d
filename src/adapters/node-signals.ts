/**
 * SIGTERM/SIGINT for a Node server process (`bitnet serve`, gpu-lambda/server.ts): the first
 * signal drains (the server stops accepting, /readyz answers 503, requests in flight get up to
 * the grace period to finish), a second one cuts what is left at once. Container platforms (ECS,
 * Lambda Managed Instances) send SIGTERM before they stop an instance: draining lets the streams in
 * flight end with their final event instead of an error.
 */
import type { RunningServer } from './node.ts';

/**
 * Installs the handlers now (before the caller announces the server, so that whoever waits for
 * that line can signal at once) and resolves when the drain after the first signal has finished.
 */
export function drainOnSignals(server: RunningServer, graceMs: number, label: string): Promise<void> {
  const again = (sig: string) => {
    console.error(`${label}: ${sig} again: cutting ${server.inFlight} request(s) in flight now`);
    server.close().catch(() => {}); // the first signal's shutdown() reports how closing went
  };
  // The second handler goes in before the first goes out: never a moment with the default action.
  const signalled = new Promise<string>((resolve) => {
    const first = (sig: string) => {
      process.on('SIGINT', again);
      process.on('SIGTERM', again);
      process.off('SIGINT', first);
      process.off('SIGTERM', first);
      resolve(sig);
    };
    process.on('SIGINT', first);
    process.on('SIGTERM', first);
  });
  return signalled.then(async (sig) => {
    try {
      const n = server.inFlight;
      if (n > 0)
        console.error(
          `${label}: ${sig}: draining ${n} request(s) in flight (up to ${graceMs / 1000} s; a second signal cuts them now)`,
        );
      const r = await server.shutdown(graceMs);
      if (r.cut > 0) console.error(`${label}: cut ${r.cut} request(s) still in flight after the grace period`);
    } finally {
      process.off('SIGINT', again);
      process.off('SIGTERM', again);
    }
  });
}
