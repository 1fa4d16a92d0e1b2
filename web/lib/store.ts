/**
 * What the screens show of the live state: matches, the messages of each
 * chat, receipts, typing, presence, the match celebration and the
 * connection. Fed by the socket client and by HTTP pages; screens subscribe
 * with `useStore`. A message is kept once, by its `client_msg_id` or its
 * `(match_id, seq)`, whichever way it arrived.
 */

import { useSyncExternalStore } from "react";

import type { ConnectionState, MessageFrame } from "./socket";
import type { Card, HistoryMessage, MatchSummary, Notification } from "./types";

export type MessageStatus = "sending" | "sent" | "delivered" | "read" | "failed";

export interface ChatMessage {
  key: string;
  match_id: string;
  seq: number | null;
  message_id: string | null;
  sender_id: string;
  body: string;
  client_msg_id: string | null;
  created_at: string;
  /** Read/delivered as recorded by the server when the page came over HTTP. */
  delivered: boolean;
  read: boolean;
  failed: string | null;
  /** Order of local sends, for messages that have no seq yet. */
  localOrder: number;
}

interface ChatState {
  byKey: Map<string, ChatMessage>;
  bySeq: Map<number, string>;
  peerDelivered: number;
  peerRead: number;
  /** The lowest seq loaded; older pages load below it. */
  oldestSeq: number | null;
  hasOlder: boolean;
  peerTyping: boolean;
  typingTimer: ReturnType<typeof setTimeout> | null;
}

export interface Celebration {
  match_id: string;
  user: Partial<Card> & { user_id: string };
}

type Listener = () => void;

let localCounter = 0;

export class Store {
  version = 0;
  me: string | null = null;
  connection: ConnectionState = "reconnecting";
  matches = new Map<string, MatchSummary>();
  matchesLoaded = false;
  presence = new Map<string, { online: boolean; last_active: string | null }>();
  celebrations: Celebration[] = [];
  private celebrated = new Set<string>();
  notifications: Notification[] = [];
  unreadNotifications = 0;
  /** The chat on screen (its messages are read as they arrive). */
  openChat: string | null = null;
  private chats = new Map<string, ChatState>();
  private listeners = new Set<Listener>();

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  private changed(): void {
    this.version += 1;
    for (const listener of this.listeners) listener();
  }

  reset(): void {
    this.me = null;
    this.matches.clear();
    this.matchesLoaded = false;
    this.presence.clear();
    this.celebrations = [];
    this.celebrated.clear();
    this.notifications = [];
    this.unreadNotifications = 0;
    this.chats.clear();
    this.changed();
  }

  setMe(userId: string | null): void {
    this.me = userId;
    this.changed();
  }

  setConnection(state: ConnectionState): void {
    this.connection = state;
    this.changed();
  }

  // -- matches -------------------------------------------------------------

  setMatches(list: MatchSummary[]): void {
    this.matches = new Map(list.map((m) => [m.match_id, m]));
    this.matchesLoaded = true;
    this.changed();
  }

  addMatch(match: MatchSummary): void {
    if (!this.matches.has(match.match_id)) this.matches.set(match.match_id, match);
    this.changed();
  }

  removeMatch(matchId: string): void {
    this.matches.delete(matchId);
    this.changed();
  }

  celebrate(celebration: Celebration): void {
    if (this.celebrated.has(celebration.match_id)) return;
    this.celebrated.add(celebration.match_id);
    this.celebrations = [...this.celebrations, celebration];
    this.changed();
  }

  dismissCelebration(matchId: string): void {
    this.celebrations = this.celebrations.filter((c) => c.match_id !== matchId);
    this.changed();
  }

  setPresence(userId: string, online: boolean, lastActive: string | null): void {
    this.presence.set(userId, { online, last_active: lastActive });
    this.changed();
  }

  // -- notifications -------------------------------------------------------

  setNotifications(list: Notification[]): void {
    this.notifications = list;
    this.unreadNotifications = list.filter((n) => !n.is_read).length;
    this.changed();
  }

  addNotification(notification: Notification): void {
    if (this.notifications.some((n) => n.id === notification.id)) return;
    this.notifications = [notification, ...this.notifications];
    if (!notification.is_read) this.unreadNotifications += 1;
    this.changed();
  }

