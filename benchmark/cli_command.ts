// One command of the `ring-flash-attn` command line, and the one place that turns its outcome
// into an exit code: 0 done (or --help), 2 a bad command line (before any runtime starts),
// 1 a failure while running. Failures print one line, `ring-flash-attn <command>: <code>:
// <message>`; RFA_DEBUG=1 adds the stack, which a user of the command line does not need.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RingFlashAttnError } from '../runtime/errors.js';
import {
  parseFlags,
  usage,
  UsageError,
  type FlagSpecs,
  type FlagValues,
  type Positionals,
} from './cli_flags.js';

export const PROGRAM = 'ring-flash-attn';

export interface Command<F extends FlagSpecs = FlagSpecs> {
  /** The subcommand: `bench`, `bench:kernel`. */
  name: string;
  /** One line, for `ring-flash-attn --help`. */
  summary: string;
  /** What the command does, for its own --help (may span lines). */
  description: string;
  flags: F;
  positionals?: Positionals;
  /** Throws UsageError for a bad combination of flags before it starts any runtime. */
  run(values: FlagValues<F>, positionals: string[]): Promise<void> | void;
}

export function commandUsage<F extends FlagSpecs>(cmd: Command<F>): string {
  const synopsis = `${PROGRAM} ${cmd.name} [flags]${cmd.positionals ? ` ${cmd.positionals.usage}` : ''}`;
  const summary = `${cmd.summary[0]!.toUpperCase()}${cmd.summary.slice(1)}.`;
  return usage(
    synopsis,
    cmd.description ? `${summary}\n${cmd.description}` : summary,
    cmd.flags,
    cmd.positionals,
  );
}

/** One line for an error: message lines joined, so a log shows it whole. */
function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Prints the failure line (and, with RFA_DEBUG=1, the stack) and returns the exit code. */
export function reportFailure(prefix: string, e: unknown): number {
  if (e instanceof UsageError) {
    console.error(`${prefix}: ${oneLine(e.message)} (see ${prefix} --help)`);
    return 2;
  }
  const err = e as { code?: unknown; name?: unknown; message?: unknown; stack?: unknown } | undefined;
  const code =
    e instanceof RingFlashAttnError
      ? e.code
      : typeof err?.code === 'string'
        ? err.code
        : typeof err?.name === 'string'
          ? err.name
          : 'Error';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  console.error(`${prefix}: ${code}: ${oneLine(message)}`);
  if (process.env.RFA_DEBUG === '1' && typeof err?.stack === 'string') console.error(err.stack);
  return 1;
}

/** Parses `argv`, prints usage for --help, runs the command; resolves to the exit code. */
export async function runCommand<F extends FlagSpecs>(cmd: Command<F>, argv: string[]): Promise<number> {
  const prefix = `${PROGRAM} ${cmd.name}`;
  try {
    const line = parseFlags(argv, cmd.flags, cmd.positionals);
    if (line.help) {
      console.log(commandUsage(cmd));
      return 0;
    }
    await cmd.run(line.values, line.positionals);
    return 0;
  } catch (e) {
    return reportFailure(prefix, e);
  }
}

/** Exits with the code; on success lets the process end by itself (stdout drains first). */
export function exitWith(code: number): void {
  if (code === 0) process.exitCode = 0;
  else process.exit(code);
}

/** True when the module at `url` is the script node was started with. */
export function isMain(url: string): boolean {
  return Boolean(process.argv[1]) && fileURLToPath(url) === path.resolve(process.argv[1]!);
}
