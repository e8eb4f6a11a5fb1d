/** `bitnet inspect FILE`: header, metadata (arrays summarised) and tensor table, without weights. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BitNetError, isBitNetError } from '../errors.ts';
import type { GGUFValue } from '../gguf/metadata.ts';
import { readGGUF } from '../gguf/reader.ts';
import { looksLikeManifest } from '../shards/reader.ts';
import { openSource } from '../sources/open.ts';
import { noMoreArgs, requiredArg } from './args.ts';
import { resolveCliLocation } from './model-location.ts';

function summarise(v: GGUFValue): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = v as ArrayLike<unknown>;
    const head = Array.from({ length: Math.min(arr.length, 8) }, (_, i) => {
      const e = arr[i];
      return typeof e === 'bigint' ? e.toString() : e;
    });
    return { length: arr.length, head };
  }
  if (typeof v === 'string' && v.length > 200) return `${v.slice(0, 200)}… (${v.length} chars)`;
  return v;
}

const PACK_HINT =
  'this is a shard pack; inspect reads GGUF files (a pack describes itself in its manifest.json: tensors, shapes, hashes)';

function withHint(e: BitNetError, hint: string): BitNetError {
  return new BitNetError(e.kind, e.code, `${e.message}: ${hint}`, e.details, e);
}

/** A directory given to inspect: a shard pack's (it holds manifest.json) gets the pack hint. */
function packHint(e: unknown, path: string): unknown {
  if (!isBitNetError(e) || e.code !== 'NOT_A_FILE') return e;
  return existsSync(join(path, 'manifest.json')) ? withHint(e, PACK_HINT) : e;
}

export async function inspectCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' } },
    allowPositionals: true,
  });
  const path = requiredArg(positionals[0], 'FILE');
  noMoreArgs(positionals, 1);
  const src = await openSource(await resolveCliLocation(path, { convert: false })).catch((e: unknown) => {
    throw packHint(e, path);
  });
  try {
    const f = await readGGUF(src).catch(async (e: unknown) => {
      // a pack's manifest.json (JSON where the GGUF magic should be): say what it is
      const head =
        isBitNetError(e) && e.code === 'GGUF_BAD_MAGIC' ? await src.read(0, Math.min(8, src.size)) : undefined;
      throw head && looksLikeManifest(head) ? withHint(e as BitNetError, PACK_HINT) : e;
    });
    const metadata: Record<string, unknown> = {};
    for (const [k, e] of f.metadata) metadata[k] = summarise(e.value);
    const tensors = f.tensors.map((t) => ({
      name: t.name,
      type: t.typeName,
      ne: t.ne,
      offset: t.offset,
      bytes: t.byteLength,
    }));
    const out = {
      file: path,
      size: f.fileSize,
      version: f.version,
      alignment: f.alignment,
      dataOffset: f.dataOffset,
      metadata,
      tensors,
    };
    if (values.json) {
      console.log(JSON.stringify(out));
    } else {
      console.log(
        `${path}: GGUF v${f.version}, ${f.fileSize} bytes, ${f.metadata.size} metadata keys, ${f.tensors.length} tensors`,
      );
      for (const [k, v] of Object.entries(metadata)) console.log(`  ${k} = ${JSON.stringify(v)}`);
      for (const t of tensors)
        console.log(`  ${t.name.padEnd(32)} ${t.type.padEnd(6)} [${t.ne.join(', ')}] ${t.bytes} B @ ${t.offset}`);
    }
  } finally {
    await src.close?.();
  }
  return 0;
}
