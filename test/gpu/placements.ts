// Where a GPU test runs a world of ranks: on distinct GPUs through each transport when the
// machine has enough of them, else rank r on GPU r mod #GPUs through the copy engines (NCCL
// refuses two ranks on one GPU), so a one-GPU machine still runs every ring at worlds 2 and 4,
// and a two-GPU one runs world 4 across both.
import type { InitOptions } from '../../index.js';

export interface Placement {
  label: string;
  opts: InitOptions;
}

export function placements(world: number, gpus: number): Placement[] {
  if (gpus === 0) return [];
  if (gpus < world) {
    const devices = Array.from({ length: world }, (_, r) => r % gpus);
    return [
      {
        label: `world ${world} on ${gpus} GPU(s), devices [${devices.join(', ')}] (copy-engine)`,
        opts: { backend: 'cuda', world, devices, transport: 'copy-engine' },
      },
    ];
  }
  return (['nccl', 'copy-engine'] as const).map((transport) => ({
    label: `world ${world} (${transport})`,
    opts: { backend: 'cuda', world, transport },
  }));
}
