/**
 * The one socket client: it owns the connection to `/ws`, reconnecting with
 * backoff, catching up with `sync` from per-match cursors, resending unacked
 * sends with their original `client_msg_id`, and dropping repeated frames by
 * `(match_id, seq)`. It knows nothing of React; the store listens to it.
 *
 * The protocol is docs/websocket.md ("Reconnect and catch-up recipe").
 */

export type ConnectionState = "online" | "reconnecting" | "offline";

export interface MessageFrame {
  type: "message";
  match_id: string;
  seq: number;
  message_id: string;
  sender_id: string;
  body: string;
  client_msg_id: string | null;
  created_at: string;
}

export interface AckFrame {
  type: "ack";
  client_msg_id: string;
  match_id: string;
  seq: number;
  message_id: string;
  created_at: string;
}

export interface ReceiptFrame {
  type: "receipt";
  match_id: string;
  seq: number;
  status: "delivered" | "read";
  user_id: string;
}

export interface TypingFrame {
  type: "typing";
  match_id: string;
  user_id: string;
  state: boolean;
}

export interface PresenceFrame {
  type: "presence";
  user_id: string;
  online: boolean;
  last_active: string | null;
}

export interface MatchFrame {
  type: "match";
  match_id: string;
  user: Record<string, unknown> & { user_id: string; display_name?: string };
}

export interface UnmatchFrame {
  type: "unmatch";
  match_id: string;
}

export interface NotificationFrame {
  type: "notification";
  notification: { id: string; kind: string; payload: unknown; is_read: boolean; created_at: string };
}

export interface ErrorFrame {
  type: "error";
  code: string;
  detail: unknown;
  client_msg_id?: string;
  match_id?: string;
  retry_after?: number;
}

/** A send the server has not acknowledged yet. */
export interface OutboxEntry {
  match_id: string;
  client_msg_id: string;
  body: string;
  /** When it last went out on a socket; null while it waits to go. */
  sentAt: number | null;
  /** Not before this time (a `retry_after`). */
  notBefore: number;
}

export interface SocketListeners {
  message?: (frame: MessageFrame) => void;
  ack?: (frame: AckFrame) => void;
  receipt?: (frame: ReceiptFrame) => void;
  typing?: (frame: TypingFrame) => void;
  presence?: (frame: PresenceFrame) => void;
  match?: (frame: MatchFrame) => void;
  unmatch?: (frame: UnmatchFrame) => void;
  notification?: (frame: NotificationFrame) => void;
  state?: (state: ConnectionState) => void;
  synced?: () => void;
  sendFailed?: (entry: OutboxEntry, error: ErrorFrame) => void;
  /** The socket stopped for good: 4003 (suspended) or no session left. */
  stopped?: (reason: string) => void;
}

/** What the client needs of a WebSocket: the browser's and `ws`'s both fit. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type SocketFactory = (url: string) => SocketLike;

export interface ChatSocketOptions {
  url: string;
  /** The current access token (refreshed by the API client when due). */
  getToken: () => Promise<string | null>;
  /** A new access token after a 4001; null when the session is over. */
  refreshToken: () => Promise<string | null>;
  createSocket?: SocketFactory;
  listeners?: SocketListeners;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  ackTimeoutMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  random?: () => number;
  newId?: () => string;
}

const OPEN = 1;
// Codes after which reconnecting would not help.
const SUSPENDED = 4003;
const UNAUTHORIZED = 4001;
const RESEND_NOW = new Set(["service_unavailable"]);
const RESEND_LATER = new Set(["rate_limited", "overloaded"]);
const SEND_REFUSED = new Set(["validation_failed", "not_found", "forbidden", "match_ended"]);

/** Seqs seen for one match: everything up to `cursor`, plus some above it. */
class SeqWindow {
  cursor: number;
  private above = new Set<number>();

  constructor(cursor: number) {
    this.cursor = cursor;
  }

  has(seq: number): boolean {
    return seq <= this.cursor || this.above.has(seq);
  }

  /** Records `seq`; true when it leaves a gap below it. */
  add(seq: number): boolean {
    if (this.has(seq)) return false;
    this.above.add(seq);
    while (this.above.delete(this.cursor + 1)) this.cursor += 1;
    return this.above.size > 0;
  }

  /** Everything up to `seq` is known (a history page, a replay). */
  advanceTo(seq: number): void {
    if (seq <= this.cursor) return;
    this.cursor = seq;
    for (const s of this.above) if (s <= seq) this.above.delete(s);
    while (this.above.delete(this.cursor + 1)) this.cursor += 1;
  }
}

export class ChatSocket {
  private readonly opts: Required<Omit<ChatSocketOptions, "listeners">>;
  private listeners: SocketListeners;
  private socket: SocketLike | null = null;
  private ready = false;
  private stateValue: ConnectionState = "reconnecting";
  private started = false;
  private offline = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private tickTimer: ReturnType<typeof setInterval> | null = null;
  private lastFrameAt = 0;
  private lastPingAt = 0;
  private readonly windows = new Map<string, SeqWindow>();
  private readonly outboxEntries = new Map<string, OutboxEntry>();
  private readonly receipts = new Map<string, { delivered?: number; read?: number }>();
  private syncing = false;

