"use client";

import Link from "next/link";
import { useEffect, useState } from "react";

import { Presence } from "@/components/Presence";
import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError } from "@/lib/api";
import { loadMatches } from "@/lib/realtime";
import { useStore } from "@/lib/store";
import { photoUrl } from "@/lib/types";

export default function MatchesPage() {
  const me = useRequireMe();
  const s = useStore();
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (me) loadMatches().catch((e) => setError(e instanceof ApiError ? e.summary : "Could not load matches."));
  }, [me]);

  const matches = [...s.matches.values()].sort((a, b) =>
    (b.last_message?.created_at ?? b.created_at).localeCompare(a.last_message?.created_at ?? a.created_at),
  );
  return (
    <Shell title="Matches">
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      {s.matchesLoaded && matches.length === 0 ? (
        <p className="empty">
          No matches yet. <Link href="/discover">Discover people</Link>.
        </p>
      ) : null}
      <ul className="list">
        {matches.map((m) => {
          const photo = m.user.photos?.[0];
          const last = m.last_message;
          return (
            <li key={m.match_id} data-testid="match-item" data-match-id={m.match_id}>
              <Link className="match-link" href={`/chat?m=${m.match_id}`} prefetch={false}>
                {photo ? (
                  // eslint-disable-next-line @next/next/no-img-element
                  <img className="avatar" src={photoUrl(photo)} alt="" width={52} height={52} />
                ) : (
                  <span className="avatar" aria-hidden="true" />
                )}
                <span className="match-text">
                  <strong>{m.user.display_name}</strong>
                  <Presence userId={m.user.user_id} />
                  <p>{last ? `${last.sender_id === me?.user.user_id ? "You: " : ""}${last.body}` : "Say hello!"}</p>
                </span>
                <span
                  className={m.unread_count > 0 ? "badge" : "sr-only"}
                  data-testid="unread-count"
                  data-count={m.unread_count}
                  aria-label={`${m.unread_count} unread`}
                >
                  {m.unread_count}
                </span>
              </Link>
            </li>
          );
        })}
      </ul>
    </Shell>
  );
}
