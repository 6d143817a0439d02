// The rendezvous store: a small key-value server on Node's `net`, hosted by the process of rank 0,
// that the processes of one runtime use to find each other (torch.distributed's TCPStore plays
// this part in the Python project). One request or reply per line, as JSON: `set` stores a string,
// `get` answers once the key exists, so a process that arrives early waits for the others.
// A process names itself (`hello`) and says `bye` when its runtime closes: a connection that ends
// without it (the process exited or was killed) sets the key `failed` for the others to see.
import net from 'node:net';
import { RingFlashAttnError } from './errors.js';

type Op =
  | { op: 'set'; key: string; value: string }
  | { op: 'get'; key: string }
  | { op: 'take'; key: string }
  | { op: 'hello'; name: string }
  | { op: 'bye' };
type Request = Op & { id: number };
type Reply = { id: number; value?: string; closing?: boolean };

/** Splits a socket's bytes into lines and hands each one over as parsed JSON. */
function onLines(socket: net.Socket, handle: (msg: unknown) => void): void {
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        handle(JSON.parse(line));
      } catch {
        socket.destroy(); // not one of ours
        return;
      }
    }
  });
}

/** Bytes the store clients of this process have written and read: what the store carries, for tests to count. */
export const storeTraffic = { sent: 0, received: 0 };

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export class StoreServer {
  private readonly values = new Map<string, string>();
  private readonly waiting = new Map<string, Set<(value: string) => void>>();
  private readonly sockets = new Set<net.Socket>();
  private closing = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {
    server.on('connection', (socket) => this.serve(socket));
  }

  /** Hosts the store on host:port; E_RENDEZVOUS when the port is taken or the address is not this machine's. */
  static listen(host: string, port: number): Promise<StoreServer> {
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const where = formatAddress(host, port);
        const why =
          err.code === 'EADDRINUSE'
            ? `port ${port} is already taken (another program, or an earlier run still holding it); choose another MASTER_PORT`
            : err.code === 'EADDRNOTAVAIL'
              ? `${host} is not an address of this machine (MASTER_ADDR must name the host of process 0)`
              : `${err.code ?? ''} ${err.message}`.trim();
        reject(
          new RingFlashAttnError('E_RENDEZVOUS', `rendezvous: cannot host the store on ${where}: ${why}`),
        );
      });
      server.listen({ host, port, exclusive: true }, () => {
        server.removeAllListeners('error');
        server.on('error', () => undefined); // after listening, failures belong to single connections
        server.unref();
        resolve(new StoreServer(server, (server.address() as net.AddressInfo).port));
      });
    });
  }

  private set(key: string, value: string): void {
    this.values.set(key, value);
    for (const fn of this.waiting.get(key) ?? []) fn(value);
    this.waiting.delete(key);
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    const mine = new Set<[string, (value: string) => void]>();
    let name: string | undefined;
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.sockets.delete(socket);
      for (const [key, fn] of mine) this.waiting.get(key)?.delete(fn);
      if (name !== undefined && !this.values.has('failed') && !this.closing)
        this.set('failed', `${name} left the runtime without closing it (it exited or was killed)`);
    });
    onLines(socket, (msg) => {
      const req = msg as Request;
      const reply = (r: Reply) => socket.write(`${JSON.stringify(r)}\n`);
      if (req.op === 'hello') {
        name = req.name;
        reply({ id: req.id });
      } else if (req.op === 'bye') {
        name = undefined;
        reply({ id: req.id });
      } else if (req.op === 'set') {
        this.set(req.key, req.value);
        reply({ id: req.id });
      } else if (req.op === 'get' || req.op === 'take') {
        // take: a get that removes the value, for keys read once (driver mode's tasks and results).
        const value = this.values.get(req.key);
        if (value !== undefined) {
          if (req.op === 'take') this.values.delete(req.key);
          return reply({ id: req.id, value });
        }
        const fn = (v: string) => {
          mine.delete(entry);
          if (req.op === 'take') this.values.delete(req.key);
          reply({ id: req.id, value: v });
        };
        const entry: [string, (value: string) => void] = [req.key, fn];
        mine.add(entry);
        let set = this.waiting.get(req.key);
        if (!set) this.waiting.set(req.key, (set = new Set()));
        set.add(fn);
      }
    });
  }

  /** Stops the store; each connected process hears that it closed in order (StoreClient.closedInOrder). */
  close(): void {
    this.closing = true;
    this.server.close();
    for (const s of this.sockets) s.end(`${JSON.stringify({ id: 0, closing: true })}\n`);
  }
}

