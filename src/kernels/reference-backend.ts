/** The reference backend: the plain-TS forward pass, one token at a time. Always available. */
import type { LoadedModel } from '../model/load.ts';
import type { KVStore } from '../model/reference.ts';
import { ReferenceForward } from '../model/reference.ts';
import { throwIfCancelled } from '../util/abort.ts';
import type { Backend, ForwardRequest } from './backend.ts';

export class ReferenceBackend implements Backend {
  readonly name = 'reference';
  readonly rebuildsFromStore = true;
  readonly vocabSize: number;
  private readonly fwd: ReferenceForward;

  constructor(model: Pick<LoadedModel, 'hparams' | 'weights'>) {
    this.fwd = new ReferenceForward(model.hparams, model.weights);
    this.vocabSize = model.hparams.nVocab;
  }

  async forward(req: ForwardRequest): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < req.tokens.length; i++) {
      throwIfCancelled(req.signal);
      const hidden = this.fwd.forwardToken(req.tokens[i], req.startPos + i, req.kv);
      if (req.logits === 'all' || i === req.tokens.length - 1) out.push(this.fwd.logits(hidden));
      // Yield to the event loop between tokens so a long prefill can be aborted.
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 0));
    }
    return out;
  }

  async hidden(
    tokens: readonly number[],
    startPos: number,
    kv: KVStore,
    signal?: AbortSignal,
  ): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < tokens.length; i++) {
      throwIfCancelled(signal);
      // forwardToken returns its scratch row: copy it
      out.push(Float32Array.from(this.fwd.forwardToken(tokens[i], startPos + i, kv)));
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 0));
    }
    return out;
  }
}
