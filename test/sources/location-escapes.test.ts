// A '%' in a model location. The rule (src/sources/open.ts, decodeLocationPart): a location with a
// scheme is percent-encoded, so a '%' that does not start a valid escape is Config/BAD_LOCATION
// naming the location and the escape, for file://, https://, s3:// and r2:// alike; '%25' is a literal '%';
// a plain path is never decoded.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { BitNetModel } from '../../src/api/bitnet-model.ts';
import { BitNetError } from '../../src/errors.ts';
import { decodeLocationPart } from '../../src/sources/location.ts';
import { openSource } from '../../src/sources/open.ts';
import { parseR2Url } from '../../src/sources/r2.ts';
import { parseS3Url } from '../../src/sources/s3.ts';
import { synthBytes } from '../helpers/models.ts';
import { tempDir } from './util.ts';

function badLocation(f: () => unknown): BitNetError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BitNetError);
    expect([(e as BitNetError).kind, (e as BitNetError).code]).toEqual(['Config', 'BAD_LOCATION']);
    return e as BitNetError;
  }
  throw new Error('expected BAD_LOCATION');
}

async function badLocationAsync(p: Promise<unknown>): Promise<BitNetError> {
  const e = await p.then(
    () => undefined,
    (x) => x,
  );
  return badLocation(() => {
    if (e !== undefined) throw e;
  });
}

let dir: string;
let file: string; // a real file named "100%.gguf"

beforeAll(async () => {
  dir = await tempDir('bitnet-pct-');
  file = join(dir, '100%.gguf');
  await writeFile(file, await synthBytes({ qtype: 'i2_s', seed: 3, arch: 'bitnet-b1.58' }));
});

describe('percent-escapes in model locations', () => {
  it('decodeLocationPart: valid escapes decode; a stray % or escapes that are not UTF-8 are BAD_LOCATION', () => {
    expect(decodeLocationPart('a%20b%25c', 'x')).toBe('a b%c');
    const e = badLocation(() => decodeLocationPart('100%.gguf', 's3://b/100%.gguf'));
    expect(e.details).toEqual({ location: 's3://b/100%.gguf', escape: '%.g' });
    expect(e.message).toContain('"s3://b/100%.gguf"');
    expect(e.message).toContain('%25');
    expect(badLocation(() => decodeLocationPart('x%4', 'l')).details.escape).toBe('%4');
    const u = badLocation(() => decodeLocationPart('ok%20then%FF%FE', 'l'));
    expect(u.details.escape).toBe('%FF%FE');
    expect(u.message).toMatch(/does not decode to UTF-8/);
  });

  it('s3://: a stray % is BAD_LOCATION; %25 is a literal %', () => {
    const e = badLocation(() => parseS3Url('s3://models/m/100%.gguf'));
    expect(e.details.location).toBe('s3://models/m/100%.gguf');
    expect(parseS3Url('s3://models/m/100%25.gguf')).toEqual({ bucket: 'models', key: 'm/100%.gguf' });
    expect(parseS3Url('s3://models/a%2Fb/c')).toEqual({ bucket: 'models', key: 'a/b/c' });
  });

  it('r2://: a stray % is BAD_LOCATION; %25 is a literal %', () => {
    const e = badLocation(() => parseR2Url('r2://MODELS/m/100%.gguf'));
    expect(e.details.escape).toBe('%.g');
    expect(parseR2Url('r2://MODELS/m/100%25.gguf')).toEqual({ binding: 'MODELS', key: 'm/100%.gguf' });
  });

  it('https://: a stray % is BAD_LOCATION before any request; valid escapes pass through', async () => {
    let requests = 0;
    const fetch = async () => {
      requests++;
      return new Response(null, { status: 404 });
    };
    for (const bad of [
      'https://example.com/m/100%.gguf',
      'https://example.com/a%zz.gguf',
      'https://e.com/m.gguf?x=5%',
    ]) {
      const e = await badLocationAsync(openSource(bad, { http: { fetch } }));
      expect(e.details.location).toBe(bad);
    }
    expect(requests).toBe(0);
    // a valid escape is not a location error: the request is made (and 404s here)
    const notFound = await openSource('https://example.com/m/100%25.gguf', { http: { fetch } }).catch((x) => x);
    expect([notFound.code, requests]).toEqual(['NOT_FOUND', 1]);
  });

  it('file://: a stray % is BAD_LOCATION (openSource and BitNetModel.fromFile); %25 and a plain path open the file', async () => {
    const raw = `file://${file}`; // the % left unescaped
    const e = await badLocationAsync(openSource(raw));
    expect(e.details).toMatchObject({ location: raw, escape: '%.g' });
    await badLocationAsync(BitNetModel.fromFile(raw)); // the wasm direct-open path
    await badLocationAsync(BitNetModel.fromFile(raw, { backend: 'reference' })); // the loader's path
    const encoded = pathToFileURL(file).toString();
    expect(encoded).toContain('100%25.gguf');
    const src = await openSource(encoded);
    const plain = await openSource(file);
    expect(src.size).toBe(plain.size);
    await src.close?.();
    await plain.close?.();
    const m = await BitNetModel.fromFile(encoded);
    expect(m.modelInfo().fileSize).toBe(plain.size);
  });

  it('the CLI: error [Config/BAD_LOCATION], and JSON on stderr with --json (logits, inspect)', async () => {
    const run = (args: string[]) =>
      promisify(execFile)(process.execPath, ['bin/bitnet.js', ...args]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
    const s3 = await run(['logits', '--model', 's3://models/m/100%.gguf', '--prompt-ids', '1', '--json']);
    expect(s3.code).toBe(1);
    const j = JSON.parse(s3.stderr.trim().split('\n').at(-1)!);
    expect(j.error).toMatchObject({ kind: 'Config', code: 'BAD_LOCATION', details: { escape: '%.g' } });
    const inspect = await run(['inspect', `file://${file}`]);
    expect(inspect.code).toBe(1);
    expect(inspect.stderr).toMatch(/^error \[Config\/BAD_LOCATION\]: model location "file:\/\/.*100%\.gguf"/m);
    expect(inspect.stderr).not.toMatch(/URIError/);
    const r2 = await run(['inspect', 'r2://MODELS/100%.gguf', '--json']);
    expect(JSON.parse(r2.stderr.trim()).error.code).toBe('BAD_LOCATION');
  });
});
