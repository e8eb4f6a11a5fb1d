/**
 * ByteSource: random-access bytes of a model file, wherever they live (memory, a local file,
 * HTTP Range, S3, R2). Everything that reads model files goes through this seam so that the
 * GGUF reader never assumes a local file.
 */
import { BitNetError } from '../errors.ts';

export interface ReadOptions {
  signal?: AbortSignal;
}

export interface ByteSource {
  /** Total size in bytes, known once the source is open. */
  readonly size: number;
  /** A strong validator (ETag) when the transport has one; reads fail if it changes. */
  readonly etag?: string;
  /** Human-readable location for error messages. */
  readonly description: string;
  /** Exactly `length` bytes starting at `offset`; a short read is an Io error. */
  read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array>;
  close?(): Promise<void>;
}

/** Validates a read request against the source size before any I/O. */
export function checkRange(src: { size: number; description: string }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw BitNetError.Io('BAD_RANGE', `invalid read range offset=${offset} length=${length}`, {
      offset,
      length,
      source: src.description,
    });
  }
  if (offset + length > src.size) {
    throw BitNetError.Io('READ_PAST_EOF', `read of ${length} bytes at ${offset} runs past the end (${src.size})`, {
      offset,
      length,
      size: src.size,
      source: src.description,
    });
  }
}

/** An in-memory source (tests, synthetic models, bytes already fetched). Reads are zero-copy views. */
export class MemorySource implements ByteSource {
  readonly size: number;
  readonly description: string;
  private readonly bytes: Uint8Array;

  constructor(bytes: Uint8Array, description = 'memory') {
    this.bytes = bytes;
    this.size = bytes.byteLength;
    this.description = description;
  }

  async read(offset: number, length: number, opts?: ReadOptions): Promise<Uint8Array> {
    opts?.signal?.throwIfAborted();
    checkRange(this, offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
}
