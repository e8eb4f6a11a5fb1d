/**
 * A TCP proxy on 127.0.0.1 that puts faults between the edge and a real GPU server:
 *   pass    forward both ways
 *   reset   close each connection at once (the GPU fails before the first byte)
 *   cut     forward the request, then the response up to the end of its first SSE event,
 *           then close (the GPU fails mid-stream)
 * Counts connections, so a test can see whether the edge called the GPU at all.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export type FaultMode = 'pass' | 'reset' | 'cut';

export class FaultProxy {
  private current: FaultMode = 'pass';
  connections = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;
  private readonly targetPort: number;

  constructor(targetPort: number) {
    this.targetPort = targetPort;
    this.server = createServer((client) => this.handle(client));
  }

  get mode(): FaultMode {
    return this.current;
  }

  /** A new mode applies to new connections; open (kept-alive) ones are dropped. */
  set mode(m: FaultMode) {
    this.current = m;
    for (const s of this.sockets) s.destroy();
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(s: Socket): Socket {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => {});
    return s;
  }

  private handle(client: Socket): void {
    this.connections++;
    this.track(client);
    const mode = this.current;
    if (mode === 'reset') {
      client.resetAndDestroy();
      return;
    }
    const upstream = this.track(connect(this.targetPort, '127.0.0.1'));
    client.pipe(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    if (mode === 'pass') {
      upstream.pipe(client);
      return;
    }
    // cut: pass the response through the end of its first SSE event, then drop both sides.
    let seen = '';
    upstream.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      const body = seen.indexOf('\r\n\r\n');
      const firstEvent = body >= 0 ? seen.indexOf('\n\n', seen.indexOf('data:', body)) : -1;
      if (firstEvent >= 0 && seen.indexOf('data:', body) >= 0) {
        const keep = chunk.length - (seen.length - (firstEvent + 2));
        client.write(chunk.subarray(0, Math.max(0, keep)), () => {
          client.destroy();
          upstream.destroy();
        });
        upstream.pause();
        return;
      }
      client.write(chunk);
    });
  }
}