  // -- chats ---------------------------------------------------------------

  private chat(matchId: string): ChatState {
    let chat = this.chats.get(matchId);
    if (!chat) {
      chat = {
        byKey: new Map(),
        bySeq: new Map(),
        peerDelivered: 0,
        peerRead: 0,
        oldestSeq: null,
        hasOlder: true,
        peerTyping: false,
        typingTimer: null,
      };
      this.chats.set(matchId, chat);
    }
    return chat;
  }

  hasChat(matchId: string): boolean {
    return this.chats.has(matchId);
  }

  /** Stores a message once, merging an ack'd local send with its echo. */
  private put(chat: ChatState, message: Omit<ChatMessage, "key" | "localOrder">): ChatMessage | null {
    if (message.seq !== null) {
      const existing = chat.bySeq.get(message.seq);
      if (existing) {
        const old = chat.byKey.get(existing)!;
        old.delivered ||= message.delivered;
        old.read ||= message.read;
        return null;
      }
    }
    const key = message.client_msg_id ?? message.message_id ?? `seq:${message.seq}`;
    const old = chat.byKey.get(key);
    if (old) {
      if (message.seq !== null && old.seq === null) {
        old.seq = message.seq;
        old.message_id = message.message_id;
        old.created_at = message.created_at;
        chat.bySeq.set(message.seq, key);
      }
      old.delivered ||= message.delivered;
      old.read ||= message.read;
      return null;
    }
    const stored: ChatMessage = { ...message, key, localOrder: localCounter++ };
    chat.byKey.set(key, stored);
    if (message.seq !== null) chat.bySeq.set(message.seq, key);
    return stored;
  }

  /** A page of history from HTTP (newest page first, then older ones). */
  addHistory(matchId: string, messages: HistoryMessage[], pageSize: number, older: boolean): void {
    const chat = this.chat(matchId);
    for (const m of messages) {
      this.put(chat, {
        match_id: matchId,
        seq: m.seq,
        message_id: m.message_id,
        sender_id: m.sender_id,
        body: m.body,
        client_msg_id: m.client_msg_id,
        created_at: m.created_at,
        delivered: m.delivered_at !== null,
        read: m.read_at !== null,
        failed: null,
      });
      if (chat.oldestSeq === null || m.seq < chat.oldestSeq) chat.oldestSeq = m.seq;
    }
    if (older || chat.oldestSeq === null) chat.hasOlder = messages.length >= pageSize;
    if (!older && messages.length < pageSize) chat.hasOlder = false;
    if (chat.oldestSeq === 1) chat.hasOlder = false;
    this.changed();
  }

  /** A message from the socket (live or replayed). */
  addMessage(frame: MessageFrame): void {
    const chat = this.chat(frame.match_id);
    const stored = this.put(chat, {
      match_id: frame.match_id,
      seq: frame.seq,
      message_id: frame.message_id,
      sender_id: frame.sender_id,
      body: frame.body,
      client_msg_id: frame.client_msg_id,
      created_at: frame.created_at,
      delivered: false,
      read: false,
      failed: null,
    });
    if (stored && chat.oldestSeq === null) chat.oldestSeq = frame.seq;
    if (stored) this.chats.set(frame.match_id, chat);
    const match = this.matches.get(frame.match_id);
    if (match && stored && (!match.last_message || match.last_message.seq < frame.seq)) {
      match.last_message = {
        message_id: frame.message_id,
        seq: frame.seq,
        sender_id: frame.sender_id,
        body: frame.body,
        created_at: frame.created_at,
      };
      if (frame.sender_id !== this.me && this.openChat !== frame.match_id) match.unread_count += 1;
    }
    if (frame.sender_id !== this.me) chat.peerTyping = false;
    this.changed();
  }

  addLocal(matchId: string, clientMsgId: string, body: string): void {
    const chat = this.chat(matchId);
    this.put(chat, {
      match_id: matchId,
      seq: null,
      message_id: null,
      sender_id: this.me ?? "",
      body,
      client_msg_id: clientMsgId,
      created_at: new Date().toISOString(),
      delivered: false,
      read: false,
      failed: null,
    });
    this.changed();
  }

