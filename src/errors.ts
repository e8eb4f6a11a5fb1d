/**
 * BitNetError: the one error type of the runtime.
 *
 * `kind` is the seed's error variant (Model, Tokenization, Device, ...). `code` is a specific,
 * stable SCREAMING_SNAKE string (for example `GGUF_TRUNCATED`) that callers and the HTTP layer
 * can switch on. `details` holds structured context (offsets, sizes, names) for logs.
 */
export const BitNetErrorKind = {
  Model: 'Model',
  Tokenization: 'Tokenization',
  Device: 'Device',
  Quantization: 'Quantization',
  Io: 'Io',
  Config: 'Config',
  Memory: 'Memory',
  Timeout: 'Timeout',
  Capacity: 'Capacity',
} as const;
export type BitNetErrorKind = (typeof BitNetErrorKind)[keyof typeof BitNetErrorKind];

export type ErrorDetails = Record<string, unknown>;

export class BitNetError extends Error {
  readonly kind: BitNetErrorKind;
  readonly code: string;
  readonly details: ErrorDetails;

  constructor(kind: BitNetErrorKind, code: string, message: string, details: ErrorDetails = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'BitNetError';
    this.kind = kind;
    this.code = code;
    this.details = details;
  }

  static Model(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Model', code, message, details, cause);
  }
  static Tokenization(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Tokenization', code, message, details, cause);
  }
  static Device(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Device', code, message, details, cause);
  }
  static Quantization(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Quantization', code, message, details, cause);
  }
  static Io(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Io', code, message, details, cause);
  }
  static Config(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Config', code, message, details, cause);
  }
  static Memory(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Memory', code, message, details, cause);
  }
  static Timeout(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Timeout', code, message, details, cause);
  }
  static Capacity(code: string, message: string, details?: ErrorDetails, cause?: unknown): BitNetError {
    return new BitNetError('Capacity', code, message, details, cause);
  }

  toJSON(): { kind: string; code: string; message: string; details: ErrorDetails } {
    return { kind: this.kind, code: this.code, message: this.message, details: this.details };
  }
}

export function isBitNetError(e: unknown): e is BitNetError {
  return e instanceof BitNetError;
}
