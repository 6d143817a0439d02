// `ring-flash-attn launch`: starts the processes of one runtime on this machine with torchrun's
// variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
// MASTER_PORT), so that `init()` in the script joins them through the rendezvous
// (runtime/rendezvous.ts). It forwards SIGINT, SIGTERM and SIGHUP to them, and when one exits
// with a failure it stops the others and fails too, so that no process waits for a dead peer.
import { spawn, type ChildProcess } from 'node:child_process';
import { RingFlashAttnError } from '../runtime/errors.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { bad, UsageError, type ValueFlag } from './cli_flags.js';

const int =
  (min: number): ValueFlag<number>['parse'] =>
  (raw, flag) => {
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min)
      throw bad(flag, raw, `expected an integer >= ${min}`);
    return n;
  };

function parseMaster(raw: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(raw);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535)
    throw bad(flag, raw, 'expected HOST:PORT, the machine of node 0 and a free port');
  return { host: (m[1] ?? m[2])!, port };
}

const flags = {
  nproc: { value: 'N', help: 'processes to start on this machine (one per GPU, as torchrun)', parse: int(1) },
  nnodes: { value: 'M', help: 'machines that run the job', default: '1', parse: int(1) },
  'node-rank': { value: 'R', help: 'index of this machine, 0 to M-1', default: '0', parse: int(0) },
  master: {
    value: 'ADDR:PORT',
    help: 'where the process of rank 0 hosts the rendezvous store: an address of node 0 that every node reaches, and a free port',
    default: '127.0.0.1:29500 (one node)',
    parse: parseMaster,
  },
  'grace-ms': {
    value: 'MS',
    help: 'how long the other processes get to stop after one failed, before they are killed',
    default: '5000',
    parse: int(0),
  },
} satisfies Record<string, ValueFlag<unknown>>;

/** The environment of process `local` of this node. */
export function launchEnv(
  base: NodeJS.ProcessEnv,
  o: { nproc: number; nnodes: number; nodeRank: number; host: string; port: number },
  local: number,
): NodeJS.ProcessEnv {
  return {
    ...base,
    RANK: String(o.nodeRank * o.nproc + local),
    WORLD_SIZE: String(o.nproc * o.nnodes),
    LOCAL_RANK: String(local),
    LOCAL_WORLD_SIZE: String(o.nproc),
    GROUP_RANK: String(o.nodeRank),
    MASTER_ADDR: o.host,
    MASTER_PORT: String(o.port),
  };
}

async function launch(
  o: { nproc: number; nnodes: number; nodeRank: number; host: string; port: number; graceMs: number },
  script: string,
  args: string[],
): Promise<void> {
  const children: ChildProcess[] = [];
  const exited = new Set<number>();
  let failure: string | undefined;
  const stopOthers = (signal: NodeJS.Signals) => {
    for (const [i, c] of children.entries()) if (!exited.has(i)) c.kill(signal);
  };
  let killTimer: NodeJS.Timeout | undefined;
  const fail = (why: string) => {
    if (failure) return;
    failure = why;
    stopOthers('SIGTERM');
    killTimer = setTimeout(() => stopOthers('SIGKILL'), o.graceMs);
    killTimer.unref();
  };
  const forwarded: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const onSignal = (signal: NodeJS.Signals) => {
    failure ??= `the launcher got ${signal}`;
    stopOthers(signal);
  };
  for (const s of forwarded) process.on(s, onSignal);
  try {
    await Promise.all(
      Array.from({ length: o.nproc }, (_, local) => {
        const rank = o.nodeRank * o.nproc + local;
        const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
          stdio: 'inherit',
          env: launchEnv(process.env, o, local),
        });
        children.push(child);
        return new Promise<void>((resolve) => {
          child.once('error', (e) => {
            exited.add(local);
            fail(`process ${rank} could not start: ${e.message}`);
            resolve();
          });
          child.once('exit', (code, signal) => {
            exited.add(local);
            if (code !== 0)
              fail(
                `process ${rank} (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`,
              );
            resolve();
          });
        });
      }),
    );
  } finally {
    for (const s of forwarded) process.off(s, onSignal);
    clearTimeout(killTimer);
  }
  if (failure)
    throw new RingFlashAttnError(
      'E_WORKER',
      `${failure}; ${o.nproc > 1 ? 'the other processes of this node were stopped' : 'nothing else ran here'}`,
    );
}

export const launchCommand: Command<typeof flags> = {
  name: 'launch',
  summary: "start the processes of one runtime on this machine, with torchrun's variables",
  description: [
    'Each process runs SCRIPT with node; init() in it joins the others (RANK, WORLD_SIZE, LOCAL_RANK,',
    'LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set). Run the same command on every machine with',
    'its --node-rank. When a process fails the others are stopped and the launcher exits non-zero.',
    'Arguments after SCRIPT go to it; put -- before the first one that starts with a dash.',
  ].join('\n'),
  flags,
  positionals: {
    usage: 'SCRIPT [ARG...]',
    help: 'the script every process runs, and its arguments',
    min: 1,
    max: Infinity,
  },
  async run(v, positionals) {
    if (v.nproc === undefined) throw new UsageError('--nproc is required');
    const nnodes = v.nnodes ?? 1;
    const nodeRank = v['node-rank'] ?? 0;
    if (nodeRank >= nnodes)
      throw new UsageError(`--node-rank ${nodeRank}: expected an integer below --nnodes (${nnodes})`);
    if (nnodes > 1 && !v.master)
      throw new UsageError(
        '--master ADDR:PORT is required with --nnodes above 1 (an address of node 0 every node reaches)',
      );
    const { host, port } = v.master ?? { host: '127.0.0.1', port: 29500 };
    const [script, ...args] = positionals as [string, ...string[]];
    await launch(
      { nproc: v.nproc, nnodes, nodeRank, host, port, graceMs: v['grace-ms'] ?? 5000 },
      script,
      args,
    );
  },
};

if (isMain(import.meta.url)) exitWith(await runCommand(launchCommand, process.argv.slice(2)));
