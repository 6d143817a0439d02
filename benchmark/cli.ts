#!/usr/bin/env node
// `ring-flash-attn <command> [flags]`, the package's bin. Each command lives in its own module
// and is named here once: a new one (say `launch`) is a module exporting a Command and one line
// in COMMANDS. Modules load only when their command runs or the command list is printed.
import fs from 'node:fs';
import { exitWith, PROGRAM, reportFailure, runCommand, type Command } from './cli_command.js';
import { UsageError } from './cli_flags.js';

const COMMANDS: Record<string, () => Promise<Command>> = {
  bench: async () => (await import('./readme_table.js')).benchCommand,
  'bench:kernel': async () => (await import('./kernel.js')).kernelCommand,
  'bench:targets': async () => (await import('./issue_targets.js')).targetsCommand,
  'bench:chart': async () => (await import('./render_chart.js')).chartCommand,
  launch: async () => (await import('./launch.js')).launchCommand,
};

async function overview(): Promise<string> {
  const commands = await Promise.all(
    Object.entries(COMMANDS).map(async ([name, load]) => [name, (await load()).summary] as const),
  );
  const width = Math.max(...commands.map(([n]) => n.length));
  return [
    `usage: ${PROGRAM} <command> [flags]`,
    '',
    'commands:',
    ...commands.map(([n, s]) => `  ${n.padEnd(width)}  ${s}`),
    '',
    `${PROGRAM} <command> --help lists the flags of a command; --version prints the package version.`,
  ].join('\n');
}

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === '-h') {
    console.log(await overview());
    return 0;
  }
  if (first === '--version') {
    console.log(version());
    return 0;
  }
  const load = first === undefined ? undefined : COMMANDS[first];
  if (!load) {
    const why =
      first === undefined
        ? 'missing the command'
        : first.startsWith('-')
          ? `unknown flag ${first} (flags follow the command: ${PROGRAM} bench ${first})`
          : `unknown command ${first} (one of ${Object.keys(COMMANDS).join(', ')})`;
    return reportFailure(PROGRAM, new UsageError(why));
  }
  return runCommand(await load(), rest);
}

main(process.argv.slice(2)).then(exitWith, (e) => exitWith(reportFailure(PROGRAM, e)));
