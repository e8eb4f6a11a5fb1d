/**
 * A progress bar for the CLI's long commands (convert, pull), written to stderr. On a terminal it
 * redraws one line (at most every 100 ms); elsewhere (logs, CI, tests) it prints a line per 10%.
 * Runtime-free: the caller passes the writer and whether it is a terminal.
 */
export interface ProgressOutput {
  write(s: string): void;
  isTTY?: boolean;
}

/** A byte count for people: `812.3 MiB`, `1.18 GiB`. */
export function human(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

export class ProgressBar {
  private readonly out: ProgressOutput;
  private readonly label: string;
  private readonly width: number;
  private lastDraw = 0;
  private lastDecile = -1;
  private done = 0;
  private total: number | undefined;

  constructor(out: ProgressOutput, label: string, total?: number, width = 30) {
    this.out = out;
    this.label = label;
    this.total = total;
    this.width = width;
  }

  update(done: number, total?: number, detail = ''): void {
    this.done = done;
    if (total !== undefined) this.total = total;
    const now = Date.now();
    const t = this.total;
    if (this.out.isTTY) {
      if (now - this.lastDraw < 100 && done !== t) return;
      this.lastDraw = now;
      this.out.write(`\r\x1b[2K${this.line(detail)}`);
      return;
    }
    const decile = t ? Math.floor((10 * done) / t) : -1;
    if (decile > this.lastDecile) {
      this.lastDecile = decile;
      this.out.write(`${this.line(detail)}\n`);
    }
  }

  private line(detail: string): string {
    const t = this.total;
    if (!t) return `${this.label} ${human(this.done)} ${detail}`.trimEnd();
    const frac = Math.min(1, this.done / t);
    const fill = Math.round(frac * this.width);
    const bar = `${'#'.repeat(fill)}${'.'.repeat(this.width - fill)}`;
    return `${this.label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${human(this.done)}/${human(t)} ${detail}`.trimEnd();
  }

  finish(): void {
    if (this.out.isTTY) this.out.write('\n');
  }
}

/** Parses a byte size: `67108864`, `64MiB`, `64M`, `1.5GiB`, `500MB`, `512KiB`. */
export function parseByteSize(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(s.trim());
  if (!m) return undefined;
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const base = m[3].toLowerCase() === 'b' && m[2] ? 1000 : 1024;
  const v = Number(m[1]) * base ** pow;
  return Number.isSafeInteger(Math.round(v)) && v > 0 ? Math.round(v) : undefined;
}

/** One bar per label (a file being downloaded, a conversion), made on first use; `finish` ends them all. */
export class ProgressBars {
  private readonly out: ProgressOutput;
  private readonly bars = new Map<string, ProgressBar>();

  constructor(out: ProgressOutput) {
    this.out = out;
  }

  get(label: string): ProgressBar {
    let bar = this.bars.get(label);
    if (!bar) this.bars.set(label, (bar = new ProgressBar(this.out, label)));
    return bar;
  }

  finish(): void {
    for (const bar of this.bars.values()) bar.finish();
  }
}
