/**
 * What byte-level BPE (bpe.ts) and SentencePiece (spm.ts) tokenizers share: token ids and types, special
 * tokens and their partitioning of the input, BOS/EOS, end-of-generation ids, decoding and streaming.
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp (the tokenizer bitnet.cpp runs):
 * - Special-token partition (`tokenizer_st_partition`): control and unknown tokens (types 3, 2) are
 *   recognised in the text only with parseSpecial; user-defined tokens (type 4) always. Specials are taken
 *   longest text first, each splitting every remaining text fragment at all its occurrences.
 * - Tokens whose text marks an end of turn (`<|eot_id|>`, `<|im_end|>`, `<|end_of_text|>`, `</s>`, ...) are
 *   end-of-generation ids and are treated as control tokens even if the file types them otherwise.
 * - Decoding: control and unknown tokens decode to their text unless skipSpecialTokens; user-defined tokens
 *   always to their text; unused tokens (type 5) to nothing; byte tokens `<0xXX>` to that byte.
 */
import { BitNetError } from '../errors.ts';
import { type ChatTemplate, resolveChatTemplate } from './chat-template.ts';
import type {
  DecodeOptions,
  EncodeOptions,
  EncodeSegment,
  SpecialTokenIds,
  StreamingDecoder,
  Tokenizer,
} from './types.ts';