  ack(matchId: string, clientMsgId: string, seq: number, messageId: string, createdAt: string): void {
    const chat = this.chat(matchId);
    this.put(chat, {
      match_id: matchId,
      seq,
      message_id: messageId,
      sender_id: this.me ?? "",
      body: chat.byKey.get(clientMsgId)?.body ?? "",
      client_msg_id: clientMsgId,
      created_at: createdAt,
      delivered: false,
      read: false,
      failed: null,
    });
    const match = this.matches.get(matchId);
    const body = chat.byKey.get(clientMsgId)?.body;
    if (match && body !== undefined && (!match.last_message || match.last_message.seq < seq)) {
      match.last_message = { message_id: messageId, seq, sender_id: this.me ?? "", body, created_at: createdAt };
    }
    this.changed();
  }

  fail(matchId: string, clientMsgId: string, reason: string): void {
    const message = this.chat(matchId).byKey.get(clientMsgId);
    if (message) message.failed = reason;
    this.changed();
  }

  receipt(matchId: string, userId: string, status: "delivered" | "read", seq: number): void {
    if (userId === this.me) {
      if (status === "read") {
        const match = this.matches.get(matchId);
        if (match) match.unread_count = 0;
        this.changed();
      }
      return;
    }
    const chat = this.chat(matchId);
    chat.peerDelivered = Math.max(chat.peerDelivered, seq);
    if (status === "read") chat.peerRead = Math.max(chat.peerRead, seq);
    this.changed();
  }

  setTyping(matchId: string, userId: string, state: boolean): void {
    if (userId === this.me) return;
    const chat = this.chat(matchId);
    chat.peerTyping = state;
    if (chat.typingTimer) clearTimeout(chat.typingTimer);
    // A typing "true" whose "false" got lost must not stay on screen.
    chat.typingTimer = state
      ? setTimeout(() => {
          chat.peerTyping = false;
          this.changed();
        }, 6000)
      : null;
    this.changed();
  }

  markChatRead(matchId: string): void {
    const match = this.matches.get(matchId);
    if (match && match.unread_count !== 0) {
      match.unread_count = 0;
      this.changed();
    }
  }

  // -- reads ---------------------------------------------------------------

  messages(matchId: string): ChatMessage[] {
    const chat = this.chats.get(matchId);
    if (!chat) return [];
    return [...chat.byKey.values()].sort((a, b) => {
      if (a.seq !== null && b.seq !== null) return a.seq - b.seq;
      if (a.seq !== null) return -1;
      if (b.seq !== null) return 1;
      return a.localOrder - b.localOrder;
    });
  }

  status(message: ChatMessage): MessageStatus {
    if (message.failed) return "failed";
    if (message.seq === null) return "sending";
    const chat = this.chats.get(message.match_id);
    if (message.read || (chat && message.seq <= chat.peerRead)) return "read";
    if (message.delivered || (chat && message.seq <= chat.peerDelivered)) return "delivered";
    return "sent";
  }

  /** The highest seq from the other user that is loaded. */
  lastPeerSeq(matchId: string): number {
    let best = 0;
    for (const m of this.chats.get(matchId)?.byKey.values() ?? []) {
      if (m.seq !== null && m.sender_id !== this.me && m.seq > best) best = m.seq;
    }
    return best;
  }

  highestSeq(matchId: string): number {
    let best = 0;
    for (const seq of this.chats.get(matchId)?.bySeq.keys() ?? []) best = Math.max(best, seq);
    return best;
  }

  oldestSeq(matchId: string): number | null {
    return this.chats.get(matchId)?.oldestSeq ?? null;
  }

  hasOlder(matchId: string): boolean {
    return this.chats.get(matchId)?.hasOlder ?? true;
  }

  peerTyping(matchId: string): boolean {
    return this.chats.get(matchId)?.peerTyping ?? false;
  }
}

export const store = new Store();

/** Re-renders the caller whenever the store changes. */
export function useStore(): Store {
  useSyncExternalStore(store.subscribe, store.getVersion, store.getVersion);
  return store;
}
