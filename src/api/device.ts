/**
 * Device: where a model runs. Unit variants are members (`Device.Auto`, `Device.Cpu`,
 * `Device.Metal`); the data-carrying one is a function (`Device.Cuda(0)`).
 *
 * Honest about this runtime: the CPU (reference TS, and wasm where it exists) always runs a model.
 * `Cuda(i)` is available only when the gpu-lambda addon loads and finds device i (probed once,
 * lazily); Metal is never available in a JS runtime.
 */
import { BitNetError } from '../errors.ts';
import type { CudaDeviceInfo } from '../kernels/cuda/addon-types.ts';
import { loadCudaAddon } from '../kernels/cuda/load-addon.ts';

/** CUDA device probes, cached per index: the addon is loaded at most once per device. */
const cudaProbes = new Map<number, { info?: CudaDeviceInfo; reason?: string }>();
function probeCuda(index: number): { info?: CudaDeviceInfo; reason?: string } {
  let p = cudaProbes.get(index);
  if (!p) {
    try {
      p = { info: loadCudaAddon({ device: index }).device };
    } catch (e) {
      p = { reason: e instanceof Error ? e.message : String(e) };
    }
    cudaProbes.set(index, p);
  }
  return p;
}

export type DeviceKind = 'Auto' | 'Cpu' | 'Cuda' | 'Metal';

export interface DeviceMemoryInfo {
  total: number;
  free: number;
  used: number;
}

export interface DeviceCapabilities {
  supportsF16: boolean;
  supportsBf16: boolean;
  supportsInt8: boolean;
  maxThreads: number;
  /** For CUDA devices: (major, minor). */
  computeCapability?: [number, number];
  /** WebAssembly SIMD128 is available in this runtime. */
  wasmSimd: boolean;
}

interface NodeProcessLike {
  memoryUsage?: () => { rss: number };
  availableMemory?: () => number;
  constrainedMemory?: () => number;
  getBuiltinModule?: (id: string) => unknown;
}

function proc(): NodeProcessLike | undefined {
  return (globalThis as { process?: NodeProcessLike }).process;
}

// The smallest valid module using a v128 op (i32x4.splat); validates only where SIMD128 exists.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 17, 11,
]);
function hasWasmSimd(): boolean {
  try {
    return typeof WebAssembly !== 'undefined' && WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

export class DeviceSpec {
  readonly kind: DeviceKind;
  readonly index: number | undefined;

  constructor(kind: DeviceKind, index?: number) {
    this.kind = kind;
    this.index = index;
  }

  /** Whether a model can run on this device in this runtime now. */
  isAvailable(): boolean {
    if (this.kind === 'Cuda') return probeCuda(this.index ?? 0).info?.ok === true;
    return this.kind === 'Auto' || this.kind === 'Cpu';
  }

  /** Why the device is unavailable, or undefined. */
  unavailableReason(): string | undefined {
    if (this.kind === 'Cuda') {
      const p = probeCuda(this.index ?? 0);
      return p.info?.ok ? undefined : (p.reason ?? p.info?.error ?? 'no CUDA device');
    }
    if (this.kind === 'Metal') return 'Metal is not reachable from a JavaScript runtime';
    return undefined;
  }

  /** The device this resolves to for execution (Auto → Cpu here). */
  resolve(): DeviceSpec {
    return this.kind === 'Auto' ? Device.Cpu : this;
  }

  memoryInfo(): DeviceMemoryInfo {
    const d = this.resolve();
    const gpu = d.kind === 'Cuda' ? probeCuda(d.index ?? 0).info : undefined;
    if (gpu?.ok) return { total: gpu.totalMem, free: gpu.freeMem, used: gpu.totalMem - gpu.freeMem };
    if (d.kind !== 'Cpu') {
      throw BitNetError.Device('DEVICE_UNAVAILABLE', `${d.toString()} is not available: ${d.unavailableReason()}`, {
        device: d.toString(),
      });
    }
    const p = proc();
    const os = p?.getBuiltinModule?.('node:os') as { totalmem(): number; freemem(): number } | undefined;
    if (os) {
      const total = p?.constrainedMemory?.() || os.totalmem();
      const free = Math.min(p?.availableMemory?.() ?? os.freemem(), total);
      return { total, free, used: total - free };
    }
    throw BitNetError.Device('MEMORY_INFO_UNAVAILABLE', 'this runtime does not report memory figures', {
      device: 'Cpu',
    });
  }

  capabilities(): DeviceCapabilities {
    const threads =
      (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
    const cuda = this.kind === 'Cuda' ? probeCuda(this.index ?? 0).info : undefined;
    return {
      supportsF16: true,
      supportsBf16: true,
      supportsInt8: true,
      maxThreads: this.resolve().kind === 'Cpu' ? threads : 0,
      computeCapability: cuda?.ok ? [cuda.ccMajor, cuda.ccMinor] : undefined,
      wasmSimd: hasWasmSimd(),
    };
  }

  equals(other: DeviceSpec): boolean {
    return this.kind === other.kind && this.index === other.index;
  }

  toString(): string {
    return this.kind === 'Cuda' ? `cuda:${this.index}` : this.kind.toLowerCase();
  }
}

export const Device = {
  Auto: new DeviceSpec('Auto'),
  Cpu: new DeviceSpec('Cpu'),
  Metal: new DeviceSpec('Metal'),
  Cuda(index = 0): DeviceSpec {
    if (!Number.isInteger(index) || index < 0)
      throw BitNetError.Config('BAD_DEVICE', `CUDA device index must be a non-negative integer, got ${index}`);
    return new DeviceSpec('Cuda', index);
  },
  /** Devices that can run a model in this runtime now. */
  availableDevices(): DeviceSpec[] {
    const cuda = probeCuda(0).info;
    const gpus = cuda?.ok
      ? Array.from({ length: cuda.deviceCount }, (_, i) => Device.Cuda(i)).filter((d) => d.isAvailable())
      : [];
    return [Device.Cpu, ...gpus];
  },
  /** Parses "auto", "cpu", "metal", "cuda", "cuda:N". */
  parse(s: string): DeviceSpec {
    const m = /^(auto|cpu|metal|cuda)(?::(\d+))?$/i.exec(s.trim());
    if (!m) throw BitNetError.Config('BAD_DEVICE', `unknown device "${s}" (auto, cpu, metal, cuda:N)`);
    const k = m[1].toLowerCase();
    if (k === 'cuda') return Device.Cuda(m[2] ? Number(m[2]) : 0);
    return k === 'auto' ? Device.Auto : k === 'cpu' ? Device.Cpu : Device.Metal;
  },
};
export type Device = DeviceSpec;
