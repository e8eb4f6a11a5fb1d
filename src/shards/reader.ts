/**
 * Reading a shard pack: the manifest first (validated, nothing else touched), then shards opened
 * lazily and read group by group.
 *
 * The pack is presented to the model loader as a `GGUFFile` over a virtual ByteSource in which the
 * shards sit one after another (each at a multiple of the alignment). The weight planner, the
 * memory-budget check, `ModelInfo` and the weight loader then work on a pack exactly as on a GGUF.
 * When the loader asks for a tensor, the whole group holding it (a layer) is fetched with one range
 * request, and its tensors are handed out as views of that buffer. With `validateChecksums`, every
 * tensor's sha256 is checked before it is handed out; a mismatch re-reads the group once (a corrupt
 * transfer recovers) and then fails with `CHECKSUM_MISMATCH`.
 */
import { BitNetError } from '../errors.ts';
import { typeFromName, typeName } from '../gguf/ggml-types.ts';
import type { GGUFMetadata } from '../gguf/metadata.ts';
import type { GGUFFile, GGUFTensorInfo } from '../gguf/reader.ts';
import { type ByteSource, checkRange, type ReadOptions } from '../sources/byte-source.ts';
import { throwIfAborted } from '../sources/retry.ts';
import {
  metadataFromJson,
  type PackGroup,
  type PackManifest,
  type PackTensor,
  READABLE_LAYOUTS,
  shapeToNe,
  validateManifest,
} from './format.ts';
import { sha256Hex } from './hash.ts';

/** Manifests bigger than this are refused before they are read (a 2B-4T tokenizer is ~10 MB). */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

export interface PackOpenOptions extends ReadOptions {
  /** Opens a file named in the manifest (relative to the manifest's location). */
  openShard: (file: string) => Promise<ByteSource>;
  validateChecksums?: boolean;
}

/** Reads and validates `manifest.json` from a source. */
export async function readManifest(source: ByteSource, opts?: ReadOptions): Promise<PackManifest> {
  if (source.size > MAX_MANIFEST_BYTES) {
    throw BitNetError.Model(
      'PACK_MANIFEST_TOO_LARGE',
      `${source.description} is ${source.size} bytes, too large for a manifest`,
      {
        size: source.size,
        max: MAX_MANIFEST_BYTES,
      },
    );
  }
  const bytes = await source.read(0, source.size, opts);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw BitNetError.Model('PACK_BAD_JSON', `${source.description} is not valid JSON: ${(e as Error).message}`, {}, e);
  }
  return validateManifest(json);
}

/** True when the first bytes look like a JSON object (a manifest) rather than a binary format. */
export function looksLikeManifest(head: Uint8Array): boolean {
  for (const b of head) {
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09 || b === 0xef || b === 0xbb || b === 0xbf) continue;
    return b === 0x7b; // '{'
  }
  return false;
}

interface Placed {
  t: PackTensor;
  g: PackGroup;
  info: GGUFTensorInfo;
}

interface LoadedGroup {
  bytes: Promise<Uint8Array>;
  remaining: Set<string>;
}

export class ShardPack {
  readonly manifest: PackManifest;
  readonly metadata: GGUFMetadata;
  /** The pack as a GGUF-like file over a virtual source (see the file comment). */
  readonly file: GGUFFile;
  readonly stats = { groupReads: 0, shardOpens: 0, checksumRetries: 0 };
  private readonly opts: PackOpenOptions;
  private readonly shardBase = new Map<string, number>();
  private readonly shardOrder: { file: string; base: number; size: number }[] = [];
  private readonly byVirtualOffset = new Map<number, Placed>();
  private readonly shards = new Map<string, Promise<ByteSource>>();
  private readonly groups = new Map<string, LoadedGroup>();
  private readonly verified = new Set<string>();

  private constructor(manifest: PackManifest, description: string, opts: PackOpenOptions) {
    this.manifest = manifest;
    this.opts = opts;
    this.metadata = metadataFromJson(manifest.metadata);
    let base = 0;
    for (const s of manifest.shards) {
      this.shardBase.set(s.file, base);
      this.shardOrder.push({ file: s.file, base, size: s.size });
      base = Math.ceil((base + s.size) / manifest.alignment) * manifest.alignment;
    }
    const groups = new Map(manifest.groups.map((g) => [g.name, g]));
    const tensors: GGUFTensorInfo[] = [];
    for (const t of manifest.tensors) {
      if (!(READABLE_LAYOUTS as readonly string[]).includes(t.layout)) {
        throw BitNetError.Model(
          'PACK_UNSUPPORTED_LAYOUT',
          `tensor ${t.name} has layout ${t.layout}, which this runtime cannot read`,
          {
            tensor: t.name,
            layout: t.layout,
            readable: READABLE_LAYOUTS,
          },
        );
      }
      const type = typeFromName(t.dtype)!;
      const ne = shapeToNe(t.shape);
      const offset = this.shardBase.get(t.shard)! + t.offset;
      const info: GGUFTensorInfo = {
        name: t.name,
        ne,
        type,
        typeName: typeName(type),
        relOffset: offset,
        offset,
        byteLength: t.length,
        nElements: ne.reduce((a, b) => a * b, 1),
      };
      if (t.layout === 'tl1' || t.layout === 'tl2') info.layout = t.layout;
      tensors.push(info);
      this.byVirtualOffset.set(offset, { t, g: groups.get(t.group)!, info });
    }
    const source: ByteSource = {
      size: base,
      description,
      read: (offset, length, o) => this.read(offset, length, o),
    };
    this.file = {
      version: 3,
      metadata: this.metadata,
      tensors,
      tensorsByName: new Map(tensors.map((t) => [t.name, t])),
      alignment: manifest.alignment,
      dataOffset: 0,
      fileSize: manifest.shards.reduce((a, s) => a + s.size, 0),
      source,
    };
  }

