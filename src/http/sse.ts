/**
 * Server-sent events over a pull-based ReadableStream: the producer advances only when the
 * client reads (high-water mark 0), so a slow client slows the generation instead of growing a
 * buffer, and a client that goes away cancels the stream, which ends the producer.
 */

const enc = new TextEncoder();

export const SSE_HEADERS: Record<string, string> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

export function sseData(payload: unknown): string {
  return `data: ${typeof payload === 'string' ? payload : JSON.stringify(payload)}\n\n`;
}

export function sseEvent(event: string, payload: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(payload)}\n\n`;
}

export type StreamEnd = 'done' | 'cancelled' | 'error';

/** A byte stream of the producer's strings; `onEnd` runs once, however the stream ends. */
export function eventStream(
  produce: AsyncGenerator<string, void>,
  onEnd: (how: StreamEnd) => void,
): ReadableStream<Uint8Array> {
  let ended = false;
  const end = (how: StreamEnd) => {
    if (ended) return;
    ended = true;
    onEnd(how);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const r = await produce.next();
          if (r.done) {
            controller.close();
            end('done');
          } else controller.enqueue(enc.encode(r.value));
        } catch (e) {
          controller.error(e);
          end('error');
        }
      },
      async cancel() {
        end('cancelled');
        await produce.return(undefined).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