export class StoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private lost: Error | undefined;
  /** Whether the store said it closes in order (its runtime closed), before the connection ended. */
  closedInOrder = false;

  private constructor(
    private readonly socket: net.Socket,
    readonly address: string,
  ) {
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.lost = new RingFlashAttnError(
        'E_RENDEZVOUS',
        `rendezvous: the store at ${address} closed the connection`,
      );
      for (const p of this.pending.values()) p.reject(this.lost);
      this.pending.clear();
    });
    socket.on('data', (chunk: string) => (storeTraffic.received += Buffer.byteLength(chunk)));
    onLines(socket, (msg) => {
      const r = msg as Reply;
      if (r.closing) this.closedInOrder = true;
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      p?.resolve(r);
    });
    socket.unref();
  }

  /**
   * Whether the connection keeps the process alive: off by default (a runtime's own workers do
   * that), on while rt.serve() waits for process 0's next call.
   */
  keepAlive(on: boolean): void {
    if (on) this.socket.ref();
    else this.socket.unref();
  }

  /** The address this machine reaches the store from: where the other processes can reach it too. */
  get localAddress(): string {
    return this.socket.localAddress ?? '127.0.0.1';
  }

  /**
   * Connects to the store at host:port, retrying while it is not up yet (its process may start
   * later), for at most timeoutMs.
   */
  static async connect(host: string, port: number, timeoutMs: number): Promise<StoreClient> {
    const address = formatAddress(host, port);
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ host, port });
          s.setNoDelay(true);
          s.once('connect', () => {
            s.removeAllListeners('error');
            resolve(s);
          });
          s.once('error', (err) => {
            s.destroy();
            reject(err);
          });
        });
        return new StoreClient(socket, address);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        last = err.code ?? err.message;
        if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN')
          throw new RingFlashAttnError(
            'E_RENDEZVOUS',
            `rendezvous: cannot resolve the store's host ${host} (${last})`,
          );
      }
      if (Date.now() >= deadline)
        throw new RingFlashAttnError(
          'E_RENDEZVOUS',
          `rendezvous: no store answered at ${address} within ${timeoutMs} ms (${last}); is the process of rank 0 running, with the same MASTER_ADDR and MASTER_PORT?`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private request(req: Op, timeoutMs: number, what: () => string): Promise<Reply> {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      // timeoutMs 0: no deadline, and the wait does not keep the process alive.
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(id);
              reject(new RingFlashAttnError('E_RENDEZVOUS', what()));
            }, timeoutMs)
          : undefined;
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      const line = `${JSON.stringify({ ...req, id })}\n`;
      storeTraffic.sent += Buffer.byteLength(line);
      this.socket.write(line);
    });
  }

  async set(key: string, value: string, timeoutMs: number): Promise<void> {
    await this.request(
      { op: 'set', key, value },
      timeoutMs,
      () => `rendezvous: the store at ${this.address} did not answer within ${timeoutMs} ms`,
    );
  }

  /** Names this process to the store (see StoreServer), or says it leaves in order (bye). */
  async hello(name: string, timeoutMs: number): Promise<void> {
    await this.request(
      { op: 'hello', name },
      timeoutMs,
      () => `rendezvous: the store at ${this.address} did not answer`,
    );
  }

  async bye(timeoutMs: number): Promise<void> {
    await this.request(
      { op: 'bye' },
      timeoutMs,
      () => `rendezvous: the store at ${this.address} did not answer`,
    );
  }

  /** The value of `key` once some process has set it; `missing` words the error after timeoutMs (0: none). */
  async get(key: string, timeoutMs: number, missing: () => string): Promise<string> {
    const r = await this.request({ op: 'get', key }, timeoutMs, missing);
    return r.value!;
  }

  /** get, and the store forgets the value: for a key that one process reads once. */
  async take(key: string, timeoutMs: number, missing: () => string): Promise<string> {
    const r = await this.request({ op: 'take', key }, timeoutMs, missing);
    return r.value!;
  }

  close(): void {
    this.socket.destroy();
  }
}
