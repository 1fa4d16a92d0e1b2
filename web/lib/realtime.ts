/**
 * Wires the socket client to the store and the browser: one socket per
 * signed-in tab, its frames into the store, the browser's online/offline
 * events into the socket, and receipts for what reached or is on screen.
 */

import { accessToken, api, currentTokens, refreshAccess } from "./api";
import { ChatSocket } from "./socket";
import { store } from "./store";
import type { Card, MatchSummary, Notification } from "./types";

let socket: ChatSocket | null = null;
let detach: (() => void) | null = null;

function socketUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/ws`;
}

function isVisible(): boolean {
  return typeof document !== "undefined" && document.visibilityState === "visible";
}

/** Sends `read` for the open chat when it is on screen. */
export function readOpenChat(): void {
  const matchId = store.openChat;
  if (!socket || !matchId || !isVisible()) return;
  const seq = store.lastPeerSeq(matchId);
  if (seq > 0) socket.markRead(matchId, seq);
  store.markChatRead(matchId);
}

export function getSocket(): ChatSocket | null {
  return socket;
}

export function startRealtime(onStopped: (reason: string) => void): void {
  if (socket) return;
  const created = new ChatSocket({
    url: socketUrl(),
    getToken: accessToken,
    refreshToken: () => refreshAccess(currentTokens()?.access ?? null),
    listeners: {
      state: (state) => store.setConnection(state),
      message: (frame) => {
        store.addMessage(frame);
        if (frame.sender_id !== store.me) {
          created.markDelivered(frame.match_id, frame.seq);
          if (store.openChat === frame.match_id) readOpenChat();
        }
      },
      ack: (frame) => store.ack(frame.match_id, frame.client_msg_id, frame.seq, frame.message_id, frame.created_at),
      sendFailed: (entry, error) => store.fail(entry.match_id, entry.client_msg_id, error.code),
      receipt: (frame) => store.receipt(frame.match_id, frame.user_id, frame.status, frame.seq),
      typing: (frame) => store.setTyping(frame.match_id, frame.user_id, frame.state),
      presence: (frame) => store.setPresence(frame.user_id, frame.online, frame.last_active),
      match: (frame) => {
        const user = frame.user as unknown as Card;
        store.addMatch({
          match_id: frame.match_id,
          user,
          last_message: null,
          unread_count: 0,
          created_at: new Date().toISOString(),
        });
        created.noteSeen(frame.match_id, 0);
        store.celebrate({ match_id: frame.match_id, user });
      },
      unmatch: (frame) => store.removeMatch(frame.match_id),
      notification: (frame) => store.addNotification(frame.notification as Notification),
      synced: () => readOpenChat(),
      stopped: (reason) => onStopped(reason),
    },
  });
  socket = created;
  store.setConnection(navigator.onLine ? "reconnecting" : "offline");

  const offline = () => created.goOffline();
  const online = () => created.goOnline();
  const visible = () => readOpenChat();
  window.addEventListener("offline", offline);
  window.addEventListener("online", online);
  document.addEventListener("visibilitychange", visible);
  detach = () => {
    window.removeEventListener("offline", offline);
    window.removeEventListener("online", online);
    document.removeEventListener("visibilitychange", visible);
  };
  if (!navigator.onLine) created.goOffline();
  created.start();
  void loadMatches();
}

export function stopRealtime(): void {
  socket?.stop();
  socket = null;
  detach?.();
  detach = null;
}

/** The match list over HTTP; its last seqs become the socket's cursors. */
export async function loadMatches(): Promise<void> {
  const list = await api<MatchSummary[]>("/matches");
  store.setMatches(list);
  for (const match of list) {
    if (!store.hasChat(match.match_id)) socket?.noteSeen(match.match_id, match.last_message?.seq ?? 0);
  }
}

export async function loadNotifications(): Promise<void> {
  const page = await api<{ notifications: Notification[] }>("/notifications?limit=50");
  store.setNotifications(page.notifications);
}
