// Where a GPU test runs a world of ranks: on distinct GPUs through each point-to-point transport
// when the machine has enough of them, else every rank on GPU 0 through the copy engines (NCCL
// refuses two ranks on one GPU), so a one-GPU machine still runs every ring at worlds 2 and 4.
import type { InitOptions } from '../../index.js';

export interface Placement {
  label: string;
  opts: InitOptions;
}

export function placements(world: number, gpus: number): Placement[] {
  if (gpus === 0) return [];
  if (gpus < world)
    return [{ label: `world ${world} on one GPU (copy-engine)`, opts: { backend: 'cuda', world, devices: Array(world).fill(0), transport: 'copy-engine' } }];
  return (['nccl', 'copy-engine'] as const).map((transport) => ({
    label: `world ${world} (${transport})`, opts: { backend: 'cuda', world, transport },
  }));
}
