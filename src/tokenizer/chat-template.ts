/**
 * Chat templates: messages -> prompt text (and token ids), with `@huggingface/jinja`.
 *
 * Public API (stable):
 *
 *   applyChatTemplate(tokenizerOrTemplate, messages, { addGenerationPrompt }) -> string
 *     `tokenizerOrTemplate` is a Tokenizer (its `chatTemplate`, resolved from the GGUF), a ChatTemplate, or a
 *     Jinja template source string. Returns exactly what the template renders (HF `apply_chat_template(...,
 *     tokenize=False)` semantics): it may start with the BOS text, e.g. `<|begin_of_text|>`.
 *
 *   encodeChat(tokenizer, messages, { addGenerationPrompt, template? }) -> number[]
 *     The ids to feed the model: exactly one BOS (per the vocab's add_bos_token, whether or not the template
 *     writes it), control tokens written BY THE TEMPLATE (`<|eot_id|>`, ...) as their single ids, and message
 *     content as plain text: a user who types "<|eot_id|>" gets those characters, not a turn boundary. The
 *     content is found in the rendering as written or after the whitespace / case filters templates apply
 *     (`| trim` in every LLaMA-3 template, `strip`, `upper`, ...). A template that rewrites content in any other
 *     way is refused (CHAT_TEMPLATE_CONTENT_UNLOCATED) rather than tokenized with special-token parsing over
 *     the whole prompt (what llama.cpp and HF do), which would let message text inject control tokens.
 *
 *   createChatTemplateFromGGUF(meta, { template? }) -> ChatTemplate   (also on `tokenizer.chatTemplate`)
 *     Selection (`template: 'auto'`, the default):
 *       1. the GGUF's `tokenizer.chat_template`, if it parses, renders a probe conversation with every message
 *          in order, and is not the known-broken placeholder of Microsoft's 2B-4T GGUF (`Human: …
 *          BITNETAssistant: …`, written by convert-ms-to-gguf-bitnet.py);
 *       2. else, when the vocab has `<|eot_id|>` (the LLaMA-3 / BitNet 2B-4T vocab): the built-in 2B-4T template
 *          BITNET_CHAT_TEMPLATE: `<|begin_of_text|>System: …<|eot_id|>User: …<|eot_id|>Assistant: …<|eot_id|>`,
 *          generation prompt `Assistant: ` (role names capitalised, `developer` counts as system, no newlines);
 *       3. else the documented default CHATML_CHAT_TEMPLATE (what llama.cpp uses for a model without a
 *          template): `<|im_start|>{role}\n{content}<|im_end|>\n`, generation prompt `<|im_start|>assistant\n`.
 *          `stopStrings` then holds `<|im_end|>` when that is not a token of the vocab.
 *     `template` may also force 'embedded' | 'bitnet' | 'chatml', or be a Jinja source string.
 *
 * Errors: BitNetError kind Tokenization, codes CHAT_TEMPLATE_INVALID (does not parse / no embedded template
 * when forced), CHAT_TEMPLATE_RENDER (the template raised, e.g. `raise_exception`), CHAT_MESSAGES_INVALID,
 * CHAT_TEMPLATE_CONTENT_UNLOCATED (renderSegments / encodeChat only: see encodeChat).
 */
import { Template } from '@huggingface/jinja';
import { BitNetError } from '../errors.ts';
import type { GGUFMetadata } from '../gguf/metadata.ts';
import type { Tokenizer } from './types.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatRenderOptions {
  /** Append the assistant header so the model writes the next turn. Default: false (HF default). */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (e.g. `tools`, `date_string`). */
  variables?: Record<string, unknown>;
}

export type ChatTemplateKind = 'embedded' | 'bitnet' | 'chatml' | 'custom';

/** A piece of a rendered prompt: template text (`special: true`, may contain control tokens) or message content. */
export interface ChatSegment {
  text: string;
  special: boolean;
}

export interface ChatTemplate {
  /** Where the template came from. */
  readonly kind: ChatTemplateKind;
  /** The Jinja source. */
  readonly source: string;
  readonly bosToken: string;
  readonly eosToken: string;
  /** Set when the embedded template was present but not used, and why. */
  readonly fallbackReason?: string;
  /** Text stop sequences implied by the format beyond the vocab's end-of-generation tokens. */
  readonly stopStrings: readonly string[];
  render(messages: readonly ChatMessage[], opts?: ChatRenderOptions): string;
  /**
   * The rendered prompt split into template text (`special: true`) and message content (`special: false`),
   * concatenating to `render(...)`. Throws CHAT_TEMPLATE_CONTENT_UNLOCATED when the content cannot be located
   * (see encodeChat).
   */
  renderSegments(messages: readonly ChatMessage[], opts?: ChatRenderOptions): ChatSegment[];
}

