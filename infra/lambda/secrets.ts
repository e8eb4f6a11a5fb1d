/**
 * Secrets for the CPU function, from Secrets Manager through the AWS Parameters and Secrets Lambda
 * Extension (a layer the stack attaches; it serves `GET /secretsmanager/get?secretId=…` on
 * localhost:2773 with the function's own credentials and caches the answer).
 *
 * The stack never puts a key in the function's configuration: it sets `NAME_SECRET_ARN`, and this
 * module fetches the secret and sets `NAME` before the app reads its environment. Names:
 *   BITNET_API_KEYS_SECRET_ARN      → BITNET_API_KEYS      (client keys, comma-separated)
 *   BITNET_GPU_API_KEY_SECRET_ARN   → BITNET_GPU_API_KEY   (the GPU endpoint's own key)
 *
 * Called on the first invocation, not at init: the extension is certain to be up by then.
 */

export const SECRET_ENV = ['BITNET_API_KEYS', 'BITNET_GPU_API_KEY'] as const;

type Env = Record<string, string | undefined>;

export interface SecretFetchOptions {
  fetch?: typeof fetch;
  /** Attempts per secret (the extension answers 400 for a moment after start-up). Default 5. */
  attempts?: number;
  /** First back-off, ms, doubled each attempt. Default 100. */
  backoffMs?: number;
}

export class SecretError extends Error {
  override name = 'SecretError';
}

async function fetchSecret(env: Env, secretId: string, o: SecretFetchOptions): Promise<string> {
  const port = env.PARAMETERS_SECRETS_EXTENSION_HTTP_PORT || '2773';
  const token = env.AWS_SESSION_TOKEN;
  if (!token) throw new SecretError('AWS_SESSION_TOKEN is not set: not in a Lambda execution environment');
  const url = `http://localhost:${port}/secretsmanager/get?secretId=${encodeURIComponent(secretId)}`;
  const doFetch = o.fetch ?? fetch;
  const attempts = o.attempts ?? 5;
  let wait = o.backoffMs ?? 100;
  let last = '';
  for (let i = 0; i < attempts; i++) {
    try {
      const r = await doFetch(url, { headers: { 'X-Aws-Parameters-Secrets-Token': token } });
      const text = await r.text();
      if (r.ok) {
        const body = JSON.parse(text) as { SecretString?: unknown };
        if (typeof body.SecretString !== 'string')
          throw new SecretError(`secret ${secretId} has no SecretString (binary secrets are not supported)`);
        return body.SecretString;
      }
      last = `HTTP ${r.status}: ${text.slice(0, 200)}`;
      // 4xx other than the start-up 400 (403: no permission, 404: no such secret) will not improve.
      if (r.status !== 400 && r.status < 500) break;
    } catch (e) {
      if (e instanceof SecretError) throw e;
      last = e instanceof Error ? e.message : String(e);
    }
    if (i + 1 < attempts) await new Promise((res) => setTimeout(res, wait));
    wait *= 2;
  }
  throw new SecretError(`could not read secret ${secretId} from the Parameters and Secrets extension: ${last}`);
}

/**
 * Sets each `NAME` whose `NAME_SECRET_ARN` is set, from the secret's string (trimmed). Returns the
 * names set. Throws SecretError when a secret cannot be read.
 */
export async function resolveSecretEnv(env: Env, o: SecretFetchOptions = {}): Promise<string[]> {
  const set: string[] = [];
  for (const name of SECRET_ENV) {
    const arn = env[`${name}_SECRET_ARN`];
    if (!arn) continue;
    env[name] = (await fetchSecret(env, arn, o)).trim();
    set.push(name);
  }
  return set;
}
