/**
 * The socket client against a real WebSocket server on loopback: it
 * reconnects after a drop and catches up with `sync` from its cursors,
 * resends unacked sends with their original client_msg_id, and keeps each
 * (match_id, seq) once however often it arrives.
 */

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";

import { ChatSocket, type ConnectionState, type MessageFrame, type SocketLike } from "../../lib/socket";
import { ScriptedServer } from "./scripted-server";

const MATCH = "11111111-1111-4111-8111-111111111111";

function message(seq: number, body = `m${seq}`, sender = "peer", client_msg_id: string | null = null): MessageFrame {
  return {
    type: "message",
    match_id: MATCH,
    seq,
    message_id: `id-${seq}`,
    sender_id: sender,
    body,
    client_msg_id,
    created_at: new Date().toISOString(),
  };
}

let server: ScriptedServer;
let client: ChatSocket | null;
let received: MessageFrame[];
let acks: string[];
let states: ConnectionState[];
let stopped: string[];
let tokens: string[];

function startClient(options: { ackTimeoutMs?: number; refresh?: () => Promise<string | null> } = {}): ChatSocket {
  let token = "token-1";
  const socket = new ChatSocket({
    url: server.url,
    getToken: async () => token,
    refreshToken:
      options.refresh ??
      (async () => {
        token = `token-${tokens.length + 2}`;
        tokens.push(token);
        return token;
      }),
    createSocket: (url) => new WebSocket(url) as unknown as SocketLike,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    ackTimeoutMs: options.ackTimeoutMs ?? 60_000,
    listeners: {
      message: (frame) => received.push(frame),
      ack: (frame) => acks.push(frame.client_msg_id),
      state: (state) => states.push(state),
      stopped: (reason) => stopped.push(reason),
    },
  });
  socket.start();
  client = socket;
  return socket;
}

beforeEach(async () => {
  server = await ScriptedServer.start();
  client = null;
  received = [];
  acks = [];
  states = [];
  stopped = [];
  tokens = [];
});

afterEach(async () => {
  client?.stop();
  await server.stop();
});

describe("reconnect", () => {
  it("reconnects after a dropped connection and syncs from the cursor", async () => {
    const socket = startClient();
    const first = await server.connection(0);
    await server.until(() => socket.state === "online");
    server.push(first, message(1));
    server.push(first, message(2));
    await server.until(() => received.length === 2);
    expect(socket.cursor(MATCH)).toBe(2);

    first.socket.terminate(); // the network drops it: no close frame
    const second = await server.connection(1);
    const sync = await server.frame(second, "sync");
    expect(sync.cursors).toEqual({ [MATCH]: 2 });
    expect(states).toContain("reconnecting");
    await server.until(() => socket.state === "online");
  });

  it("refreshes the token after a 4001 and reconnects with the new one", async () => {
    startClient();
    const first = await server.connection(0);
    expect(first.token).toBe("token-1");
    first.socket.close(4001, "expired");
    const second = await server.connection(1);
    expect(second.token).toBe("token-2");
  });

  it("stops for good after a 4003 (suspended)", async () => {
    const socket = startClient();
    const first = await server.connection(0);
    first.socket.close(4003, "suspended");
    await server.until(() => stopped.length === 1);
    expect(stopped).toEqual(["suspended"]);
    expect(socket.state).toBe("offline");
    expect(server.connections).toHaveLength(1);
  });

  it("waits while the browser is offline and connects at once when it is back", async () => {
    const socket = startClient();
    await server.connection(0);
    socket.goOffline();
    expect(socket.state).toBe("offline");
    await server.until(() => server.connections[0]!.socket.readyState === WebSocket.CLOSED);
    expect(server.connections).toHaveLength(1);
    socket.goOnline();
    await server.connection(1);
    await server.until(() => socket.state === "online");
  });
});

