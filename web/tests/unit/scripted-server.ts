/**
 * A real WebSocket server on loopback that plays the platform's side of the
 * protocol as a test scripts it: it answers `auth` with `ready`, records
 * every frame each connection sent, and lets the test push frames or close.
 */

import { WebSocketServer, type WebSocket } from "ws";

export interface Connection {
  socket: WebSocket;
  frames: Array<Record<string, unknown>>;
  token: string | null;
}

export class ScriptedServer {
  readonly connections: Connection[] = [];
  private readonly server: WebSocketServer;
  private waiters: Array<() => void> = [];
  /** Frames to answer `auth` with (default: ready). */
  onAuth: (connection: Connection) => void = (c) => this.push(c, { type: "ready", user_id: "me", scope: null });

  private constructor(server: WebSocketServer) {
    this.server = server;
    server.on("connection", (socket) => {
      const connection: Connection = { socket, frames: [], token: null };
      this.connections.push(connection);
      socket.on("message", (data) => {
        const frame = JSON.parse(String(data)) as Record<string, unknown>;
        connection.frames.push(frame);
        if (frame.type === "auth") {
          connection.token = String(frame.token);
          this.onAuth(connection);
        }
        this.changed();
      });
      socket.on("close", () => this.changed());
      this.changed();
    });
  }

  static async start(): Promise<ScriptedServer> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    return new ScriptedServer(server);
  }

  get url(): string {
    const address = this.server.address();
    if (typeof address === "string" || !address) throw new Error("not listening");
    return `ws://127.0.0.1:${address.port}/ws`;
  }

  push(connection: Connection, frame: object): void {
    connection.socket.send(JSON.stringify(frame));
  }

  private changed(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once `condition` holds (checked on every server event). */
  async until<T>(condition: () => T | undefined | false, within = 10_000): Promise<T> {
    const deadline = Date.now() + within;
    for (;;) {
      const value = condition();
      if (value) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("condition not met in time");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The `index`-th connection, once it has authenticated. */
  async connection(index: number): Promise<Connection> {
    return this.until(() => {
      const c = this.connections[index];
      return c && c.token !== null ? c : undefined;
    });
  }

  /** The first frame of `type` on `connection` after `from` frames. */
  async frame(connection: Connection, type: string, from = 0): Promise<Record<string, unknown>> {
    return this.until(() => connection.frames.slice(from).find((f) => f.type === type));
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.socket.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