  /** Reads the manifest; opens no shard. */
  static async open(manifestSource: ByteSource, opts: PackOpenOptions): Promise<ShardPack> {
    const manifest = await readManifest(manifestSource, opts);
    return new ShardPack(manifest, manifestSource.description, opts);
  }

  private shard(file: string): Promise<ByteSource> {
    let p = this.shards.get(file);
    if (!p) {
      const want = this.manifest.shards.find((s) => s.file === file)!;
      p = this.opts.openShard(file).then((src) => {
        this.stats.shardOpens++;
        if (src.size !== want.size) {
          void src.close?.();
          throw BitNetError.Model(
            'PACK_SHARD_SIZE_MISMATCH',
            `shard ${file} is ${src.size} bytes, the manifest says ${want.size}`,
            { shard: file, size: src.size, expected: want.size },
          );
        }
        return src;
      });
      p.catch(() => this.shards.delete(file));
      this.shards.set(file, p);
    }
    return p;
  }

  private loadGroup(g: PackGroup, o?: ReadOptions): LoadedGroup {
    let lg = this.groups.get(g.name);
    if (!lg) {
      this.stats.groupReads++;
      const bytes = this.shard(g.shard).then((s) => s.read(g.offset, g.length, o));
      lg = { bytes, remaining: new Set(g.tensors) };
      bytes.catch(() => this.groups.delete(g.name));
      this.groups.set(g.name, lg);
    }
    return lg;
  }

  /** One tensor's bytes, from its group's buffer (checked when asked). */
  private async tensorBytes(p: Placed, o?: ReadOptions): Promise<Uint8Array> {
    for (let attempt = 0; ; attempt++) {
      const lg = this.loadGroup(p.g, o);
      const buf = await lg.bytes;
      const at = p.t.offset - p.g.offset;
      const view = buf.subarray(at, at + p.t.length);
      if (this.opts.validateChecksums && !this.verified.has(p.t.name)) {
        const got = await sha256Hex(view);
        if (got !== p.t.sha256) {
          this.groups.delete(p.g.name);
          if (attempt === 0) {
            this.stats.checksumRetries++;
            continue;
          }
          throw BitNetError.Model('CHECKSUM_MISMATCH', `tensor ${p.t.name} in ${p.t.shard} does not match its sha256`, {
            tensor: p.t.name,
            shard: p.t.shard,
            offset: p.t.offset,
            expected: p.t.sha256,
            got,
          });
        }
        this.verified.add(p.t.name);
      }
      lg.remaining.delete(p.t.name);
      // Once every tensor of the group was handed out, only the views keep its buffer alive.
      if (lg.remaining.size === 0 && this.groups.get(p.g.name) === lg) this.groups.delete(p.g.name);
      return view;
    }
  }

  /** Reads from the virtual source: a whole tensor through its group, anything else directly. */
  private async read(offset: number, length: number, o?: ReadOptions): Promise<Uint8Array> {
    throwIfAborted(o?.signal);
    checkRange(this.file.source, offset, length);
    const placed = this.byVirtualOffset.get(offset);
    if (placed && placed.t.length === length) return this.tensorBytes(placed, o);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const s = this.shardOrder.findLast((x) => x.base <= pos);
      if (!s || pos >= s.base + s.size) {
        throw BitNetError.Io('READ_PAST_EOF', `read at ${pos} falls between shards`, { offset: pos });
      }
      const n = Math.min(length - done, s.base + s.size - pos);
      out.set(await (await this.shard(s.file)).read(pos - s.base, n, o), done);
      done += n;
    }
    return out;
  }

  /** Reads every tensor of one group (for example `blk.3`) with one range request. */
  async readGroup(name: string, o?: ReadOptions): Promise<Map<string, Uint8Array>> {
    const g = this.manifest.groups.find((x) => x.name === name);
    if (!g) throw BitNetError.Model('PACK_NO_SUCH_GROUP', `the pack has no group ${name}`, { group: name });
    const out = new Map<string, Uint8Array>();
    for (const n of g.tensors) {
      const info = this.file.tensorsByName.get(n)!;
      out.set(n, await this.read(info.offset, info.byteLength, o));
    }
    return out;
  }

  async close(): Promise<void> {
    const all = [...this.shards.values()];
    this.shards.clear();
    this.groups.clear();
    await Promise.all(all.map((p) => p.then((s) => s.close?.()).catch(() => {})));
  }
}
