/**
 * A bump allocator over the kernels' shared memory. Everything the kernels touch (weights,
 * descriptors, scratch, the KV mirror) is placed here by the host; the wasm never allocates.
 * Shared memory never detaches its buffer on growth, so views created earlier stay valid.
 */
export const PAGE = 65536;

export class Arena {
  readonly memory: WebAssembly.Memory;
  private top: number;

  constructor(memory: WebAssembly.Memory, start = PAGE) {
    this.memory = memory;
    this.top = start;
  }

  get used(): number {
    return this.top;
  }

  /** Reserves `bytes` (aligned) and returns the address; grows the memory as needed. */
  alloc(bytes: number, align = 64): number {
    const p = Math.ceil(this.top / align) * align;
    const end = p + bytes;
    if (end > 2 ** 32) throw new RangeError(`wasm memory would exceed 4 GiB (${end} bytes)`);
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE));
    this.top = end;
    return p;
  }

  u8(p = 0, n?: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, p, n ?? this.memory.buffer.byteLength - p);
  }
  f32(p: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, p, n);
  }
  f64(p: number, n: number): Float64Array {
    return new Float64Array(this.memory.buffer, p, n);
  }
  i32(p: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, p, n);
  }
  u32(p: number, n: number): Uint32Array {
    return new Uint32Array(this.memory.buffer, p, n);
  }
  view(): DataView {
    return new DataView(this.memory.buffer);
  }
}
