// `bitnet serve` as a user starts it (the npm start path): the demo model when no model is given,
// labelled as random weights; keys from BITNET_API_KEYS; loopback only without keys.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { DEMO_MODEL_ID, DEMO_MODEL_PATH } from '../../src/cli/serve.ts';
import { synthBytes } from '../helpers/models.ts';
import { makeFixture } from '../sources/util.ts';
import { readUntil, sseData, waitFor } from './helpers.ts';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts `bitnet serve …` and resolves with its URL and output once it listens. */
function serve(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['bin/bitnet.js', 'serve', '--port', '0', ...args], {
    env: { ...process.env, BITNET_API_KEYS: '', BITNET_MODEL: '', ...env },
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) =>
    child.on('exit', (code, sig) => {
      if (sig) err += `\n[exited on ${sig}]`;
      r(code);
    }),
  );
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
    const j = spawn(process.execPath, ['bin/bitnet.js', 'serve', '--port', '0', '--json', '--model', f], {
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
    expect(await s.exited).toBe(2); // a bad flag value is a usage error (README, "The CLI")
    const pc = serve(['--prompt-cache', '-1']);
    await expect(pc.url).rejects.toThrow(/BAD_FLAG\]: --prompt-cache must be an integer >= 0/);
    const pcEnv = serve([], { BITNET_PROMPT_CACHE: 'lots' });
    await expect(pcEnv.url).rejects.toThrow(/INVALID_ENV\]: BITNET_PROMPT_CACHE must be a non-negative integer/);
    const mb = serve(['--max-batch', '17']);
    await expect(mb.url).rejects.toThrow(/BAD_FLAG\]: --max-batch must be an integer >= 1 <= 16/);
    const mbEnv = serve([], { BITNET_MAX_BATCH: '0' });
    await expect(mbEnv.url).rejects.toThrow(/INVALID_ENV\]: BITNET_MAX_BATCH/);
    const mbBig = serve([], { BITNET_MAX_BATCH: '99' }); // the flag's limit holds for the variable too
    await expect(mbBig.url).rejects.toThrow(/INVALID_ENV\]: BITNET_MAX_BATCH must be a positive integer of at most 16/);
    expect(await mbBig.exited).toBe(1);
    // a bad GPU URL names where it came from: the flag (usage error, 2) or the variable (1)
    const gFlag = serve(['--gpu-url', 'http://']);
    await expect(gFlag.url).rejects.toThrow(/BAD_FLAG\]: --gpu-url must be an absolute http\(s\) URL/);
    expect(await gFlag.exited).toBe(2);
    const yg = serve([], { BITNET_V8_YOUNG_GEN: 'bogus' });
    await expect(yg.url).rejects.toThrow(/INVALID_ENV\]: BITNET_V8_YOUNG_GEN must be small or default, got "bogus"/);
    const gEnv = serve([], { BITNET_GPU_URL: 'not-a-url' });
    await expect(gEnv.url).rejects.toThrow(/INVALID_ENV\]: BITNET_GPU_URL must be an absolute http\(s\) URL/);
    expect(await gEnv.exited).toBe(1);
  });
});

/**
 * A model slow enough that a long generation is still running when a test acts: about 2 ms a
 * token, and seed 1 with this prompt runs the full 1000 tokens (no end-of-text).
 */
async function slowModelFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bitnet-serve-'));
  const f = join(dir, 'slow.gguf');
  await writeFile(
    f,
    await synthBytes({
      qtype: 'i2_s',
      seed: 4,
      arch: 'bitnet-b1.58',
      hidden: 512,
      layers: 4,
      heads: 8,
      kvHeads: 4,
      ffn: 1024,
      ctx: 1024,
    }),
  );
  return f;
}

const longStream = (url: string) =>
  fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'slow', prompt: 'hi', max_tokens: 1000, seed: 1, temperature: 0.8, stream: true }),
  });