/** Built-in BitNet b1.58 2B-4T template (from the model's tokenizer_config.json format; see docs/tokenizer.md). */
export const BITNET_CHAT_TEMPLATE =
  "{{- bos_token -}}{%- for message in messages -%}{%- set role = message['role'] -%}" +
  "{%- if role == 'developer' -%}{%- set role = 'system' -%}{%- endif -%}" +
  "{{- role | capitalize + ': ' + message['content'] + '<|eot_id|>' -}}{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}";

/** Documented default for models without a (usable) template and without `<|eot_id|>`: ChatML, as llama.cpp. */
export const CHATML_CHAT_TEMPLATE =
  "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
  "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/** Marker of the broken template embedded in Microsoft's 2B-4T GGUF. */
const BROKEN_MARKERS = ['BITNETAssistant'];

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages)) {
    throw BitNetError.Tokenization('CHAT_MESSAGES_INVALID', 'messages must be an array of {role, content}');
  }
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw BitNetError.Tokenization('CHAT_MESSAGES_INVALID', `message ${i} must have string role and content`, {
        index: i,
      });
    }
  });
}

/**
 * What a template may have written for a message's content: the content itself, or the content after the
 * whitespace filters (`trim`, `strip`, `lstrip`, `rstrip`) and/or the case filters (`upper`, `lower`,
 * `capitalize`, `title`), applied as @huggingface/jinja does. Identity first, then whitespace alone; the case
 * variants are built only when asked for (`at(i)` past the first ones), so long content costs little.
 */
function contentVariants(content: string): { at(i: number): string | undefined } {
  const list = [...new Set([content, content.trim(), content.trimStart(), content.trimEnd()])];
  let complete = false;
  return {
    at(i: number): string | undefined {
      if (i >= list.length && !complete) {
        complete = true;
        const cases = [
          (s: string) => s.toUpperCase(),
          (s: string) => s.toLowerCase(),
          (s: string) => s.charAt(0).toUpperCase() + s.slice(1),
          (s: string) => s.replace(/\b\w/g, (c) => c.toUpperCase()),
        ];
        const more = new Set(list);
        for (const f of cases) for (const s of list) more.add(f(s));
        // A case filter applied before trim (`(c | capitalize) | trim`) differs only for capitalize and title.
        for (const f of cases.slice(2)) {
          const g = f(content);
          more.add(g.trim()).add(g.trimStart()).add(g.trimEnd());
        }
        list.splice(0, list.length, ...more);
      }
      return list[i];
    },
  };
}

/**
 * Splits `text` as pieces[0] c[0] pieces[1] c[1] ... pieces[n], each c[k] one of variants[k]; returns the
 * c[k], or undefined when no such split exists. Depth-first with backtracking, iterative (one level per
 * placeholder, so any number of messages), remembering dead (slot, position) states so it stays polynomial.
 * Any split found is safe: control tokens are parsed only in pieces, which contain no message text.
 */
function alignContent(
  text: string,
  pieces: readonly string[],
  variants: readonly { at(i: number): string | undefined }[],
): string[] | undefined {
  const n = variants.length;
  if (!text.startsWith(pieces[0])) return undefined;
  if (n === 0) return text === pieces[0] ? [] : undefined;
  const width = text.length + 1;
  const dead = new Set<number>();
  const start = new Array<number>(n); // where slot k's content starts
  const pick = new Array<number>(n); // the variant tried at slot k
  start[0] = pieces[0].length;
  pick[0] = -1;
  let k = 0;
  while (k >= 0) {
    let advanced = false;
    for (let c = pick[k] + 1, v = variants[k].at(c); v !== undefined; c++, v = variants[k].at(c)) {
      const q = start[k] + v.length;
      if (!text.startsWith(v, start[k]) || !text.startsWith(pieces[k + 1], q)) continue;
      const r = q + pieces[k + 1].length;
      pick[k] = c;
      if (k + 1 === n) {
        if (r === text.length) return pick.map((p, i) => variants[i].at(p) as string);
        continue;
      }
      if (dead.has((k + 1) * width + r)) continue;
      start[k + 1] = r;
      pick[k + 1] = -1;
      k++;
      advanced = true;
      break;
    }
    if (!advanced) {
      dead.add(k * width + start[k]);
      k--;
    }
  }
  return undefined;
}

