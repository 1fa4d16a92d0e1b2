"use client";

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useCallback, useEffect, useLayoutEffect, useRef, useState, type FormEvent } from "react";

import { Presence } from "@/components/Presence";
import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api } from "@/lib/api";
import { getSocket, loadMatches, readOpenChat } from "@/lib/realtime";
import { store, useStore, type MessageStatus } from "@/lib/store";
import type { HistoryMessage } from "@/lib/types";

const PAGE = 50;
const MAX_BODY = 2000;
const STATUS_LABEL: Record<MessageStatus, string> = {
  sending: "Sending…",
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
  failed: "Not sent",
};

async function loadPage(matchId: string, before: number | null): Promise<void> {
  const query = before ? `?before_seq=${before}&limit=${PAGE}` : `?limit=${PAGE}`;
  const page = await api<{ messages: HistoryMessage[] }>(`/matches/${matchId}/messages${query}`);
  store.addHistory(matchId, page.messages, PAGE, before !== null);
  if (before === null) {
    const top = page.messages.at(-1)?.seq ?? 0;
    getSocket()?.noteSeen(matchId, top);
  }
}

function Chat({ matchId }: { matchId: string }) {
  const me = useRequireMe();
  const s = useStore();
  const [error, setError] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  const [loadingOlder, setLoadingOlder] = useState(false);
  const list = useRef<HTMLOListElement>(null);
  const stick = useRef(true);
  const typingSent = useRef(0);
  const typingStop = useRef<ReturnType<typeof setTimeout> | null>(null);

  useEffect(() => {
    if (!me) return;
    store.openChat = matchId;
    if (!store.matchesLoaded) void loadMatches().catch(() => undefined);
    loadPage(matchId, null)
      .then(() => readOpenChat())
      .catch((e) => setError(e instanceof ApiError && e.status === 404 ? "This chat has ended." : "Could not load messages."));
    return () => {
      if (store.openChat === matchId) store.openChat = null;
    };
  }, [me, matchId]);

  const messages = s.messages(matchId);
  const newest = messages.at(-1)?.key;
  useLayoutEffect(() => {
    const node = list.current;
    if (node && stick.current) node.scrollTop = node.scrollHeight;
  }, [newest, messages.length]);

  const older = useCallback(async () => {
    const oldest = store.oldestSeq(matchId);
    if (!oldest || oldest <= 1 || loadingOlder) return;
    setLoadingOlder(true);
    const node = list.current;
    const before = node ? node.scrollHeight - node.scrollTop : 0;
    try {
      await loadPage(matchId, oldest);
      requestAnimationFrame(() => {
        if (node) node.scrollTop = node.scrollHeight - before;
      });
    } finally {
      setLoadingOlder(false);
    }
  }, [matchId, loadingOlder]);

  function stopTyping() {
    if (typingStop.current) clearTimeout(typingStop.current);
    typingStop.current = null;
    if (typingSent.current) {
      getSocket()?.typing(matchId, false);
      typingSent.current = 0;
    }
  }

  function onDraft(value: string) {
    setDraft(value);
    const now = Date.now();
    if (value && now - typingSent.current > 2500) {
      getSocket()?.typing(matchId, true);
      typingSent.current = now;
    }
    if (typingStop.current) clearTimeout(typingStop.current);
    typingStop.current = setTimeout(stopTyping, 3000);
  }

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const body = draft.trim();
    const socket = getSocket();
    if (!body || !socket) return;
    stick.current = true;
    const id = crypto.randomUUID();
    store.addLocal(matchId, id, body);
    socket.send(matchId, body, id);
    setDraft("");
    stopTyping();
  }

  if (!me) return <Shell title="Chat">{null}</Shell>;
  const match = s.matches.get(matchId);
  const peer = match?.user;
  const typing = s.peerTyping(matchId);

  return (
    <Shell title={peer ? `Chat with ${peer.display_name}` : "Chat"}>
      <div className="chat">
        <div className="chat-head">
          <Link href="/matches">← Matches</Link>
          {peer ? <Presence userId={peer.user_id} /> : null}
          {peer ? (
            <Link href={`/profile?u=${peer.user_id}&m=${matchId}`} prefetch={false}>
              Profile, report or block
            </Link>
          ) : null}
        </div>
        {error ? (
          <p className="error" role="alert">
            {error}
          </p>
        ) : null}
        {s.hasOlder(matchId) && messages.length > 0 ? (
          <button type="button" onClick={() => void older()} disabled={loadingOlder}>
            {loadingOlder ? "Loading…" : "Load earlier messages"}
          </button>
        ) : null}
        <ol
          className="messages"
          ref={list}
          aria-label="Messages"
          aria-live="polite"
          tabIndex={0}
          onScroll={(e) => {
            const node = e.currentTarget;
            stick.current = node.scrollHeight - node.scrollTop - node.clientHeight < 40;
            if (node.scrollTop === 0) void older();
          }}
        >
          {messages.map((m) => {
            const mine = m.sender_id === me.user.user_id;
            const status = s.status(m);
            return (
              <li
                key={m.key}
                className={mine ? "bubble mine" : "bubble"}
                data-testid="chat-message"
                data-seq={m.seq ?? undefined}
                data-status={status}
                data-mine={String(mine)}
              >
                <span className="sr-only">{mine ? "You: " : `${peer?.display_name ?? "Them"}: `}</span>
                <span className="body">{m.body}</span>
                <span className="meta">
                  {new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}
                  {mine ? ` · ${STATUS_LABEL[status]}` : ""}
                </span>
              </li>
            );
          })}
        </ol>
        <p className="typing" data-testid="typing-indicator" data-typing={String(typing)} aria-live="polite">
          {typing ? `${peer?.display_name ?? "They"} is typing…` : ""}
        </p>
        <form className="composer" onSubmit={submit}>
          <label htmlFor="chat-input" className="composer-label">
            Message
          </label>
          <input
            id="chat-input"
            data-testid="chat-input"
            value={draft}
            maxLength={MAX_BODY}
            autoComplete="off"
            placeholder="Write a message"
            onChange={(e) => onDraft(e.target.value)}
            onBlur={stopTyping}
          />
          <button type="submit" className="primary" data-testid="chat-send" disabled={!draft.trim()}>
            Send
          </button>
        </form>
      </div>
    </Shell>
  );
}

function ChatRoute() {
  const matchId = useSearchParams().get("m");
  if (!matchId) {
    return (
      <Shell title="Chat">
        <p>
          Choose a chat from your <Link href="/matches">matches</Link>.
        </p>
      </Shell>
    );
  }
  return <Chat key={matchId} matchId={matchId} />;
}

export default function ChatPage() {
  return (
    <Suspense>
      <ChatRoute />
    </Suspense>
  );
}