describe("resend", () => {
  it("resends what was sent while disconnected, after the sync, with the same client_msg_id", async () => {
    const socket = startClient();
    const first = await server.connection(0);
    server.push(first, message(1));
    await server.until(() => received.length === 1);
    socket.goOffline();
    const id = socket.send(MATCH, "while offline");
    expect(socket.outbox.map((e) => e.client_msg_id)).toEqual([id]);

    socket.goOnline();
    const second = await server.connection(1);
    await server.frame(second, "sync");
    // Nothing goes out before the replay is over.
    expect(second.frames.some((f) => f.type === "send")).toBe(false);
    server.push(second, { type: "synced" });
    const sent = await server.frame(second, "send");
    expect(sent).toMatchObject({ match_id: MATCH, client_msg_id: id, body: "while offline" });

    server.push(second, { type: "ack", client_msg_id: id, match_id: MATCH, seq: 2, message_id: "x", created_at: "" });
    await server.until(() => acks.length === 1);
    expect(socket.outbox).toEqual([]);
    expect(socket.cursor(MATCH)).toBe(2);
  });

  it("resends an unacked message after the ack timeout, and once a rate limit has passed", async () => {
    const socket = startClient({ ackTimeoutMs: 300 });
    const connection = await server.connection(0);
    const id = socket.send(MATCH, "hello");
    await server.frame(connection, "send");
    // No ack: it goes again with the same id.
    await server.until(() => connection.frames.filter((f) => f.type === "send").length === 2, 5000);
    const sends = connection.frames.filter((f) => f.type === "send");
    expect(sends.map((f) => f.client_msg_id)).toEqual([id, id]);

    server.push(connection, { type: "error", code: "rate_limited", client_msg_id: id, match_id: MATCH, retry_after: 1 });
    const refusedAt = Date.now();
    const before = sends.length;
    await server.until(() => connection.frames.filter((f) => f.type === "send").length > before, 5000);
    expect(Date.now() - refusedAt).toBeGreaterThanOrEqual(900);
    server.push(connection, { type: "ack", client_msg_id: id, match_id: MATCH, seq: 1, message_id: "x", created_at: "" });
    await server.until(() => acks.length === 1);
    expect(socket.outbox).toEqual([]);
  });

  it("drops a send the server refused for good and says so", async () => {
    const failed: string[] = [];
    const socket = startClient();
    socket.setListeners({ sendFailed: (entry, error) => failed.push(`${entry.client_msg_id}:${error.code}`) });
    const connection = await server.connection(0);
    const id = socket.send(MATCH, "x");
    await server.frame(connection, "send");
    server.push(connection, { type: "error", code: "match_ended", client_msg_id: id, match_id: MATCH });
    await server.until(() => failed.length === 1);
    expect(failed).toEqual([`${id}:match_ended`]);
    expect(socket.outbox).toEqual([]);
  });
});

describe("dedupe by seq", () => {
  it("keeps each (match_id, seq) once, live or replayed", async () => {
    const socket = startClient();
    const connection = await server.connection(0);
    server.push(connection, message(1));
    server.push(connection, message(1));
    server.push(connection, message(2));
    server.push(connection, message(2));
    await server.until(() => socket.cursor(MATCH) === 2);
    // A replay crossing live frames repeats them: still once each.
    server.push(connection, message(1));
    server.push(connection, message(2));
    server.push(connection, message(3));
    await server.until(() => socket.cursor(MATCH) === 3);
    expect(received.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it("asks for a replay when a seq skips ahead, then fills the gap once", async () => {
    const socket = startClient();
    const connection = await server.connection(0);
    server.push(connection, message(1));
    await server.until(() => socket.cursor(MATCH) === 1);
    server.push(connection, message(3));
    const sync = await server.frame(connection, "sync");
    expect(sync.cursors).toEqual({ [MATCH]: 1 });
    server.push(connection, message(2));
    server.push(connection, message(3));
    server.push(connection, { type: "synced" });
    await server.until(() => socket.cursor(MATCH) === 3);
    expect(received.map((m) => m.seq)).toEqual([1, 3, 2]);
  });

  it("takes the server's echo of one's own send as its ack, and an ack after it changes nothing", async () => {
    const socket = startClient();
    const connection = await server.connection(0);
    const id = socket.send(MATCH, "mine");
    await server.frame(connection, "send");
    server.push(connection, message(1, "mine", "me", id));
    server.push(connection, { type: "ack", client_msg_id: id, match_id: MATCH, seq: 1, message_id: "id-1", created_at: "" });
    await server.until(() => acks.length === 2);
    expect(socket.outbox).toEqual([]);
    expect(received.map((m) => m.seq)).toEqual([1]);
    expect(socket.cursor(MATCH)).toBe(1);
  });
});