class JinjaChatTemplate implements ChatTemplate {
  readonly kind: ChatTemplateKind;
  readonly source: string;
  readonly bosToken: string;
  readonly eosToken: string;
  readonly fallbackReason?: string;
  readonly stopStrings: readonly string[];
  private readonly template: Template;

  constructor(
    kind: ChatTemplateKind,
    source: string,
    tokens: { bosToken?: string; eosToken?: string },
    stopStrings: readonly string[] = [],
    fallbackReason?: string,
  ) {
    this.kind = kind;
    this.source = source;
    this.bosToken = tokens.bosToken ?? '';
    this.eosToken = tokens.eosToken ?? '';
    this.stopStrings = stopStrings;
    if (fallbackReason !== undefined) this.fallbackReason = fallbackReason;
    try {
      this.template = new Template(source);
    } catch (e) {
      throw BitNetError.Tokenization(
        'CHAT_TEMPLATE_INVALID',
        `chat template does not parse: ${(e as Error).message}`,
        { kind },
        e,
      );
    }
  }

  render(messages: readonly ChatMessage[], opts?: ChatRenderOptions): string {
    checkMessages(messages);
    return this.renderRaw(messages, opts);
  }

  renderSegments(messages: readonly ChatMessage[], opts?: ChatRenderOptions): ChatSegment[] {
    checkMessages(messages);
    const text = this.renderRaw(messages, opts);
    // Render again with a unique placeholder in place of each non-empty message content. The text around the
    // placeholders is what the template itself writes (no user text can be in it), so it may hold control
    // tokens; what stands in for each placeholder in the real rendering is message content, always plain.
    // Empty content stays '' (nothing to protect, and templates often branch on it).
    let nonce = '';
    do nonce = Math.random().toString(36).slice(2, 12);
    while (text.toLowerCase().includes(nonce) || messages.some((m) => m.content.toLowerCase().includes(nonce)));
    const ph = (i: number) => `\u{F8FF}${nonce}#${i}\u{F8FF}`;
    const marked = this.renderRaw(
      messages.map((m, i) => (m.content.length > 0 ? { ...m, content: ph(i) } : { ...m })),
      opts,
    );
    // Case-insensitive: `| upper` / `| title` change the nonce's letters along with the content.
    const re = new RegExp(`\u{F8FF}${nonce}#(\\d+)\u{F8FF}`, 'giu');
    const pieces: string[] = []; // template text: before the first placeholder, between them, after the last
    const slots: number[] = []; // the message whose content each placeholder stands for
    let last = 0;
    for (const m of marked.matchAll(re)) {
      pieces.push(marked.slice(last, m.index));
      slots.push(Number(m[1]));
      last = m.index + m[0].length;
    }
    pieces.push(marked.slice(last));
    // Find the template text in the real rendering with each message's content between, as the template
    // wrote it: as is or after the usual whitespace and case filters (`| trim`, which every LLaMA-3 template
    // applies, `| upper`, ...). When that is impossible (the template rewrites content in some other way, or
    // takes another branch for it), the content cannot be told apart from the template's own text, and
    // tokenizing the whole prompt with special-token parsing would turn a user's "<|eot_id|>" into a turn
    // boundary (prompt injection). We refuse instead: CHAT_TEMPLATE_CONTENT_UNLOCATED.
    const cache: ReturnType<typeof contentVariants>[] = [];
    const found = alignContent(
      text,
      pieces,
      slots.map((i) => (cache[i] ??= contentVariants(messages[i]?.content ?? ''))),
    );
    if (found === undefined) {
      throw BitNetError.Tokenization(
        'CHAT_TEMPLATE_CONTENT_UNLOCATED',
        'the chat template transforms message content in a way that cannot be located in the rendered prompt, ' +
          'so the content cannot be kept apart from control tokens; use a template that writes message content ' +
          'as is (or with trim/strip/upper/lower/capitalize/title), or render with applyChatTemplate and tokenize it yourself',
        { kind: this.kind },
      );
    }
    const segments: ChatSegment[] = [];
    pieces.forEach((p, k) => {
      if (p.length > 0) segments.push({ text: p, special: true });
      if (k < found.length && found[k].length > 0) segments.push({ text: found[k], special: false });
    });
    return segments;
  }

