// The parts of workerd's modules the Worker tests use (the full @cloudflare/workers-types
// declarations clash with the DOM and Node globals this project type-checks against).
declare module 'cloudflare:workers' {
  export const env: {
    WEIGHTS: {
      put(key: string, value: Uint8Array): Promise<unknown>;
      head(key: string): Promise<{ size: number } | null>;
    };
    [name: string]: unknown;
  };
  export const exports: { default: { fetch(input: Request | string, init?: RequestInit): Promise<Response> } };
}
