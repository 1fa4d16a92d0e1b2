"use client";

import Link from "next/link";
import { useCallback, useEffect, useRef, useState } from "react";

import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api } from "@/lib/api";
import { loadMatches } from "@/lib/realtime";
import { store } from "@/lib/store";
import { photoUrl, type Card } from "@/lib/types";

function formatWait(seconds: number): string {
  if (seconds >= 3600) return `${Math.ceil(seconds / 3600)} h`;
  if (seconds >= 60) return `${Math.ceil(seconds / 60)} min`;
  return `${seconds} s`;
}

export default function DiscoverPage() {
  const me = useRequireMe();
  const [cards, setCards] = useState<Card[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [wait, setWait] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const loading = useRef(false);

  const load = useCallback(async () => {
    if (loading.current) return;
    loading.current = true;
    try {
      const page = await api<{ results: Card[] }>("/discover?limit=20");
      setCards(page.results);
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError ? e.summary : "Could not load people.");
    } finally {
      loading.current = false;
    }
  }, []);

  useEffect(() => {
    // The state is set when the request answers, not synchronously.
    // eslint-disable-next-line react-hooks/set-state-in-effect
    if (me) void load();
  }, [me, load]);

  const card = cards?.[0];

  const swipe = useCallback(
    async (action: "like" | "pass") => {
      if (!card || busy) return;
      setBusy(true);
      setWait(null);
      try {
        const result = await api<{ matched: boolean; match_id: string | null }>("/swipes", {
          body: { target_id: card.user_id, action },
        });
        if (result.matched && result.match_id) {
          store.celebrate({ match_id: result.match_id, user: card });
          void loadMatches().catch(() => undefined);
        }
        const rest = (cards ?? []).slice(1);
        setCards(rest);
        if (rest.length === 0) void load();
      } catch (e) {
        if (e instanceof ApiError && e.status === 429) {
          setWait(
            `You have used today's likes. You can like again in ${formatWait(e.retryAfter ?? 3600)}; passing still works.`,
          );
        } else if (e instanceof ApiError && e.status === 409) {
          const rest = (cards ?? []).slice(1);
          setCards(rest);
          if (rest.length === 0) void load();
        } else {
          setError(e instanceof ApiError ? e.summary : "That did not go through. Try again.");
        }
      } finally {
        setBusy(false);
      }
    },
    [card, busy, cards, load],
  );

  useEffect(() => {
    function onKey(event: KeyboardEvent) {
      const target = event.target as HTMLElement | null;
      if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
      if (document.querySelector("dialog[open]")) return;
      if (event.key === "ArrowRight") void swipe("like");
      if (event.key === "ArrowLeft") void swipe("pass");
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [swipe]);

  if (!me) return <Shell title="Discover">{null}</Shell>;
  const mine = new Set(me.profile.interests.map((i) => i.id));
  const shared = card ? card.interests.filter((i) => mine.has(i.id)) : [];

  return (
    <Shell title="Discover">
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      {wait ? (
        <p className="notice" role="status" data-testid="like-limit">
          {wait}
        </p>
      ) : null}
      {cards === null ? <p className="empty">Finding people…</p> : null}
      {cards !== null && !card ? (
        <div className="empty">
          <p>No one new right now. Check back later, or see your <Link href="/matches">matches</Link>.</p>
          <button type="button" onClick={() => void load()}>
            Look again
          </button>
        </div>
      ) : null}
      {card ? (
        <article className="card" data-testid="discover-card" data-user-id={card.user_id} aria-labelledby="card-name">
          {card.photos[0] ? (
            // eslint-disable-next-line @next/next/no-img-element
            <img
              className="card-photo"
              src={photoUrl(card.photos[0])}
              alt={`Photo of ${card.display_name}`}
              width={390}
              height={488}
              fetchPriority="high"
            />
          ) : null}
          <div className="card-body">
            <h2 id="card-name">
              {card.display_name}
              {card.year_of_study ? `, year ${card.year_of_study}` : ""}
            </h2>
            <p>{card.campus?.name ?? "Campus not set"}</p>
            {card.bio ? <p>{card.bio}</p> : null}
            <p className="hint">
              Match score {card.score ?? 0}
              {shared.length ? ` · ${shared.length} shared interest${shared.length > 1 ? "s" : ""}` : ""}
            </p>
            <ul className="tags" aria-label="Interests">
              {card.interests.map((i) => (
                <li key={i.id} className={mine.has(i.id) ? "tag shared" : "tag"}>
                  {i.name}
                  {mine.has(i.id) ? <span className="sr-only"> (shared)</span> : null}
                </li>
              ))}
            </ul>
            {card.photos.length > 1 ? (
              <div className="previews">
                {card.photos.slice(1).map((p, i) => (
                  // eslint-disable-next-line @next/next/no-img-element
                  <img key={photoUrl(p)} src={photoUrl(p)} alt={`${card.display_name}, photo ${i + 2}`} loading="lazy" />
                ))}
              </div>
            ) : null}
          </div>
        </article>
      ) : null}
      {card ? (
        <div className="actions">
          <button type="button" data-testid="pass-button" onClick={() => void swipe("pass")} disabled={busy}>
            Pass<span className="sr-only"> on {card.display_name}</span>
          </button>
          <button type="button" className="primary" data-testid="like-button" onClick={() => void swipe("like")} disabled={busy}>
            Like<span className="sr-only"> {card.display_name}</span>
          </button>
        </div>
      ) : null}
      {card ? <p className="hint">Keyboard: ← pass, → like.</p> : null}
    </Shell>
  );
}
