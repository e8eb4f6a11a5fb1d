// Runs the `bitnet` CLI from source in a child process (same Node as the test) and returns its
// exit code and output, a non-zero exit included (the error paths are what many tests check).
// At most two run at once (CI has 2 cores): a test may start a batch of them together.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

let running = 0;
const waiting: (() => void)[] = [];

export async function bitnet(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  if (running >= 2) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    const r = await exec(process.execPath, ['bin/bitnet.js', ...args], { maxBuffer: 64 << 20 });
    return { code: 0, ...r };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  } finally {
    running--;
    waiting.shift()?.();
  }
}
