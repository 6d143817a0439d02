// Progress of a benchmark run, on stderr so that stdout stays the table. On a terminal: a
// cli-progress bar with the cells done, the elapsed time and an ETA (cells differ in length, so
// the ETA firms up as the run goes). Elsewhere (logs, CI, pipes) nothing, as a log wants no
// redraws; RFA_PROGRESS=1 prints one plain line per cell there instead.
import cliProgress from 'cli-progress';

export class Progress {
  private done = 0;
  private readonly bar: cliProgress.SingleBar | null = null;
  private readonly plain: boolean;
  private readonly started = Date.now();

  constructor(
    private readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.plain = !stream.isTTY && process.env.RFA_PROGRESS === '1';
    if (!stream.isTTY) return;
    this.bar = new cliProgress.SingleBar(
      {
        stream,
        format: (options, params, payload: { cell: string }) => {
          const eta =
            params.value > 0 && Number.isFinite(Number(params.eta))
              ? cliProgress.Format.TimeFormat(Number(params.eta), options, 5)
              : 'after the first cell';
          return `${cliProgress.Format.BarFormat(params.progress, options)} ${params.value}/${params.total} cells | ETA ${eta} | ${payload.cell}`;
        },
        // Every cell so far counts towards the ETA: recent cells alone swing with the cell kind.
        etaBuffer: total + 1,
        // The table is printed between redraws (print()); redraw even when nothing changed.
        forceRedraw: true,
        fps: 4,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, { cell: '' });
  }

  /** A cell begins; the ones before it are done. */
  step(label: string): void {
    if (this.bar) this.bar.update(this.done, { cell: label });
    else if (this.plain)
      this.stream.write(
        `progress ${this.done + 1}/${this.total} after ${((Date.now() - this.started) / 1000).toFixed(0)} s: ${label}\n`,
      );
    this.done++;
  }

  /** Prints a line of the table without tearing the bar (the bar redraws below it). */
  print(text: string): void {
    if (this.bar && process.stdout.isTTY) this.stream.write('\r\x1b[2K');
    console.log(text);
  }

  /** Every cell is done. */
  finish(): void {
    this.bar?.update(this.total, { cell: 'done' });
  }

  /** Ends the bar, done or not (after a failure the error line then starts on a line of its own). */
  stop(): void {
    this.bar?.stop();
  }
}
