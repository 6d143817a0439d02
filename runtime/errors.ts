/** Stable error codes; tests and callers switch on these, never on message text. */
export type ErrorCode =
  | 'E_SHAPE'
  | 'E_DTYPE'
  | 'E_DEVICE'
  | 'E_ARG'
  | 'E_UNSUPPORTED'
  | 'E_CUDA'
  | 'E_NCCL'
  | 'E_WORKER'
  | 'E_CLOSED'
  | 'E_FORMAT'
  | 'E_MEMORY'
  | 'E_NATIVE'
  | 'E_TIMEOUT'
  | 'E_ABORTED'
  | 'E_RENDEZVOUS';

const CODES = new Set<string>([
  'E_SHAPE',
  'E_DTYPE',
  'E_DEVICE',
  'E_ARG',
  'E_UNSUPPORTED',
  'E_CUDA',
  'E_NCCL',
  'E_WORKER',
  'E_CLOSED',
  'E_FORMAT',
  'E_MEMORY',
  'E_NATIVE',
  'E_TIMEOUT',
  'E_ABORTED',
  'E_RENDEZVOUS',
]);

/** The one error type of the library: `code` is stable, `message` names the argument. */
export class RingFlashAttnError extends Error {
  readonly code: ErrorCode;
  /** Rank whose failure this is, when it came from a worker. */
  rank?: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; rank?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RingFlashAttnError';
    this.code = code;
    if (options?.rank !== undefined) this.rank = options.rank;
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new RingFlashAttnError(code, message);
}

/**
 * Re-types anything thrown (a native error with a `code`, a structured-clone of an error from a
 * worker, a plain Error) as a RingFlashAttnError, keeping its code when it has a known one.
 */
export function asRingError(
  err: unknown,
  fallback: ErrorCode = 'E_WORKER',
  rank?: number,
): RingFlashAttnError {
  if (err instanceof RingFlashAttnError) {
    if (rank !== undefined && err.rank === undefined) err.rank = rank;
    return err;
  }
  const e = err as { code?: unknown; message?: unknown; rank?: unknown } | undefined;
  const code = typeof e?.code === 'string' && CODES.has(e.code) ? (e.code as ErrorCode) : fallback;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const r = typeof e?.rank === 'number' ? e.rank : rank;
  return new RingFlashAttnError(code, message, { cause: err, rank: r });
}