/** `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`). */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Candidate EOT texts when `eot_token_id` is absent (llama.cpp's list; the first present one wins). */
const EOT_TEXTS = [
  '<|eot_id|>',
  '<|im_end|>',
  '<|end|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '<|end_of_text|>',
  '<EOT>',
  '_<EOT>',
  '[EOT]',
  '<｜end▁of▁sentence｜>',
  '<end_of_utterance>',
];

/** Token texts that end generation when present in the vocab (llama.cpp's EOG list), plus eos/eot/eom. */
const EOG_TEXTS = [
  '<|eot_id|>',
  '<|im_end|>',
  '<|end|>',
  '<|return|>',
  '<|call|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '</s>',
  '<|eom_id|>',
  '<EOT>',
  '_<EOT>',
  '[EOT]',
  '[EOS]',
  '<|end_of_text|>',
  '<end_of_utterance>',
  '<｜end▁of▁sentence｜>',
];

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();

type WellFormed = { isWellFormed(): boolean; toWellFormed(): string };
/** The string with lone surrogates replaced by U+FFFD (ES2024 String.prototype.toWellFormed). */
export function wellFormed(s: string): string {
  const w = s as unknown as WellFormed;
  return w.isWellFormed() ? s : w.toWellFormed();
}

/** Vocabulary fields shared by all tokenizer kinds. */
export interface VocabConfig {
  tokens: readonly string[];
  /** Per-token type (TokenType); all NORMAL when omitted. */
  tokenTypes?: ArrayLike<number>;
  special?: SpecialTokenIds;
  addBos?: boolean;
  addEos?: boolean;
  chatTemplate?: ChatTemplate;
}

type Fragment = string | number;

export abstract class BaseTokenizer implements Tokenizer {
  abstract readonly model: string;
  abstract readonly preTokenizer: string;
  readonly vocabSize: number;
  readonly specialTokens: Readonly<SpecialTokenIds>;
  readonly eogTokenIds: ReadonlySet<number>;
  readonly addBos: boolean;
  readonly addEos: boolean;
  private chatTemplate_: ChatTemplate | undefined;

  protected readonly tokens: readonly string[];
  protected readonly types: Int32Array;
  protected readonly textToId = new Map<string, number>();
  /** Matched only with parseSpecial (control, unknown) / always (user-defined); longest text first. */
  private readonly parsedSpecials: readonly number[];
  private readonly alwaysSpecials: readonly number[];
  private readonly bytesCache: (Uint8Array | undefined)[];
  /** SentencePiece add-space-prefix: decode drops the leading space of the first piece (see DecodeOptions). */
  protected stripsLeadingSpace = false;

  constructor(config: VocabConfig, defaultAddBos: boolean) {
    // llama.cpp renames empty tokens so that every text maps to one id.
    this.tokens = config.tokens.some((t) => t.length === 0)
      ? config.tokens.map((t, i) => (t.length === 0 ? `[EMPTY_${i}]` : t))
      : config.tokens;
    this.vocabSize = this.tokens.length;
    this.types = new Int32Array(this.vocabSize).fill(TokenType.NORMAL);
    if (config.tokenTypes) {
      for (let i = 0; i < this.vocabSize; i++) this.types[i] = config.tokenTypes[i];
    }
    // Later duplicates win, like llama.cpp's token_to_id.
    for (let i = 0; i < this.vocabSize; i++) this.textToId.set(this.tokens[i], i);
    this.bytesCache = new Array(this.vocabSize);
    this.chatTemplate_ = config.chatTemplate;

    // Keep only the ids that are set, and check them.
    const special: SpecialTokenIds = {};
    for (const [k, v] of Object.entries(config.special ?? {}) as [keyof SpecialTokenIds, number | undefined][]) {
      if (v === undefined) continue;
      special[k] = this.checkId(v);
    }
    const markControl = (id: number) => {
      if (this.types[id] !== TokenType.CONTROL) this.types[id] = TokenType.CONTROL;
    };
    if (special.eotTokenId === undefined) {
      for (const t of EOT_TEXTS) {
        const id = this.textToId.get(t);
        if (id !== undefined) {
          special.eotTokenId = id;
          markControl(id);
          break;
        }
      }
    }
    if (special.eomTokenId === undefined) {
      const id = this.textToId.get('<|eom_id|>');
      if (id !== undefined) {
        special.eomTokenId = id;
        markControl(id);
      }
    }
    this.specialTokens = Object.freeze(special);
    this.addBos = (config.addBos ?? defaultAddBos) && special.bosTokenId !== undefined;
    this.addEos = (config.addEos ?? false) && special.eosTokenId !== undefined;

    const eog = new Set<number>();
    for (const t of EOG_TEXTS) {
      const id = this.textToId.get(t);
      if (id !== undefined) {
        eog.add(id);
        markControl(id);
      }
    }
    if (special.eosTokenId !== undefined) eog.add(special.eosTokenId);
    if (special.eotTokenId !== undefined) eog.add(special.eotTokenId);
    if (special.eomTokenId !== undefined) eog.add(special.eomTokenId);
    this.eogTokenIds = eog;

    const parsed: number[] = [];
    const always: number[] = [];
    for (let i = 0; i < this.vocabSize; i++) {
      const t = this.types[i];
      if (t === TokenType.CONTROL || t === TokenType.UNKNOWN) parsed.push(i);
      else if (t === TokenType.USER_DEFINED) always.push(i);
    }
    // Longest text first (UTF-8 length, as llama.cpp compares byte lengths); ties by id.
    const len = new Map<number, number>();
    for (const id of [...parsed, ...always]) len.set(id, utf8.encode(this.tokens[id]).length);
    const byLength = (a: number, b: number): number => (len.get(b) as number) - (len.get(a) as number) || a - b;
    this.alwaysSpecials = always.sort(byLength);
    this.parsedSpecials = [...always, ...parsed].sort(byLength);
  }

  /** The template given at construction, else the default for this vocab (chat-template.ts, steps 2-3). */
  get chatTemplate(): ChatTemplate {
    this.chatTemplate_ ??= resolveChatTemplate({
      bosToken: this.specialTokens.bosTokenId !== undefined ? this.tokens[this.specialTokens.bosTokenId] : undefined,
      eosToken: this.specialTokens.eosTokenId !== undefined ? this.tokens[this.specialTokens.eosTokenId] : undefined,
      hasToken: (t) => this.textToId.has(t),
    });
    return this.chatTemplate_;
  }

  // -- subclass hooks -------------------------------------------------------------------------------------

  /** Encodes one raw-text fragment; `afterSpecial` is true at the start and right after a special token. */
  protected abstract encodeText(text: string, out: number[], afterSpecial: boolean): void;

  /** Bytes of a NORMAL token. */
  protected abstract normalTokenBytes(text: string): Uint8Array;

  // -- encode ---------------------------------------------------------------------------------------------

  encode(text: string, opts?: EncodeOptions): number[] {
    if (typeof text !== 'string') {
      throw BitNetError.Tokenization('TOKENIZER_BAD_INPUT', 'encode expects a string', { got: typeof text });
    }
    return this.encodeFragments(this.partition(text, opts?.parseSpecial ?? false), opts);
  }

  encodeSegments(segments: readonly EncodeSegment[], opts?: EncodeOptions): number[] {
    const frags: Fragment[] = [];
    for (const s of segments) {
      if (typeof s?.text !== 'string') {
        throw BitNetError.Tokenization('TOKENIZER_BAD_INPUT', 'encodeSegments expects {text, special} items');
      }
      for (const f of this.partition(s.text, s.special === true)) {
        // Adjacent text from different segments is one text, as if the segments were concatenated.
        const last = frags.length - 1;
        if (typeof f === 'string' && last >= 0 && typeof frags[last] === 'string') frags[last] += f;
        else frags.push(f);
      }
    }
    return this.encodeFragments(frags, opts);
  }

  encodeBatch(texts: readonly string[], opts?: EncodeOptions): number[][] {
    return texts.map((t) => this.encode(t, opts));
  }

  private encodeFragments(frags: readonly Fragment[], opts?: EncodeOptions): number[] {
    const out: number[] = [];
    const addSpecial = opts?.addSpecialTokens ?? false;
    if (addSpecial && this.addBos) out.push(this.specialTokens.bosTokenId as number);
    let afterSpecial = true;
    for (const frag of frags) {
      if (typeof frag === 'number') {
        out.push(frag);
        afterSpecial = true;
      } else {
        // Lone surrogates reach llama.cpp as U+FFFD (UTF-8 conversion); make that explicit.
        this.encodeText(wellFormed(frag), out, afterSpecial);
        afterSpecial = false;
      }
    }
    if (addSpecial && this.addEos) out.push(this.specialTokens.eosTokenId as number);
    return out;
  }

  /** Splits text into raw-text fragments and special-token ids (see the file comment). */
  protected partition(given: string, parseSpecial: boolean): Fragment[] {
    // Lone surrogates reach llama.cpp as U+FFFD (its UTF-8 conversion), before its special-token
    // matching: a special token's text may contain U+FFFD.
    const text = wellFormed(given);
    let frags: Fragment[] = text.length > 0 ? [text] : [];
    const specials = parseSpecial ? this.parsedSpecials : this.alwaysSpecials;
    if (specials.length === 0 || text.length === 0) return frags;
    const present = new Map<string, boolean>();
    for (const id of specials) {
      const st = this.tokens[id];
      const prefix = st.slice(0, 2);
      let p = present.get(prefix);
      if (p === undefined) {
        p = text.includes(prefix);
        present.set(prefix, p);
      }
      if (!p || !text.includes(st)) continue;
      const next: Fragment[] = [];
      for (const f of frags) {
        if (typeof f === 'number' || !f.includes(st)) {
          next.push(f);
          continue;
        }
        const parts = f.split(st);
        for (let i = 0; i < parts.length; i++) {
          if (i > 0) next.push(id);
          if (parts[i].length > 0) next.push(parts[i]);
        }
      }
      frags = next;
    }
    return frags;
  }

  // -- decode ---------------------------------------------------------------------------------------------

  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string {
    const skip = opts?.skipSpecialTokens ?? false;
    let strip = (opts?.stripLeadingSpace ?? true) && this.stripsLeadingSpace;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      let b = this.bytesOf(ids[i], skip);
      if (b.length === 0) continue;
      if (strip) {
        if (b[0] === 0x20 && this.isStrippable(ids[i])) b = b.subarray(1);
        strip = false;
      }
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    // ignoreBOM: keep a leading U+FEFF (TextDecoder strips it by default).
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(all);
  }

  decodeBatch(batch: readonly ArrayLike<number>[], opts?: DecodeOptions): string[] {
    return batch.map((ids) => this.decode(ids, opts));
  }

  createStreamingDecoder(opts?: DecodeOptions): StreamingDecoder {
    const skip = opts?.skipSpecialTokens ?? false;
    const stripFirst = (opts?.stripLeadingSpace ?? false) && this.stripsLeadingSpace;
    let strip = stripFirst;
    // A streaming TextDecoder holds the bytes of an unfinished character until the next push; only
    // bytes that can never become valid are replaced with U+FFFD.
    let dec = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    return {
      push: (id: number): string => {
        let b = this.bytesOf(id, skip);
        if (strip && b.length > 0) {
          if (b[0] === 0x20 && this.isStrippable(id)) b = b.subarray(1);
          strip = false;
        }
        return dec.decode(b, { stream: true });
      },
      flush: (): string => {
        const rest = dec.decode();
        dec = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
        strip = stripFirst;
        return rest;
      },
    };
  }

  /** Only the space of a normal piece (the `▁` encode added) is dropped, never a byte token or a special. */
  private isStrippable(id: number): boolean {
    return this.types[id] === TokenType.NORMAL;
  }

  // -- queries --------------------------------------------------------------------------------------------

  isSpecial(id: number): boolean {
    const t = this.types[this.checkId(id)];
    return t === TokenType.CONTROL || t === TokenType.UNKNOWN || t === TokenType.USER_DEFINED;
  }

  isEog(id: number): boolean {
    return this.eogTokenIds.has(id);
  }

  tokenToId(text: string): number | undefined {
    return this.textToId.get(text);
  }

  tokenType(id: number): number {
    return this.types[this.checkId(id)];
  }

  tokenText(id: number): string {
    return this.tokens[this.checkId(id)];
  }

  tokenBytes(id: number, opts?: DecodeOptions): Uint8Array {
    return this.bytesOf(id, opts?.skipSpecialTokens ?? false).slice();
  }

  // -- internals ------------------------------------------------------------------------------------------

  protected checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw BitNetError.Tokenization('TOKEN_ID_OUT_OF_RANGE', `token id ${id} is not in [0, ${this.vocabSize})`, {
        id,
        vocabSize: this.vocabSize,
      });
    }
    return id;
  }

  /** Cached decoded bytes of a token (shared; never hand out without copying). */
  protected bytesOf(id: number, skipSpecial: boolean): Uint8Array {
    const t = this.types[this.checkId(id)];
    if (skipSpecial && (t === TokenType.CONTROL || t === TokenType.UNKNOWN)) return EMPTY;
    let b = this.bytesCache[id];
    if (b === undefined) {
      b = this.computeBytes(id, t);
      this.bytesCache[id] = b;
    }
    return b;
  }

  private computeBytes(id: number, type: number): Uint8Array {
    const text = this.tokens[id];
    switch (type) {
      case TokenType.CONTROL:
      case TokenType.UNKNOWN:
      case TokenType.USER_DEFINED:
        return utf8.encode(text); // stored raw
      case TokenType.NORMAL:
        return this.normalTokenBytes(text);
      case TokenType.BYTE: {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
        return m ? Uint8Array.of(Number.parseInt(m[1], 16)) : this.normalTokenBytes(text);
      }
      default:
        return EMPTY; // unused / undefined: llama.cpp emits nothing
    }
  }
}
