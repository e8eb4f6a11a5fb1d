/**
 * Bearer API keys, compared in constant time.
 *
 * Both the presented key and every configured key are hashed with SHA-256 (Web Crypto, present
 * in Node, workerd and Lambda), and the 32-byte digests are compared with an XOR fold that never
 * exits early. Hashing first makes the comparison independent of the keys' lengths, and every
 * configured key is checked on every request, so timing reveals neither which key nearly
 * matched nor how much of it.
 */
import { BitNetError } from '../errors.ts';

const enc = new TextEncoder();

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(s)));
}

/** Constant-time equality of two equal-length byte arrays. */
export function timingSafeEqualBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export class ApiKeys {
  private readonly digests: Promise<Uint8Array[]>;
  readonly count: number;

  constructor(keys: readonly string[]) {
    const clean = keys.map((k) => k.trim()).filter((k) => k.length > 0);
    this.count = clean.length;
    this.digests = Promise.all(clean.map(digest));
  }

  get enabled(): boolean {
    return this.count > 0;
  }

  /** Throws Config UNAUTHORIZED (→ 401) unless the Authorization header holds one of the keys. */
  async check(authorization: string | undefined | null): Promise<void> {
    const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
    const ok = await this.compare(m);
    if (!m) {
      // A header without the Bearer scheme (a bare key, "Basic …") is not "missing": say what is wrong.
      const sent = (authorization ?? '').trim();
      throw BitNetError.Config(
        'UNAUTHORIZED',
        sent === ''
          ? 'missing API key: send "Authorization: Bearer <key>"'
          : 'the Authorization header must use the Bearer scheme: "Authorization: Bearer <key>"',
      );
    }
    if (!ok) throw BitNetError.Config('UNAUTHORIZED', 'invalid API key');
  }

  /** Whether the Authorization header holds one of the keys (same constant-time comparison, no throw). */
  async matches(authorization: string | undefined | null): Promise<boolean> {
    const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
    return (await this.compare(m)) && m !== null;
  }

  private async compare(m: RegExpExecArray | null): Promise<boolean> {
    const presented = await digest(m ? m[1].trim() : '');
    let ok = false;
    for (const d of await this.digests) ok = timingSafeEqualBytes(presented, d) || ok;
    return ok;
  }
}

/** Keys from a comma-separated list (the BITNET_API_KEYS convention). */
export function parseKeyList(s: string | undefined): string[] {
  return (s ?? '')
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}
