/**
 * ModelLoader, LoadConfig, FormatLoader and Model: the seed's loading surface. A ModelLoader
 * holds a list of FormatLoaders (GGUF and shard packs built in) and picks the one that recognises
 * the file's first bytes. Locations: a path, file://, https://, s3://bucket/key, r2://BINDING/key
 * (bindings in `sourceOptions.bindings`), or a directory / URL ending in `/` (a pack's manifest).
 * Capability checks, the memory budget included, happen before any weight byte is read; inside a
 * Worker the budget defaults to the isolate's 128 MB.
 */
import { BitNetError } from '../errors.ts';
import { GGUF_MAGIC } from '../gguf/reader.ts';
import { inspectModel, type LoadedModel, loadModel } from '../model/load.ts';
import type { LoadProgress } from '../model/weights.ts';
import { ShardPackFormatLoader } from '../shards/format-loader.ts';
import type { ByteSource } from '../sources/byte-source.ts';
import { localPath } from '../sources/location.ts';
import { locationKind, type OpenOptions, openSibling, openSource, resolveModelLocation } from '../sources/open.ts';
import { assignInit } from '../util/init.ts';
import { buildModelInfo, type ModelInfo } from './model-info.ts';

export interface LoadConfigInit {
  /** Accepted for the seed's sake: JS runtimes have no mmap; weights are read lazily by range instead. */
  useMmap?: boolean;
  /** Verify per-tensor checksums where the format carries them (shard packs; GGUF has none). */
  validateChecksums?: boolean;
  progressCallback?: (p: LoadProgress) => void;
  maxMemoryBytes?: number;
  preTokenizer?: string;
  signal?: AbortSignal;
  /** How remote locations are opened: R2 bindings, retries, caches, concurrency (src/sources/open.ts). */
  sourceOptions?: OpenOptions;
  /** Where a local safetensors checkpoint's converted pack goes (`checkpoints/` in it; default as the hub cache's). */
  cacheDir?: string;
}

/**
 * A local safetensors checkpoint directory, as the manifest of the shard pack converted from it
 * once into the cache (src/shards/local-checkpoint.ts); undefined for every other location. Only
 * plain local locations reach the Node-only module (a Worker bundle stubs it).
 */
async function checkpointAsPack(location: string | URL, config: LoadConfig): Promise<string | undefined> {
  const s = location.toString();
  if (locationKind(s) !== 'file' || /\.(gguf|json)$/i.test(s)) return undefined;
  const { checkpointPack } = await import('../shards/local-checkpoint.ts');
  return checkpointPack(localPath(s), { signal: config.signal, cacheDir: config.cacheDir });
}

export class LoadConfig {
  useMmap = true;
  validateChecksums = false;
  progressCallback: ((p: LoadProgress) => void) | undefined = undefined;
  maxMemoryBytes: number | undefined = undefined;
  preTokenizer: string | undefined = undefined;
  signal: AbortSignal | undefined = undefined;
  sourceOptions: OpenOptions | undefined = undefined;
  cacheDir: string | undefined = undefined;

  constructor(init: LoadConfigInit = {}) {
    assignInit(this, init, 'INVALID_LOAD_CONFIG', 'load');
  }
}

/** A loaded model: weights, hyper-parameters, tokenizer and its description. */
export interface Model extends LoadedModel {
  info: ModelInfo;
}

/** Where the file came from, for formats made of several files (a shard pack's manifest). */
export interface FormatContext {
  location: string;
  /** Opens a file next to this one. */
  openSibling: (name: string) => Promise<ByteSource>;
}

export interface FormatLoader {
  readonly name: string;
  /** Whether this loader reads a file starting with `head` (at least 8 bytes). */
  canLoad(head: Uint8Array): boolean;
  inspect(source: ByteSource, config: LoadConfig, ctx?: FormatContext): Promise<ModelInfo>;
  load(source: ByteSource, config: LoadConfig, ctx?: FormatContext): Promise<Model>;
}

/** Workers isolates have 128 MB in all: the default weight budget there. */
export const WORKERS_MEMORY_BYTES = 128 * 1024 * 1024;

/** The platform's default memory budget: 128 MB inside a Worker, none elsewhere. */
export function platformMemoryBudget(): number | undefined {
  const ua = (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent;
  return ua === 'Cloudflare-Workers' ? WORKERS_MEMORY_BYTES : undefined;
}

export const GGUFFormatLoader: FormatLoader = {
  name: 'gguf',
  canLoad(head) {
    return head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;
  },
  async inspect(source, config) {
    const { file, hparams } = await inspectModel(source, {
      maxMemoryBytes: config.maxMemoryBytes,
      signal: config.signal,
    });
    return buildModelInfo(file, hparams, source.description);
  },
  async load(source, config) {
    const m = await loadModel(source, {
      maxMemoryBytes: config.maxMemoryBytes,
      onProgress: config.progressCallback,
      preTokenizer: config.preTokenizer,
      signal: config.signal,
    });
    return { ...m, info: buildModelInfo(m.file, m.hparams, m.location) };
  },
};

export class ModelLoader {
  private readonly formats: FormatLoader[] = [GGUFFormatLoader, ShardPackFormatLoader];
  readonly config: LoadConfig;

  constructor(config: LoadConfig | LoadConfigInit = {}) {
    this.config = config instanceof LoadConfig ? config : new LoadConfig(config);
    this.config.maxMemoryBytes ??= platformMemoryBudget();
  }

  registerFormat(loader: FormatLoader): this {
    this.formats.unshift(loader);
    return this;
  }

  private async pick(source: ByteSource): Promise<FormatLoader> {
    const head = await source.read(0, Math.min(8, source.size), { signal: this.config.signal });
    const f = this.formats.find((x) => x.canLoad(head));
    if (!f && source.size < 8) {
      // too short to tell: an empty file or a cut download, not a format question
      throw BitNetError.Model(
        'FILE_TOO_SHORT',
        `${source.description} is ${source.size === 0 ? 'empty' : `only ${source.size} bytes`}: no model file is that short (a truncated download?)`,
        { size: source.size },
      );
    }
    if (!f) {
      throw BitNetError.Model('UNKNOWN_FORMAT', `${source.description} is not a model format this loader reads`, {
        formats: this.formats.map((x) => x.name),
      });
    }
    return f;
  }

  /** Opens a location (resolving a pack directory to its manifest) with its sibling opener. */
  private async open(location: string | URL | ByteSource): Promise<{ src: ByteSource; ctx: FormatContext }> {
    const o: OpenOptions = { ...this.config.sourceOptions, signal: this.config.signal };
    if (typeof location === 'object' && !(location instanceof URL)) {
      return {
        src: location,
        ctx: { location: location.description, openSibling: (name) => openSibling(location, name, o) },
      };
    }
    const loc = await resolveModelLocation((await checkpointAsPack(location, this.config)) ?? location);
    const src = await openSource(loc, o);
    return { src, ctx: { location: src.description, openSibling: (name) => openSibling(loc, name, o) } };
  }

  async inspect(location: string | URL | ByteSource): Promise<ModelInfo> {
    const { src, ctx } = await this.open(location);
    try {
      return await (await this.pick(src)).inspect(src, this.config, ctx);
    } finally {
      await src.close?.();
    }
  }

  async load(location: string | URL | ByteSource): Promise<Model> {
    const { src, ctx } = await this.open(location);
    try {
      return await (await this.pick(src)).load(src, this.config, ctx);
    } finally {
      await src.close?.();
    }
  }
}
