/**
 * bitnet-edge/node: the app on Node's HTTP server (@hono/node-server). Backs `bitnet serve`.
 *
 * Without an API key the server binds to 127.0.0.1 whatever host was asked for, and warns:
 * an unauthenticated model server is for the local machine only.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { type AppDeps, createApp } from '../http/app.ts';
import { parseKeyList } from '../http/auth.ts';

export const LOOPBACK = '127.0.0.1';

export interface NodeServeOptions {
  host?: string;
  /** 0 = any free port (the chosen one is in the result). Default 8080. */
  port?: number;
  warn?: (message: string) => void;
}

export interface RunningServer {
  url: string;
  host: string;
  port: number;
  /** Stops accepting, ends open connections (streams included) and resolves when closed. */
  close(): Promise<void>;
}

/** Keys from --api-key flags plus the comma-separated BITNET_API_KEYS variable. */
export function resolveApiKeys(
  flags: readonly string[] = [],
  env: Record<string, string | undefined> = process.env,
): string[] {
  return [...new Set([...flags.map((k) => k.trim()).filter(Boolean), ...parseKeyList(env.BITNET_API_KEYS)])];
}

/** The host to bind: as asked with keys; loopback only without. */
export function safeHost(host: string | undefined, hasKeys: boolean, warn: (m: string) => void = console.warn): string {
  const asked = host ?? LOOPBACK;
  if (hasKeys) return asked;
  if (asked !== LOOPBACK && asked !== 'localhost' && asked !== '::1') {
    warn(
      `no API key configured: binding to ${LOOPBACK} instead of ${asked} (set --api-key or BITNET_API_KEYS to serve other hosts)`,
    );
  } else {
    warn('no API key configured: serving without authentication on the loopback interface only');
  }
  return LOOPBACK;
}

export async function serveNode(deps: AppDeps, opts: NodeServeOptions = {}): Promise<RunningServer> {
  const host = safeHost(opts.host, (deps.apiKeys?.length ?? 0) > 0, opts.warn);
  const app = createApp(deps);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: host, port: opts.port ?? 8080, overrideGlobalObjects: false }, () =>
      resolve(s as Server),
    ) as Server;
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    host,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
