/**
 * GBNF for JSON numbers within bounds (JSON Schema's minimum / maximum), exact, as expressions
 * over digit strings. Magnitudes have at most MAX_DIGITS digits, as the unbounded integer rule of
 * json-schema.ts does (bounds past that are clamped to it).
 *
 * A range of digit strings of one length [x, y] splits at the first digit where they differ:
 * x's digit followed by [x's rest, 99…9], the digits between followed by anything, and y's digit
 * followed by [00…0, y's rest]; lengths between those of the bounds take every string.
 */

/** Integer digits at most (a weak model can otherwise write digits forever). */
export const MAX_DIGITS = 16;
export const MAX_MAGNITUDE = 10n ** BigInt(MAX_DIGITS) - 1n;

const lit = (s: string) => `"${s}"`;
const digits = (n: bigint) => n.toString().length;

/** Digit strings of equal length from x to y (x ≤ y), as alternatives. */
function sameLength(x: string, y: string): string {
  if (x === y) return lit(x);
  if (x.length === 1) return `[${x}-${y}]`;
  const rest = x.length - 1;
  const [xr, yr] = [x.slice(1), y.slice(1)];
  if (x[0] === y[0]) return `${lit(x[0])} (${sameLength(xr, yr)})`;
  const alts: string[] = [];
  let loD = Number(x[0]);
  let hiD = Number(y[0]);
  if (!/^0*$/.test(xr)) {
    alts.push(`${lit(x[0])} (${sameLength(xr, '9'.repeat(rest))})`);
    loD++;
  }
  const last = /^9*$/.test(yr) ? undefined : `${lit(y[0])} (${sameLength('0'.repeat(rest), yr)})`;
  if (last) hiD--;
  if (loD <= hiD) alts.push(`${loD === hiD ? lit(String(loD)) : `[${loD}-${hiD}]`} [0-9]{${rest}}`);
  if (last) alts.push(last);
  return alts.join(' | ');
}

/** The digits (no sign, no leading zero) of the integers in [a, b], a ≥ 0; b null: up to MAX_DIGITS digits. */
export function magnitudeRange(a: bigint, b: bigint | null): string {
  const hi = b === null || b > MAX_MAGNITUDE ? MAX_MAGNITUDE : b;
  const la = digits(a);
  const lb = digits(hi);
  const alts: string[] = [];
  for (let d = la; d <= lb; d++) {
    const lo = d === la ? a : 10n ** BigInt(d - 1);
    const top = d === lb ? hi : 10n ** BigInt(d) - 1n;
    // a whole length: one alternative for every length up to the last
    if (lo === 10n ** BigInt(d - 1) && top === 10n ** BigInt(d) - 1n && d > 1 && d < lb) {
      alts.push(`[1-9] [0-9]{${d - 1},${lb - 2}}`);
      d = lb - 1;
      continue;
    }
    alts.push(sameLength(lo.toString(), top.toString()));
  }
  return alts.join(' | ');
}

/** Canonical JSON integers n with lo ≤ n ≤ hi (null: unbounded; the caller checks lo ≤ hi). */
export function integerRange(lo: bigint | null, hi: bigint | null): string {
  const parts: string[] = [];
  if (hi === null || hi >= 0n) parts.push(`(${magnitudeRange(lo !== null && lo > 0n ? lo : 0n, hi)})`);
  if (lo === null || lo < 0n)
    parts.push(`"-" (${magnitudeRange(hi !== null && hi < 0n ? -hi : 1n, lo === null ? null : -lo)})`);
  return parts.join(' | ');
}

const FRACTION = `("." [0-9]{1,${MAX_DIGITS}})`;
const ZERO_FRACTION = `("." "0"{1,${MAX_DIGITS}})?`;

/**
 * JSON numbers x with lo ≤ x ≤ hi for integer bounds (null: unbounded), without an exponent.
 * x = ±(m + f), m the integer part: a bound's own integer part takes only a zero fraction.
 */
export function numberRange(lo: bigint | null, hi: bigint | null): string {
  const parts: string[] = [];
  if (hi === null || hi >= 0n) {
    const a = lo !== null && lo > 0n ? lo : 0n;
    if (hi === null) parts.push(`(${magnitudeRange(a, null)}) ${FRACTION}?`);
    else {
      if (a <= hi - 1n) parts.push(`(${magnitudeRange(a, hi - 1n)}) ${FRACTION}?`);
      parts.push(`(${magnitudeRange(hi, hi)}) ${ZERO_FRACTION}`);
    }
  }
  if (lo === null || lo < 0n) {
    // −(m + f) with −hi ≤ m + f ≤ −lo
    const mMin = hi !== null && hi < 0n ? -hi : 0n;
    if (lo === null) parts.push(`"-" (${magnitudeRange(mMin, null)}) ${FRACTION}?`);
    else {
      const mMax = -lo;
      if (mMin <= mMax - 1n) parts.push(`"-" (${magnitudeRange(mMin, mMax - 1n)}) ${FRACTION}?`);
      parts.push(`"-" (${magnitudeRange(mMax, mMax)}) ${ZERO_FRACTION}`);
    }
  }
  return parts.join(' | ');
}
