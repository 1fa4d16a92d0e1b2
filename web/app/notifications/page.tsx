"use client";

import Link from "next/link";
import { useEffect, useState } from "react";

import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api } from "@/lib/api";
import { loadNotifications } from "@/lib/realtime";
import { store, useStore } from "@/lib/store";
import type { Notification } from "@/lib/types";

function describe(n: Notification): { text: string; href: string | null } {
  const p = (n.payload ?? {}) as Record<string, unknown>;
  const name = typeof p.display_name === "string" ? p.display_name : null;
  const matchId = typeof p.match_id === "string" ? p.match_id : null;
  switch (n.kind) {
    case "match":
      return { text: `New match${name ? ` with ${name}` : ""}!`, href: matchId ? `/chat?m=${matchId}` : "/matches" };
    case "message":
      return { text: `New message${name ? ` from ${name}` : ""}`, href: matchId ? `/chat?m=${matchId}` : "/matches" };
    default:
      return { text: n.kind.replace(/_/g, " "), href: null };
  }
}

export default function NotificationsPage() {
  const me = useRequireMe();
  const s = useStore();
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (me) loadNotifications().catch((e) => setError(e instanceof ApiError ? e.summary : "Could not load alerts."));
  }, [me]);

  async function readAll() {
    await api("/notifications/read", { body: { all: true } });
    store.setNotifications(store.notifications.map((n) => ({ ...n, is_read: true })));
  }

  return (
    <Shell title="Alerts">
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      {s.unreadNotifications > 0 ? (
        <button type="button" onClick={() => void readAll()}>
          Mark all as read
        </button>
      ) : null}
      {s.notifications.length === 0 ? <p className="empty">Nothing new.</p> : null}
      <ul className="list">
        {s.notifications.map((n) => {
          const { text, href } = describe(n);
          return (
            <li key={n.id} data-testid="notification" data-read={String(n.is_read)}>
              <p>
                {n.is_read ? null : <strong>New · </strong>}
                {href ? <Link href={href}>{text}</Link> : text}
                <br />
                <span className="hint">{new Date(n.created_at).toLocaleString()}</span>
              </p>
            </li>
          );
        })}
      </ul>
    </Shell>
  );
}
