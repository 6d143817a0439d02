// GPU suite, several processes: every ring family in bfloat16 as 2 processes × 1 GPU (and, with
// four GPUs, 2 × 2: copy engines within a process, NCCL between the two) against the same world
// in one process, within the 16-bit tolerance; and a process killed mid-call, after which the
// other fails within seconds. Skips, and says so, with fewer than two GPUs (each process needs
// its own: NCCL refuses two ranks on one GPU).
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, visibleGpuCount } from '../../index.js';
import { relL2 } from '../helpers.js';
import {
  freePort,
  launch,
  startProcesses,
  tmpDir,
  waitForFile,
  type ChildReport,
} from '../multiprocess_helpers.js';

const gpus = visibleGpuCount();
const s = suite('cuda backend: one ring over several processes');
if (gpus < 2)
  console.log(`SKIPPED: ${gpus} GPU(s) visible; the multi-process ring needs one GPU per process`);

const USER = new URL('../fixtures/multiprocess_user.js', import.meta.url);
const ARG = { seqPerRank: 256, headDim: 64, dtype: 'bfloat16' };
/** bf16 inputs, outputs rounded to bf16: the ring's transfers are exact, the backward's sums are not ordered. */
const TOLERANCE = 1e-2;

type Outputs = Record<string, Record<string, Float32Array>>;

const decode = (enc: { b64: string }) => {
  const b = Buffer.from(enc.b64, 'base64');
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};

async function oneProcess(world: number): Promise<Outputs[]> {
  const rt = await init({ backend: 'cuda', world, rendezvous: false });
  try {
    return await rt.spmd<Outputs>(USER, 'families', ARG);
  } finally {
    await rt.close();
  }
}

async function againstOneProcess(nproc: number, localWorld: number): Promise<void> {
  const world = nproc * localWorld;
  const want = await oneProcess(world);
  const t0 = Date.now();
  const { reports, code, stderr } = await launch(nproc, {
    backend: 'cuda',
    localWorld,
    exportName: 'families',
    arg: ARG,
    timeoutMs: 60_000,
  });
  assert.is(code, 0, stderr);
  let worst = 0;
  for (const [p, r] of reports.entries()) {
    assert.ok(r.results, JSON.stringify(r.error ?? r.initError ?? r));
    for (const [i, fams] of r.results!.entries()) {
      const rank = p * localWorld + i;
      for (const [fam, outs] of Object.entries(fams))
        for (const [k, enc] of Object.entries(outs)) {
          const err = relL2(decode(enc), want[rank]![fam]![k]!);
          worst = Math.max(worst, err);
          assert.ok(err <= TOLERANCE, `rank ${rank} ${fam} ${k}: rel L2 ${err}`);
        }
    }
  }
  console.log(
    `  ${nproc} processes × ${localWorld} GPU(s): worst rel L2 ${worst.toExponential(2)}, launch to exit ${Date.now() - t0} ms, the call ${reports.map((r) => r.callMs).join(', ')} ms`,
  );
}

if (gpus >= 2) {
  s('every ring family as 2 processes × 1 GPU matches one process', async () => {
    await againstOneProcess(2, 1);
  });

  if (gpus >= 4)
    s(
      'every ring family as 2 processes × 2 GPUs (copy engines within, NCCL between) matches one process',
      async () => {
        await againstOneProcess(2, 2);
      },
    );

  s('a process killed mid-call: the other fails within seconds, nothing hangs', async () => {
    const out = tmpDir();
    const port = await freePort();
    // Rank 1 (process 1) sleeps inside the call while rank 0 waits for its block in NCCL.
    const job = {
      backend: 'cuda',
      localWorld: 1,
      exportName: 'slowRing',
      arg: { sleepRank: 1, ms: 60_000 },
      timeoutMs: 30_000,
    };
    const [p0, p1] = startProcesses(2, port, job, out);
    try {
      await waitForFile(path.join(out, 'proc0.json.ready'), 60_000);
      await waitForFile(path.join(out, 'proc1.json.ready'), 60_000);
      await new Promise((r) => setTimeout(r, 500));
      const killed = Date.now();
      p1!.kill('SIGKILL');
      await waitForFile(path.join(out, 'proc0.json'), 20_000);
      const took = Date.now() - killed;
      const r = JSON.parse(fs.readFileSync(path.join(out, 'proc0.json'), 'utf8')) as ChildReport;
      assert.ok(r.error?.code === 'E_WORKER' || r.error?.code === 'E_NCCL', JSON.stringify(r));
      assert.ok(took < 10_000, `took ${took} ms`);
      console.log(
        `  killed process 1: process 0 failed ${took} ms later (${r.error!.code}: ${r.error!.message})`,
      );
    } finally {
      p0!.kill('SIGKILL');
      p1!.kill('SIGKILL');
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
}

s.run();
