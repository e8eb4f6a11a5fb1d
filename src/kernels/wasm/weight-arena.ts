/**
 * Loading weights straight into the kernels' memory, so a model is held once (peak RSS ≈ file size).
 *
 * A WeightArena is a shared WebAssembly.Memory whose views are registered: when the wasm backend is
 * built over a weight table whose tensor views live in an arena, it adopts that memory as its own
 * and copies nothing (model-image.ts). `arenaSource` wraps a ByteSource so that the reads of the
 * given tensor ranges land in the arena (other reads, the GGUF header, stay ordinary): pass the
 * wrapped source to loadModel / BitNetModel.fromFile and build the wasm backend as usual.
 *
 * Without it the backend copies the loader's buffers, and the process then holds the weights twice:
 * the loader's freed buffers are usually kept by the C allocator (they are below its mmap threshold).
 */
import type { ByteSource, ReadOptions } from '../../sources/byte-source.ts';
import { Arena, PAGE } from './arena.ts';
import { createMemory } from './loader.ts';

export class WeightArena {
  readonly memory: WebAssembly.Memory;
  readonly arena: Arena;
  private readonly views = new WeakMap<Uint8Array, number>();

  constructor(initialPages = 16) {
    this.memory = createMemory(initialPages);
    this.arena = new Arena(this.memory, PAGE);
  }

  /** A registered, zeroed view of `bytes` bytes (1 KiB of slack after it: vector reads and prefetch). */
  allocate(bytes: number): Uint8Array {
    const p = this.arena.alloc(bytes + 1024, 64);
    const v = this.arena.u8(p, bytes);
    this.views.set(v, p);
    return v;
  }

  /** The address of a view handed out by allocate(), or undefined. */
  addressOf(view: Uint8Array): number | undefined {
    return this.views.get(view);
  }
}

const arenas = new WeakMap<Uint8Array, WeightArena>();

/** The arena a tensor view lives in, if any. */
export function arenaOf(view: Uint8Array): WeightArena | undefined {
  return arenas.get(view);
}

/** A source whose reads of [offset, offset + length) ranges in `tensors` return arena views. */
export interface ArenaSourceOptions {
  tensors: Iterable<{ offset: number; byteLength: number }>;
  arena?: WeightArena;
  /** Reads straight into a destination (no intermediate buffer), when the inner source allows it. */
  readInto?: (dst: Uint8Array, offset: number) => Promise<void>;
}

export function arenaSource(inner: ByteSource, opts: ArenaSourceOptions): ByteSource & { arena: WeightArena } {
  const arena = opts.arena ?? new WeightArena();
  const ranges = new Map<number, number>();
  for (const t of opts.tensors) ranges.set(t.offset, t.byteLength);
  const src = {
    arena,
    size: inner.size,
    description: inner.description,
    etag: inner.etag,
    async read(offset: number, length: number, ro?: ReadOptions): Promise<Uint8Array> {
      if (ranges.get(offset) !== length || length === 0) return inner.read(offset, length, ro);
      const dst = arena.allocate(length);
      if (opts.readInto) await opts.readInto(dst, offset);
      else dst.set(await inner.read(offset, length, ro));
      arenas.set(dst, arena);
      return dst;
    },
    close: inner.close ? () => inner.close!() : undefined,
  };
  return src as ByteSource & { arena: WeightArena };
}
