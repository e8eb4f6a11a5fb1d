/** Distribution comparisons for logits: softmax, total-variation distance, top-1 agreement. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

export function tvd(p: ArrayLike<number>, q: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) s += Math.abs(p[i] - q[i]);
  return s / 2;
}

export function argmaxOf(x: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

/** Mean TVD and top-1 agreement between two lists of per-position distributions. */
export function compare(
  a: ArrayLike<number>[],
  b: ArrayLike<number>[],
): { meanTvd: number; top1: number; maxP: number[] } {
  let t = 0;
  let agree = 0;
  const maxP: number[] = [];
  for (let i = 0; i < a.length; i++) {
    t += tvd(a[i], b[i]);
    if (argmaxOf(a[i]) === argmaxOf(b[i])) agree++;
    maxP.push(a[i][argmaxOf(a[i])]);
  }
  return { meanTvd: t / a.length, top1: agree / a.length, maxP };
}
