// Piscina worker entry: one worker thread per rank (per GPU), pinned by its own pool.
// A task names a module and an export; the worker runs it with its RankContext. Errors come
// back as data (code, message, rank) because structured clone drops custom error fields.
import { workerData } from 'node:worker_threads';
import { Backend } from './backend.js';
import { RankContext, setCurrentContext, type RankInfo } from './context.js';
import { asRingError } from './errors.js';
import { callExport } from './task_call.js';
import { workerErrorChannel, type StrayError } from './transfer.js';

export interface WorkerTask {
  moduleUrl: string;
  exportName: string;
  arg: unknown;
}

export type WorkerResult =
  | { ok: true; value: unknown }
  | { ok: false; error: { code: string; message: string; rank: number; stack?: string } };

const info = workerData as RankInfo;
let ctx: RankContext | undefined;

// An error that escapes a task (a timer or a promise nobody awaits, in user code) belongs to no
// call: it is handed to the main thread, which logs it with the rank and replaces this worker,
// instead of Node killing the thread and piscina charging the error to whatever call runs next.
const strays = workerErrorChannel(info.runtimeId);
strays.unref();
const report = (kind: StrayError['kind']) => (err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  const msg: StrayError = { rank: info.rank, kind, message: e.message, stack: e.stack };
  strays.postMessage(msg);
};
process.on('uncaughtException', report('uncaughtException'));
process.on('unhandledRejection', report('unhandledRejection'));

async function context(): Promise<RankContext> {
  if (ctx) return ctx;
  let backend: Backend;
  if (info.backend === 'cuda') {
    const { CudaBackend } = await import('./cuda_backend.js');
    backend = new CudaBackend(info);
  } else {
    const { CpuBackend } = await import('./cpu_backend.js');
    backend = new CpuBackend(info.timeoutMs);
  }
  ctx = new RankContext(info, backend);
  setCurrentContext(ctx);
  return ctx;
}

export default async function run(task: WorkerTask): Promise<WorkerResult> {
  const rank = info.rank;
  try {
    const c = await context();
    return { ok: true, value: await callExport(c, task.moduleUrl, task.exportName, task.arg) };
  } catch (err) {
    ctx?.backend.abandonComms();
    const e = asRingError(err, 'E_WORKER', rank);
    return { ok: false, error: { code: e.code, message: e.message, rank, stack: e.stack } };
  }
}
