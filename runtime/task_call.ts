// How a worker runs one export of a module for a task, and hands back what it returned: used for
// every task (worker.ts) and for the part of a driver-mode call a rank runs for process 0
// (drive_tasks.ts), so both fail with the same messages.
import type { RankContext } from './context.js';
import { fail } from './errors.js';
import { DeviceTensor } from './tensor.js';
import { mapTree, TENSOR_TAG, uncloneablePath, WALK } from './transfer.js';

/** DeviceTensors in a result come back to the caller as tagged host { shape, dtype, data }. */
export function transferable(value: unknown, c: RankContext): unknown {
  return mapTree(value, (x) =>
    x instanceof DeviceTensor
      ? { [TENSOR_TAG]: true, shape: [...x.shape], dtype: x.dtype, data: c.backend.download(x) }
      : WALK,
  );
}

/** Runs `exportName` of `moduleUrl` with (ctx, arg), waits for its device work, and returns its result as host data. */
export async function callExport(
  c: RankContext,
  moduleUrl: string,
  exportName: string,
  arg: unknown,
): Promise<unknown> {
  const mod = (await import(moduleUrl)) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== 'function') fail('E_ARG', `${moduleUrl} has no exported function '${exportName}'`);
  const value = await (fn as (c: RankContext, arg: unknown) => unknown)(c, arg);
  c.backend.sync();
  const out = transferable(value, c);
  const bad = uncloneablePath(out, 'result');
  if (bad) fail('E_ARG', `'${exportName}' returned a value the main thread cannot receive: ${bad}`);
  return out;
}