  private renderRaw(messages: readonly ChatMessage[], opts?: ChatRenderOptions): string {
    try {
      return this.template.render({
        ...opts?.variables,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: opts?.addGenerationPrompt ?? false,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (e) {
      throw BitNetError.Tokenization(
        'CHAT_TEMPLATE_RENDER',
        `chat template failed to render: ${(e as Error).message}`,
        { kind: this.kind },
        e,
      );
    }
  }
}

/** Builds a ChatTemplate from Jinja source (kind 'custom' unless given). Throws CHAT_TEMPLATE_INVALID. */
export function createChatTemplate(
  source: string,
  tokens: { bosToken?: string; eosToken?: string } = {},
  kind: ChatTemplateKind = 'custom',
): ChatTemplate {
  return new JinjaChatTemplate(kind, source, tokens);
}

/** Why an embedded template cannot be used, or undefined when it can. */
export function checkChatTemplate(source: string, tokens: { bosToken?: string; eosToken?: string } = {}) {
  for (const m of BROKEN_MARKERS) {
    if (source.includes(m)) {
      return `known-broken placeholder template (contains "${m}", written by convert-ms-to-gguf-bitnet.py)`;
    }
  }
  let t: ChatTemplate;
  try {
    t = new JinjaChatTemplate('embedded', source, tokens);
  } catch (e) {
    return (e as Error).message;
  }
  const probe = ['qZx1probeUser', 'qZx2probeAssistant', 'qZx3probeUser'];
  let out: string;
  try {
    out = t.render(
      [
        { role: 'user', content: probe[0] },
        { role: 'assistant', content: probe[1] },
        { role: 'user', content: probe[2] },
      ],
      { addGenerationPrompt: true },
    );
  } catch (e) {
    return (e as Error).message;
  }
  let at = 0;
  for (const p of probe) {
    const i = out.indexOf(p, at);
    if (i < 0) return 'template drops or reorders message content';
    at = i + p.length;
  }
  return undefined;
}

export type ChatTemplateChoice = 'auto' | 'embedded' | 'bitnet' | 'chatml' | (string & {});

export interface ResolveChatTemplateInput {
  /** The model's own template (GGUF `tokenizer.chat_template` / tokenizer_config.json `chat_template`). */
  embedded?: string;
  bosToken?: string;
  eosToken?: string;
  /** Whether a token text exists in the vocab (used for `<|eot_id|>` and `<|im_end|>`). */
  hasToken?: (text: string) => boolean;
  /** Default 'auto'; see the file comment. */
  choice?: ChatTemplateChoice;
}

/** Picks the template as described in the file comment. */
export function resolveChatTemplate(input: ResolveChatTemplateInput): ChatTemplate {
  const tokens = { bosToken: input.bosToken, eosToken: input.eosToken };
  const has = input.hasToken ?? (() => false);
  const choice = input.choice ?? 'auto';
  const chatml = (reason?: string) =>
    new JinjaChatTemplate('chatml', CHATML_CHAT_TEMPLATE, tokens, has('<|im_end|>') ? [] : ['<|im_end|>'], reason);
  const bitnet = (reason?: string) => new JinjaChatTemplate('bitnet', BITNET_CHAT_TEMPLATE, tokens, [], reason);
  switch (choice) {
    case 'bitnet':
      return bitnet();
    case 'chatml':
      return chatml();
    case 'embedded':
      if (input.embedded === undefined) {
        throw BitNetError.Tokenization('CHAT_TEMPLATE_INVALID', 'the model has no embedded chat template');
      }
      return new JinjaChatTemplate('embedded', input.embedded, tokens);
    case 'auto': {
      let reason: string | undefined;
      if (input.embedded !== undefined && input.embedded.trim() !== '') {
        reason = checkChatTemplate(input.embedded, tokens);
        if (reason === undefined) return new JinjaChatTemplate('embedded', input.embedded, tokens);
      }
      return has('<|eot_id|>') ? bitnet(reason) : chatml(reason);
    }
    default:
      return new JinjaChatTemplate('custom', choice, tokens);
  }
}

function metaString(meta: GGUFMetadata, key: string): string | undefined {
  const v = meta.get(key)?.value;
  return typeof v === 'string' ? v : undefined;
}

function metaTokenText(meta: GGUFMetadata, key: string, tokens: readonly string[] | undefined): string | undefined {
  const raw = meta.get(key)?.value;
  const id = typeof raw === 'bigint' ? Number(raw) : raw;
  if (typeof id !== 'number' || !tokens || id < 0 || id >= tokens.length) return undefined;
  return tokens[id];
}

/** The chat template for a GGUF file (see the file comment for the selection rules). */
export function createChatTemplateFromGGUF(meta: GGUFMetadata, opts?: { template?: ChatTemplateChoice }): ChatTemplate {
  const tv = meta.get('tokenizer.ggml.tokens')?.value;
  const tokens = Array.isArray(tv) && tv.every((t) => typeof t === 'string') ? (tv as string[]) : undefined;
  const model = metaString(meta, 'tokenizer.ggml.model');
  // SentencePiece vocabs default to bos 1 / eos 2 when the ids are absent (llama.cpp).
  const bos =
    metaTokenText(meta, 'tokenizer.ggml.bos_token_id', tokens) ?? (model === 'llama' ? tokens?.[1] : undefined);
  const eos =
    metaTokenText(meta, 'tokenizer.ggml.eos_token_id', tokens) ?? (model === 'llama' ? tokens?.[2] : undefined);
  return resolveChatTemplate({
    embedded: metaString(meta, 'tokenizer.chat_template'),
    bosToken: bos,
    eosToken: eos,
    hasToken: (t) => tokens?.includes(t) ?? false,
    choice: opts?.template,
  });
}

function isChatTemplate(x: unknown): x is ChatTemplate {
  return typeof x === 'object' && x !== null && typeof (x as ChatTemplate).renderSegments === 'function';
}

function templateOf(src: Tokenizer | ChatTemplate | string): ChatTemplate {
  if (typeof src === 'string') return createChatTemplate(src);
  if (isChatTemplate(src)) return src;
  if (src.chatTemplate) return src.chatTemplate;
  throw BitNetError.Tokenization('CHAT_TEMPLATE_INVALID', 'this tokenizer has no chat template');
}

/** Renders `messages` to prompt text (see the file comment). */
export function applyChatTemplate(
  tokenizerOrTemplateSource: Tokenizer | ChatTemplate | string,
  messages: readonly ChatMessage[],
  opts: ChatRenderOptions = {},
): string {
  return templateOf(tokenizerOrTemplateSource).render(messages, opts);
}

/** Renders and tokenizes `messages` (see the file comment). */
export function encodeChat(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: ChatRenderOptions & { template?: ChatTemplate } = {},
): number[] {
  const t = opts.template ?? templateOf(tokenizer);
  const segments = t.renderSegments(messages, opts);
  // Roles are written into the template's own text (parsed for control tokens), so a role must not carry
  // control-token text, as written or after the filters templates apply to it (`| capitalize`, ...).
  const checked = new Set<string>();
  messages.forEach((m, i) => {
    if (checked.has(m.role)) return;
    checked.add(m.role);
    const variants = contentVariants(m.role);
    for (let k = 0, v = variants.at(0); v !== undefined; k++, v = variants.at(k)) {
      const plain = tokenizer.encode(v);
      const parsed = tokenizer.encode(v, { parseSpecial: true });
      if (parsed.length !== plain.length || parsed.some((id, j) => id !== plain[j])) {
        throw BitNetError.Tokenization('CHAT_MESSAGES_INVALID', `message ${i} has control-token text in its role`, {
          index: i,
        });
      }
    }
  });
  const bosId = tokenizer.specialTokens.bosTokenId;
  const addBos = tokenizer.addBos && bosId !== undefined;
  // Drop a BOS the template wrote at the very start: encode adds it once per the vocab.
  if (addBos && t.bosToken !== '' && segments.length > 0 && segments[0].special) {
    const first = segments[0];
    if (first.text.startsWith(t.bosToken)) {
      segments[0] = { text: first.text.slice(t.bosToken.length), special: true };
    }
  }
  const ids = tokenizer.encodeSegments(segments);
  return addBos ? [bosId as number, ...ids] : ids;
}
