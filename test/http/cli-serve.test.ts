// `bitnet serve` as a user starts it (the npm start path): the demo model when no model is given,
// labelled as random weights; keys from BITNET_API_KEYS; loopback only without keys.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { DEMO_MODEL_ID, DEMO_MODEL_PATH } from '../../src/cli/serve.ts';
import { synthBytes } from '../helpers/models.ts';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts `bitnet serve …` and resolves with its URL and output once it listens. */
function serve(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['bin/bitnet.ts', 'serve', '--port', '0', ...args], {
    env: { ...process.env, BITNET_API_KEYS: '', BITNET_MODEL: '', ...env },
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const url = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`serve exited: ${err}`)));
  });
  return { child, url, exited, output: () => ({ out, err }) };
}

describe('bitnet serve', () => {
  it('npm start path: builds the demo model, serves it labelled as random weights, stops on SIGTERM', async () => {
    await promisify(execFile)(process.execPath, ['scripts/build-demo-model.ts']);
    expect(existsSync(DEMO_MODEL_PATH)).toBe(true);
    const s = serve([], { BITNET_API_KEYS: 'k1,k2' });
    const url = await s.url;
    expect(s.output().err).toMatch(/RANDOM WEIGHTS/);
    expect((await fetch(`${url}/v1/models`)).status).toBe(401);
    const models = await (await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer k2' } })).json();
    expect(models.data[0].id).toBe(DEMO_MODEL_ID);
    expect(models.data[0].id).toMatch(/random-weights/);
    expect(models.data[0].description).toMatch(/random weights/);
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer k1', 'content-type': 'application/json' },
      body: JSON.stringify({ model: DEMO_MODEL_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }),
    });
    expect((await r.json()).model).toBe(DEMO_MODEL_ID);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('--model (or BITNET_MODEL); without keys it binds 127.0.0.1 only and warns', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitnet-serve-'));
    const f = join(dir, 'm.gguf');
    await writeFile(f, await synthBytes({ qtype: 'i2_s', seed: 2, arch: 'bitnet-b1.58' }));
    const s = serve(['--host', '0.0.0.0', '--model-id', 'mine'], { BITNET_MODEL: f });
    const url = await s.url;
    expect(url.startsWith('http://127.0.0.1:')).toBe(true);
    expect(s.output().err).toMatch(/no API key configured: binding to 127\.0\.0\.1 instead of 0\.0\.0\.0/);
    expect((await (await fetch(`${url}/v1/models`)).json()).data[0].id).toBe('mine');
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('a model over --memory-budget is never loaded: every generation goes to the GPU endpoint', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitnet-serve-'));
    const f = join(dir, 'big.gguf');
    await writeFile(f, await synthBytes({ qtype: 'i2_s', seed: 3, arch: 'bitnet-b1.58' }));
    const alone = serve(['--model', f, '--memory-budget', '1000']);
    await expect(alone.url).rejects.toThrow(/over --memory-budget 1000 and no --gpu-url/);
    // port 9 (discard) on loopback: nothing listens, so the GPU call fails before the first byte
    const s = serve(['--model', f, '--memory-budget', '1000', '--gpu-url', 'http://127.0.0.1:9', '--model-id', 'big']);
    const url = await s.url;
    expect(s.output().out).toMatch(/not loaded: over the memory budget/);
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'big', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
    });
    expect(r.status).toBe(503);
    expect(r.headers.get('x-bitnet-route')).toBe('gpu');
    expect(r.headers.get('x-bitnet-route-reason')).toBe('model-too-large');
    expect((await r.json()).error.code).toBe('GPU_UNAVAILABLE');
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('without --model-id, the startup line and --json name the id clients must send', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitnet-serve-'));
    const f = join(dir, 'm.gguf');
    await writeFile(f, await synthBytes({ qtype: 'i2_s', seed: 4, arch: 'bitnet-b1.58' }));
    const s = serve(['--model', f]);
    const url = await s.url;
    const id = (await (await fetch(`${url}/v1/models`)).json()).data[0].id;
    expect(id).toMatch(/^[a-z0-9.-]+$/); // the slug of the model's name, not the name itself
    expect(s.output().out).toContain(`(model ${id}, backend `);
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: id, prompt: 'hi', max_tokens: 1 }),
    });
    expect(r.status).toBe(200);
    await r.json();
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);

    // --json: one line with the URL and the served id (the key used to be missing)
    const j = spawn(process.execPath, ['bin/bitnet.ts', 'serve', '--port', '0', '--json', '--model', f], {
      env: { ...process.env, BITNET_API_KEYS: '', BITNET_MODEL: '' },
    });
    children.push(j);
    let out = '';
    const line = await new Promise<string>((resolve, reject) => {
      j.stdout.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve(out.split('\n')[0]);
      });
      j.on('exit', () => reject(new Error(`serve --json exited: ${out}`)));
    });
    const o = JSON.parse(line);
    expect(o.model).toBe(id);
    expect(o.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await (await fetch(`${o.url}/v1/models/${o.model}`)).json()).id).toBe(id);
    j.kill('SIGTERM');
  });

  it('bad flags are errors with a code', async () => {
    const s = serve(['--port', 'x']);
    await expect(s.url).rejects.toThrow(/BAD_FLAG/);
    expect(await s.exited).toBe(1);
  });
});
