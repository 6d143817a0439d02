// A one-line progress bar on stderr (only when stderr is a terminal or RFA_PROGRESS=1).
export class Progress {
  private done = 0;
  private readonly enabled = process.stderr.isTTY || process.env.RFA_PROGRESS === '1';

  constructor(private readonly total: number) {}

  step(label: string): void {
    this.done++;
    if (!this.enabled) return;
    const width = 30;
    const filled = Math.round((this.done / this.total) * width);
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done}/${this.total} ${label.padEnd(48)}`);
    if (this.done === this.total) process.stderr.write('\n');
  }
}
