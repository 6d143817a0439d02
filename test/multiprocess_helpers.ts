// The multi-process suites' way of running processes: through the launcher, or started one by
// one so that a test can kill one; each child (fixtures/multiprocess_child.ts) writes a report.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(here, 'fixtures', 'multiprocess_child.js');
export const LAUNCHER = path.join(here, '..', 'benchmark', 'cli.js');

export type Encoded = { b64: string };
export type ChildReport = {
  localRanks?: number[];
  world?: number;
  processes?: number;
  initMs?: number;
  callMs?: number;
  results?: Record<string, Record<string, Encoded>>[];
  error?: { code: string; message: string };
  after?: 'ok' | { code: string };
  driver?: 'ok' | { code: string; message: string };
  /** Driver mode: bytes this process's store connection carried, and a serving process's failure. */
  storeBytes?: number;
  served?: 'ok';
  serveError?: { code: string; message: string };
  initError?: { code: string; message: string };
  ms?: number;
};

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * A port on 127.0.0.1 that refuses connections and that the OS never hands out for port 0 (it is
 * below the ephemeral range), so no store of another test can come to listen there while a test
 * waits on it, as a port from freePort() can.
 */
export async function refusedPort(): Promise<number> {
  for (let port = 1; port < 1024; port++) {
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
    });
    if (refused) return port;
  }
  throw new Error('refusedPort: every port below 1024 on 127.0.0.1 accepts connections');
}

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-mp-'));
}

export function exited(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Writes `body` (which may use `fs`) as the launched script dir/script.mjs; returns its path. */
export function writeScript(dir: string, body: string): string {
  const script = path.join(dir, 'script.mjs');
  fs.writeFileSync(script, `import fs from 'node:fs';\n${body}`);
  return script;
}

/** Starts `ring-flash-attn launch ...args`; `stderr()` is what it has written there so far. */
export function startLauncher(args: string[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(process.execPath, [LAUNCHER, 'launch', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return { child, stderr: () => stderr };
}

/** Runs `job` on `nproc` processes through `ring-flash-attn launch`; resolves to each process's report. */
export async function launch(
  nproc: number,
  job: object,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ reports: ChildReport[]; code: number | null; stderr: string }> {
  const out = tmpDir();
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [LAUNCHER, 'launch', '--nproc', String(nproc), '--master', `127.0.0.1:${port}`, CHILD],
    { env: { ...env, MP_CHILD: JSON.stringify({ ...job, out }) }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const { code } = await exited(child);
  const reports = Array.from({ length: nproc }, (_, p) => {
    const f = path.join(out, `proc${p}.json`);
    return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as ChildReport) : {};
  });
  fs.rmSync(out, { recursive: true, force: true });
  return { reports, code, stderr };
}

/** Starts the processes directly (no launcher), so the test can kill one of them. */
export function startProcesses(nproc: number, port: number, job: object, out: string): ChildProcess[] {
  return Array.from({ length: nproc }, (_, p) =>
    spawn(process.execPath, [CHILD], {
      env: {
        ...process.env,
        RANK: String(p),
        WORLD_SIZE: String(nproc),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        MP_CHILD: JSON.stringify({ ...job, out }),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
}

export async function waitForFile(file: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