  constructor(options: ChatSocketOptions) {
    this.listeners = options.listeners ?? {};
    this.opts = {
      url: options.url,
      getToken: options.getToken,
      refreshToken: options.refreshToken,
      createSocket:
        options.createSocket ?? ((url: string) => new WebSocket(url) as unknown as SocketLike),
      initialBackoffMs: options.initialBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      random: options.random ?? Math.random,
      newId: options.newId ?? (() => crypto.randomUUID()),
    };
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  get outbox(): OutboxEntry[] {
    return [...this.outboxEntries.values()];
  }

  cursor(matchId: string): number | undefined {
    return this.windows.get(matchId)?.cursor;
  }

  setListeners(listeners: SocketListeners): void {
    this.listeners = listeners;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.tickTimer = setInterval(() => this.tick(), 1000);
    void this.connect();
  }

  stop(): void {
    this.started = false;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.clearReconnect();
    this.dropSocket(1000);
    this.setState("offline");
  }

  /** The network is gone (the browser said so): stop trying until it is back. */
  goOffline(): void {
    this.offline = true;
    this.clearReconnect();
    this.dropSocket(1000);
    this.setState("offline");
  }

  goOnline(): void {
    if (!this.offline) return;
    this.offline = false;
    this.attempt = 0;
    if (this.started) void this.connect();
  }

  /** Everything of `matchId` up to `seq` is already known (history, list). */
  noteSeen(matchId: string, seq: number): void {
    const window = this.windows.get(matchId);
    if (window) window.advanceTo(seq);
    else this.windows.set(matchId, new SeqWindow(seq));
  }

  /** Queues a message; it goes now if connected, else after reconnecting. */
  send(matchId: string, body: string, clientMsgId?: string): string {
    const id = clientMsgId ?? this.opts.newId();
    const entry: OutboxEntry = { match_id: matchId, client_msg_id: id, body, sentAt: null, notBefore: 0 };
    this.outboxEntries.set(id, entry);
    if (this.ready && !this.syncing) this.transmit(entry);
    return id;
  }

  markDelivered(matchId: string, seq: number): void {
    this.receipt(matchId, "delivered", seq);
  }

  markRead(matchId: string, seq: number): void {
    this.receipt(matchId, "read", seq);
  }

  typing(matchId: string, state: boolean): void {
    if (this.ready) this.write({ type: "typing", match_id: matchId, state });
  }

  /** A fresh access token for the open socket (before the old one expires). */
  reauthenticate(token: string): void {
    if (this.ready) this.write({ type: "auth", token });
  }

  // -- connection ---------------------------------------------------------

  private async connect(): Promise<void> {
    this.clearReconnect();
    if (!this.started || this.offline || this.socket) return;
    const token = await this.opts.getToken();
    if (!this.started || this.offline || this.socket) return;
    if (!token) {
      this.stopFor("signed out");
      return;
    }
    let socket: SocketLike;
    try {
      socket = this.opts.createSocket(this.opts.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.ready = false;
    socket.onopen = () => {
      this.lastFrameAt = Date.now();
      socket.send(JSON.stringify({ type: "auth", token }));
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.lastFrameAt = Date.now();
      let frame: unknown;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this.handle(frame as { type?: unknown });
    };
    socket.onerror = () => {
      /* a close follows */
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      this.syncing = false;
      void this.afterClose(event.code);
    };
  }

  private async afterClose(code: number): Promise<void> {
    if (!this.started || this.offline) return;
    if (code === SUSPENDED) {
      this.stopFor("suspended");
      return;
    }
    this.setState("reconnecting");
    if (code === UNAUTHORIZED) {
      const token = await this.opts.refreshToken().catch(() => undefined);
      if (token === null) {
        this.stopFor("signed out");
        return;
      }
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (!this.started || this.offline || this.reconnectTimer) return;
    const base = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** this.attempt);
    this.attempt += 1;
    // Full jitter in the upper half: many phones reconnecting after a cell
    // outage spread out instead of arriving together.
    const delay = base / 2 + (base / 2) * this.opts.random();
    this.setState("reconnecting");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, delay);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private dropSocket(code: number): void {
    const socket = this.socket;
    this.socket = null;
    this.ready = false;
    this.syncing = false;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      try {
        socket.close(code);
      } catch {
        /* already closed */
      }
    }
  }

  private stopFor(reason: string): void {
    this.stop();
    this.listeners.stopped?.(reason);
  }

  private setState(state: ConnectionState): void {
    if (state === this.stateValue) return;
    this.stateValue = state;
    this.listeners.state?.(state);
  }

  private write(frame: object): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /** Once a second: resend what waited too long, keep the socket honest. */
  private tick(): void {
    const now = Date.now();
    if (this.ready) {
      if (!this.syncing) {
        for (const entry of this.outboxEntries.values()) {
          const due = entry.sentAt === null || now - entry.sentAt > this.opts.ackTimeoutMs;
          if (due && now >= entry.notBefore) this.transmit(entry);
        }
      }
      if (now - this.lastFrameAt > this.opts.pingIntervalMs && now - this.lastPingAt > this.opts.pingIntervalMs) {
        this.lastPingAt = now;
        this.write({ type: "ping" });
      }
      if (this.lastPingAt > this.lastFrameAt && now - this.lastPingAt > this.opts.pongTimeoutMs) {
        // No answer: the connection is dead even if the browser has not noticed.
        this.dropSocket(4000);
        this.setState("reconnecting");
        this.scheduleReconnect();
      }
    }
  }

  private transmit(entry: OutboxEntry): void {
    if (
      this.write({ type: "send", match_id: entry.match_id, client_msg_id: entry.client_msg_id, body: entry.body })
    ) {
      entry.sentAt = Date.now();
    }
  }

  private receipt(matchId: string, status: "delivered" | "read", seq: number): void {
    const pending = this.receipts.get(matchId) ?? {};
    if ((pending[status] ?? 0) >= seq) return;
    pending[status] = seq;
    this.receipts.set(matchId, pending);
    if (this.ready) this.write({ type: status, match_id: matchId, seq });
  }

  // -- frames -------------------------------------------------------------

  private handle(frame: { type?: unknown }): void {
    switch (frame.type) {
      case "ready":
        this.onReady();
        break;
      case "synced":
        this.syncing = false;
        this.flushOutbox();
        this.listeners.synced?.();
        break;
      case "message":
        this.onMessage(frame as MessageFrame);
        break;
      case "ack":
        this.onAck(frame as AckFrame);
        break;
      case "error":
        this.onError(frame as ErrorFrame);
        break;
      case "receipt":
        this.listeners.receipt?.(frame as ReceiptFrame);
        break;
      case "typing":
        this.listeners.typing?.(frame as TypingFrame);
        break;
      case "presence":
        this.listeners.presence?.(frame as PresenceFrame);
        break;
      case "match":
        this.listeners.match?.(frame as MatchFrame);
        break;
      case "unmatch":
        this.listeners.unmatch?.(frame as UnmatchFrame);
        break;
      case "notification":
        this.listeners.notification?.(frame as NotificationFrame);
        break;
      default:
        break;
    }
  }

  private onReady(): void {
    this.ready = true;
    this.attempt = 0;
    this.setState("online");
    for (const [matchId, pending] of this.receipts) {
      if (pending.delivered) this.write({ type: "delivered", match_id: matchId, seq: pending.delivered });
      if (pending.read) this.write({ type: "read", match_id: matchId, seq: pending.read });
    }
    if (this.windows.size > 0) {
      this.requestSync([...this.windows.keys()]);
    } else {
      this.flushOutbox();
    }
  }

  private requestSync(matchIds: string[]): void {
    const cursors: Record<string, number> = {};
    for (const id of matchIds) cursors[id] = this.windows.get(id)?.cursor ?? 0;
    if (this.write({ type: "sync", cursors })) this.syncing = true;
  }

  private flushOutbox(): void {
    const now = Date.now();
    for (const entry of this.outboxEntries.values()) {
      if (now >= entry.notBefore) this.transmit(entry);
    }
  }

  /** Records a seq of a match; asks for a replay when it leaves a gap. */
  private record(matchId: string, seq: number): boolean {
    let window = this.windows.get(matchId);
    if (!window) {
      // First sight of this match: nothing below is known, the screen that
      // opens it reads the history over HTTP.
      window = new SeqWindow(seq - 1);
      this.windows.set(matchId, window);
    }
    if (window.has(seq)) return false;
    const gap = window.add(seq);
    if (gap && !this.syncing) this.requestSync([matchId]);
    return true;
  }

  private onMessage(frame: MessageFrame): void {
    const fresh = this.record(frame.match_id, frame.seq);
    // A server that also echoes one's own send as `message`: it is the ack.
    if (frame.client_msg_id && this.outboxEntries.delete(frame.client_msg_id)) {
      this.listeners.ack?.({
        type: "ack",
        client_msg_id: frame.client_msg_id,
        match_id: frame.match_id,
        seq: frame.seq,
        message_id: frame.message_id,
        created_at: frame.created_at,
      });
    }
    if (fresh) this.listeners.message?.(frame);
  }

  private onAck(frame: AckFrame): void {
    this.record(frame.match_id, frame.seq);
    this.outboxEntries.delete(frame.client_msg_id);
    this.listeners.ack?.(frame);
  }

  private onError(frame: ErrorFrame): void {
    const entry = frame.client_msg_id ? this.outboxEntries.get(frame.client_msg_id) : undefined;
    if (!entry) return;
    if (RESEND_LATER.has(frame.code)) {
      entry.sentAt = null;
      entry.notBefore = Date.now() + Math.max(frame.retry_after ?? 1, 0.1) * 1000;
    } else if (RESEND_NOW.has(frame.code)) {
      entry.sentAt = null;
      entry.notBefore = 0;
      if (!this.syncing) this.transmit(entry);
    } else if (SEND_REFUSED.has(frame.code)) {
      this.outboxEntries.delete(entry.client_msg_id);
      this.listeners.sendFailed?.(entry, frame);
    }
  }
}
