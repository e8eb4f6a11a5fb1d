/**
 * ModelLoader, LoadConfig, FormatLoader and Model: the seed's loading surface. A ModelLoader
 * holds a list of FormatLoaders (GGUF built in) and picks the one that recognises the file's
 * first bytes. Capability checks happen before any weight byte is read.
 */
import { BitNetError } from '../errors.ts';
import { GGUF_MAGIC } from '../gguf/reader.ts';
import { inspectModel, type LoadedModel, loadModel } from '../model/load.ts';
import type { LoadProgress } from '../model/weights.ts';
import type { ByteSource } from '../sources/byte-source.ts';
import { openSource } from '../sources/open.ts';
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
}

export class LoadConfig {
  useMmap = true;
  validateChecksums = false;
  progressCallback: ((p: LoadProgress) => void) | undefined = undefined;
  maxMemoryBytes: number | undefined = undefined;
  preTokenizer: string | undefined = undefined;
  signal: AbortSignal | undefined = undefined;

  constructor(init: LoadConfigInit = {}) {
    assignInit(this, init, 'INVALID_LOAD_CONFIG', 'load');
  }
}

/** A loaded model: weights, hyper-parameters, tokenizer and its description. */
export interface Model extends LoadedModel {
  info: ModelInfo;
}

export interface FormatLoader {
  readonly name: string;
  /** Whether this loader reads a file starting with `head` (at least 8 bytes). */
  canLoad(head: Uint8Array): boolean;
  inspect(source: ByteSource, config: LoadConfig): Promise<ModelInfo>;
  load(source: ByteSource, config: LoadConfig): Promise<Model>;
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
  private readonly formats: FormatLoader[] = [GGUFFormatLoader];
  readonly config: LoadConfig;

  constructor(config: LoadConfig | LoadConfigInit = {}) {
    this.config = config instanceof LoadConfig ? config : new LoadConfig(config);
  }

  registerFormat(loader: FormatLoader): this {
    this.formats.unshift(loader);
    return this;
  }

  private async pick(source: ByteSource): Promise<FormatLoader> {
    const head = await source.read(0, Math.min(8, source.size), { signal: this.config.signal });
    const f = this.formats.find((x) => x.canLoad(head));
    if (!f) {
      throw BitNetError.Model('UNKNOWN_FORMAT', `${source.description} is not a model format this loader reads`, {
        formats: this.formats.map((x) => x.name),
      });
    }
    return f;
  }

  async inspect(location: string | URL | ByteSource): Promise<ModelInfo> {
    const src = await openSource(location);
    try {
      return await (await this.pick(src)).inspect(src, this.config);
    } finally {
      await src.close?.();
    }
  }

  async load(location: string | URL | ByteSource): Promise<Model> {
    const src = await openSource(location);
    try {
      return await (await this.pick(src)).load(src, this.config);
    } finally {
      await src.close?.();
    }
  }
}
