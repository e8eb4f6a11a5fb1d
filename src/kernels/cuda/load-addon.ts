/**
 * Finding and loading the CUDA addon lazily, and turning every way it can be missing into
 * BitNetError Device 'BACKEND_UNAVAILABLE' with the reason in `details.reason`:
 *   'not-node'            no Node.js (process.getBuiltinModule) in this runtime;
 *   'no-addon'            no bitnet_cuda.node at any candidate path (`details.tried`);
 *   'addon-load-failed'   the file exists but the dynamic loader refused it (`details.cause`);
 *   'api-version'         the addon speaks another C API version;
 *   'no-driver'           no usable CUDA driver (cudaGetDeviceCount returned 35/34);
 *   'no-gpu'              a driver but no GPU, or the device index does not exist;
 *   'device-error'        any other failure of the device probe.
 *
 * No static node:* import: this module is safe to import from the runtime-neutral core; Node's
 * modules are reached through process.getBuiltinModule only when a CUDA backend is requested.
 */
import { BitNetError } from '../../errors.ts';
import { CUDA_ADDON_API_VERSION, type CudaAddon, type CudaDeviceInfo } from './addon-types.ts';

/** Environment variable naming the addon file (bitnet_cuda.node). */
export const CUDA_ADDON_ENV = 'BITNET_CUDA_ADDON';

interface NodeProcess {
  env?: Record<string, string | undefined>;
  getBuiltinModule?: (id: string) => unknown;
}

function nodeProcess(): NodeProcess | undefined {
  return (globalThis as { process?: NodeProcess }).process;
}

function unavailable(
  reason: string,
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): BitNetError {
  return BitNetError.Device(
    'BACKEND_UNAVAILABLE',
    `the cuda backend is unavailable: ${message}`,
    { backend: 'cuda', reason, ...details },
    cause,
  );
}

/**
 * Where the addon is looked for, in order: the explicit path, $BITNET_CUDA_ADDON, then the
 * repository's own build output (gpu-lambda/addon/build/Release, located by path only: src/ does
 * not import anything from gpu-lambda/).
 */
export function addonCandidates(explicit?: string, searchDefaults = true): string[] {
  const out: string[] = [];
  if (explicit) out.push(explicit);
  if (!searchDefaults) return out;
  const env = nodeProcess()?.env?.[CUDA_ADDON_ENV];
  if (env) out.push(env);
  try {
    const url = new URL('../../../gpu-lambda/addon/build/Release/bitnet_cuda.node', import.meta.url);
    if (url.protocol === 'file:') out.push(decodeURIComponent(url.pathname));
  } catch {
    // not a file: module URL (bundled): no default location
  }
  return [...new Set(out)];
}

export interface LoadedAddon {
  addon: CudaAddon;
  path: string;
  /** The probed device; undefined when `probeDevice` was false. */
  device: CudaDeviceInfo | undefined;
}

export interface LoadAddonOptions {
  path?: string;
  /** Device index to probe (default 0). */
  device?: number;
  /** Probe the device and refuse when there is none (default true; false for the CPU emulation). */
  probeDevice?: boolean;
  /** Also try $BITNET_CUDA_ADDON and the repository's build output (default true). */
  searchDefaults?: boolean;
}

/** Loads the addon (cached per path by Node's require) and checks the device. */
export function loadCudaAddon(opts: LoadAddonOptions = {}): LoadedAddon {
  const proc = nodeProcess();
  const getBuiltin = proc?.getBuiltinModule;
  if (typeof getBuiltin !== 'function') {
    throw unavailable('not-node', 'native addons need Node.js (>= 22.3) and this runtime is not Node');
  }
  const fs = getBuiltin('node:fs') as { existsSync(p: string): boolean };
  const mod = getBuiltin('node:module') as { createRequire(from: string | URL): (id: string) => unknown };
  const tried = addonCandidates(opts.path, opts.searchDefaults ?? true);
  const path = tried.find((p) => fs.existsSync(p));
  if (!path) {
    throw unavailable(
      'no-addon',
      `no CUDA addon found (tried ${tried.join(', ') || 'nothing'}); build it with "npx node-gyp rebuild --directory gpu-lambda/addon" or set ${CUDA_ADDON_ENV}`,
      { tried },
    );
  }
  let addon: CudaAddon;
  try {
    addon = mod.createRequire(import.meta.url)(path) as CudaAddon;
  } catch (e) {
    throw unavailable(
      'addon-load-failed',
      `${path} could not be loaded: ${e instanceof Error ? e.message : String(e)}`,
      { path, cause: String(e) },
      e,
    );
  }
  const version = addon.apiVersion();
  if (version !== CUDA_ADDON_API_VERSION) {
    throw unavailable(
      'api-version',
      `${path} implements C API ${version}, this runtime expects ${CUDA_ADDON_API_VERSION}`,
      {
        path,
        version,
      },
    );
  }
  if (opts.probeDevice === false) return { addon, path, device: undefined };
  const device = addon.queryDevice(opts.device ?? 0);
  if (!device.ok) {
    const reason =
      device.cudaError === 35 || device.cudaError === 34
        ? 'no-driver'
        : device.cudaError === 100 || device.status === 'BN_ERR_NO_DEVICE'
          ? 'no-gpu'
          : 'device-error';
    throw unavailable(reason, device.error || device.status, {
      path,
      status: device.status,
      cudaError: device.cudaError,
      deviceCount: device.deviceCount,
      runtimeVersion: device.runtimeVersion,
    });
  }
  return { addon, path, device };
}
