/**
 * The shard-pack FormatLoader: recognises a `manifest.json` (its first byte is `{`), checks the
 * model from the manifest alone (hyper-parameters, tensor table, memory budget: no shard is opened
 * before that passes), then reads the weights group by group from shards next to the manifest.
 * LoadConfig is honoured: `validateChecksums` (per-tensor sha256), `progressCallback`, `signal`,
 * `maxMemoryBytes`, `preTokenizer`.
 */
import { buildModelInfo } from '../api/model-info.ts';
import type { FormatContext, FormatLoader, LoadConfig, Model } from '../api/model-loader.ts';
import { BitNetError } from '../errors.ts';
import { readHParams } from '../model/hparams.ts';
import { checkModelFile, loadModelFile } from '../model/load.ts';
import type { ByteSource } from '../sources/byte-source.ts';
import { looksLikeManifest, ShardPack } from './reader.ts';

function shardOpener(source: ByteSource, ctx: FormatContext | undefined): (file: string) => Promise<ByteSource> {
  if (ctx?.openSibling) return ctx.openSibling;
  return async (file) => {
    throw BitNetError.Model('PACK_NO_SIBLINGS', `cannot open ${file} next to ${source.description}`, { file });
  };
}

async function openPack(source: ByteSource, config: LoadConfig, ctx: FormatContext | undefined) {
  const pack = await ShardPack.open(source, {
    openShard: shardOpener(source, ctx),
    validateChecksums: config.validateChecksums,
    signal: config.signal,
  });
  // The manifest's hyper-parameters must be the ones its metadata gives.
  const hp = readHParams(pack.metadata, pack.file.tensorsByName.get('token_embd.weight')?.ne[1]);
  const declared = (pack.manifest.hparams ?? {}) as unknown as Record<string, unknown>;
  const differs = Object.entries(hp).filter(([k, v]) => declared[k] !== v);
  if (differs.length) {
    throw BitNetError.Model('PACK_BAD_MANIFEST', 'the manifest hparams disagree with its metadata', {
      keys: differs.map(([k]) => k),
      hparams: pack.manifest.hparams,
      fromMetadata: hp,
    });
  }
  return pack;
}

export const ShardPackFormatLoader: FormatLoader = {
  name: 'shard-pack',
  canLoad(head) {
    return looksLikeManifest(head);
  },
  async inspect(source, config, ctx) {
    const pack = await openPack(source, config, ctx);
    const { hparams } = checkModelFile(pack.file, { maxMemoryBytes: config.maxMemoryBytes });
    return buildModelInfo(pack.file, hparams, ctx?.location ?? source.description, pack.manifest.layout);
  },
  async load(source, config, ctx): Promise<Model> {
    const pack = await openPack(source, config, ctx);
    try {
      const checked = checkModelFile(pack.file, { maxMemoryBytes: config.maxMemoryBytes });
      const location = ctx?.location ?? source.description;
      const m = await loadModelFile(pack.file, checked, location, {
        onProgress: config.progressCallback,
        preTokenizer: config.preTokenizer,
        signal: config.signal,
      });
      return { ...m, info: buildModelInfo(m.file, m.hparams, location, pack.manifest.layout) };
    } finally {
      await pack.close();
    }
  },
};