describe('bitnet serve: shutdown, request timeout, checksums', () => {
  it('SIGTERM drains: the stream in flight finishes with [DONE], then the process exits 0', async () => {
    const s = serve(['--model', await slowModelFile(), '--model-id', 'slow', '--shutdown-grace', '300']);
    const url = await s.url;
    const stream = await readUntil(await longStream(url), (t) => sseData(t).length >= 1);
    s.child.kill('SIGTERM');
    const data = sseData(await stream.rest());
    expect(data.at(-1)).toBe('[DONE]');
    expect(data.some((d) => d.includes('"error"'))).toBe(false);
    expect(JSON.parse(data.at(-2)!).choices[0].finish_reason).toBe('length');
    expect(await s.exited).toBe(0);
    expect(s.output().err).toMatch(/SIGTERM: draining 1 request\(s\) in flight \(up to 300 s/);
    expect(s.output().err).not.toMatch(/cut \d+ request/);
  });

  it('BITNET_SHUTDOWN_GRACE_S=0: exits at once; the stream ends with a SHUTTING_DOWN error event, no [DONE]', async () => {
    const s = serve(['--model', await slowModelFile(), '--model-id', 'slow'], { BITNET_SHUTDOWN_GRACE_S: '0' });
    const url = await s.url;
    const stream = await readUntil(await longStream(url), (t) => sseData(t).length >= 1);
    s.child.kill('SIGTERM');
    const data = sseData(await stream.rest());
    expect(data).not.toContain('[DONE]');
    expect(JSON.parse(data.at(-1)!).error.code).toBe('SHUTTING_DOWN');
    expect(await s.exited).toBe(0);
    expect(s.output().err).toMatch(/cut 1 request\(s\) still in flight/);
  });

  it('a second signal cuts at once', async () => {
    const s = serve(['--model', await slowModelFile(), '--model-id', 'slow', '--shutdown-grace', '300']);
    const url = await s.url;
    const stream = await readUntil(await longStream(url), (t) => sseData(t).length >= 1);
    s.child.kill('SIGTERM');
    await waitFor(() => /draining 1 request/.test(s.output().err), 'the drain to begin');
    s.child.kill('SIGINT');
    const data = sseData(await stream.rest());
    expect(JSON.parse(data.at(-1)!).error.code).toBe('SHUTTING_DOWN');
    expect(await s.exited).toBe(0);
    expect(s.output().err).toMatch(/SIGINT again: cutting 1 request/);
  });

  it('--request-timeout: a request body slower than the limit gets 408; bad values are BAD_FLAG', async () => {
    const s = serve(['--request-timeout', '0.3']);
    const url = new URL(await s.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = connect(Number(url.port), url.hostname, () => {
        sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n');
        sock.write('Content-Length: 100\r\n\r\n{"model":');
      });
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('close', () => resolve(got));
      sock.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);

    const bad = serve([], { BITNET_REQUEST_TIMEOUT_S: '30s' });
    await expect(bad.url).rejects.toThrow(/INVALID_ENV\]: BITNET_REQUEST_TIMEOUT_S must be a number of seconds/);
    const neg = serve(['--shutdown-grace', '-1']);
    await expect(neg.url).rejects.toThrow(/BAD_FLAG\]: --shutdown-grace must be a number >= 0/);
    // every flag is checked before the model is loaded or announced (args' later --port wins)
    const port = serve(['--port', '99999']);
    await expect(port.url).rejects.toThrow(/BAD_FLAG\]: --port must be an integer >= 0 <= 65535/);
    expect(await port.exited).toBe(2);
    expect(port.output().err).not.toMatch(/serving the demo model/);
  });

  it('BITNET_HTTP_TIMEOUT_S / BITNET_HTTP_RETRIES: a model server that never answers fails the start-up within them', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer(() => {}); // accepts, never answers
    silent.on('connection', (sock) => sockets.add(sock));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const { port } = silent.address() as { port: number };
      const s = serve(['--model', `http://127.0.0.1:${port}/m.gguf`], {
        BITNET_HTTP_TIMEOUT_S: '0.2',
        BITNET_HTTP_RETRIES: '1',
      });
      await expect(s.url).rejects.toThrow(/serve exited/);
      expect(await s.exited).toBe(1);
      expect(s.output().err).toMatch(/error \[Io\/RETRIES_EXHAUSTED\]: .*gave up after 2 attempts \(HTTP_STALLED/);

      const bad = serve(['--model', `http://127.0.0.1:${port}/m.gguf`], { BITNET_HTTP_RETRIES: 'two' });
      await expect(bad.url).rejects.toThrow(/INVALID_ENV\]: BITNET_HTTP_RETRIES must be a non-negative integer/);
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('--validate-checksums / BITNET_VALIDATE_CHECKSUMS=1: a pack with a flipped tensor byte is refused at startup; off, it serves', async () => {
    const fx = await makeFixture();
    const dir = await mkdtemp(join(tmpdir(), 'bitnet-serve-pack-'));
    await cp(fx.packDir, dir, { recursive: true });
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
    const t = manifest.tensors.find((x: { name: string }) => x.name === 'blk.0.ffn_up.weight');
    const shard = join(dir, t.shard);
    const bytes = await readFile(shard);
    bytes[t.offset + (t.length >> 1)] ^= 0x01;
    await writeFile(shard, bytes);

    // the intact pack passes the check
    const good = serve(['--model', fx.packDir, '--validate-checksums']);
    await good.url;
    good.child.kill('SIGTERM');
    expect(await good.exited).toBe(0);

    for (const [args, env] of [
      [['--model', dir, '--validate-checksums'], {}],
      [['--model', dir], { BITNET_VALIDATE_CHECKSUMS: '1' }],
      [['--model', dir], { BITNET_VALIDATE_CHECKSUMS: 'TRUE' }],
    ] as const) {
      const s = serve([...args], env);
      await expect(s.url).rejects.toThrow(/serve exited/);
      expect(await s.exited).toBe(1);
      expect(s.output().err).toMatch(/error \[Model\/CHECKSUM_MISMATCH\]: tensor blk\.0\.ffn_up\.weight/);
    }

    const off = serve(['--model', dir, '--model-id', 'flipped']);
    const url = await off.url;
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'flipped', prompt: 'hi', max_tokens: 2 }),
    });
    expect(r.status).toBe(200);
    await r.json();
    off.child.kill('SIGTERM');
    expect(await off.exited).toBe(0);

    const typo = serve(['--model', dir], { BITNET_VALIDATE_CHECKSUMS: 'yes please' });
    await expect(typo.url).rejects.toThrow(/INVALID_ENV\]: BITNET_VALIDATE_CHECKSUMS must be true, false, 1 or 0/);
  });
});
