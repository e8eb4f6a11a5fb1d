/**
 * GGUF metadata values as the reader hands them out.
 *
 * - integers up to 32 bits, f32 and f64: `number`
 * - u64 / i64: `bigint` (use `metaNumber` to read them as numbers with a range check)
 * - bool: `boolean`, string: `string`
 * - arrays of strings: `string[]`; arrays of numbers: a typed array of the element type
 *   (Uint8Array, Int8Array, Uint16Array, Int16Array, Uint32Array, Int32Array, Float32Array,
 *   BigUint64Array, BigInt64Array, Float64Array); arrays of bools: `boolean[]`.
 */
export const GGUFValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GGUFValueType = (typeof GGUFValueType)[keyof typeof GGUFValueType];

export type GGUFNumericArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

export type GGUFValue = number | bigint | boolean | string | string[] | boolean[] | GGUFNumericArray;

/** A typed metadata entry: the writer needs the GGUF type, the reader records it. */
export interface GGUFEntry {
  type: GGUFValueType;
  /** For ARRAY entries: the element type. */
  arrayType?: GGUFValueType;
  value: GGUFValue;
}

export type GGUFMetadata = Map<string, GGUFEntry>;
