"use client";

import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api } from "@/lib/api";
import { store } from "@/lib/store";
import { REPORT_REASONS, photoUrl, type Card } from "@/lib/types";
import { useSubmit } from "@/lib/useForm";

/** Someone's public profile, with report and block. */
function Profile({ userId, matchId }: { userId: string; matchId: string | null }) {
  const me = useRequireMe();
  const router = useRouter();
  const [user, setUser] = useState<(Card & { age?: number | null }) | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const { busy, fields, formError, run } = useSubmit();

  useEffect(() => {
    if (!me) return;
    api<Card & { age?: number | null }>(`/users/${userId}`)
      .then(setUser)
      .catch((e) => setError(e instanceof ApiError && e.status === 404 ? "This profile is not available." : "Could not load."));
  }, [me, userId]);

  async function report(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const ok = await run(() =>
      api("/reports", {
        body: {
          reported_user_id: userId,
          reason: String(form.get("reason") ?? ""),
          details: String(form.get("details") ?? ""),
        },
      }).then(() => true),
    );
    if (ok) setDone("Thank you. Our moderators will look at your report.");
  }

  async function block() {
    const ok = await run(() => api("/blocks", { body: { user_id: userId } }).then(() => true));
    if (ok) {
      if (matchId) store.removeMatch(matchId);
      router.replace("/matches");
    }
  }

  if (!me) return <Shell title="Profile">{null}</Shell>;
  return (
    <Shell title={user ? user.display_name : "Profile"}>
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      {user ? (
        <article className="card">
          {user.photos[0] ? (
            // eslint-disable-next-line @next/next/no-img-element
            <img className="card-photo" src={photoUrl(user.photos[0])} alt={`Photo of ${user.display_name}`} />
          ) : null}
          <div className="card-body">
            <p>
              {user.age ? `${user.age} · ` : ""}
              {user.campus?.name}
              {user.year_of_study ? ` · year ${user.year_of_study}` : ""}
            </p>
            {user.bio ? <p>{user.bio}</p> : null}
            <ul className="tags" aria-label="Interests">
              {user.interests.map((i) => (
                <li key={i.id} className="tag">
                  {i.name}
                </li>
              ))}
            </ul>
          </div>
        </article>
      ) : null}
      <section aria-labelledby="report-title">
        <h2 id="report-title">Report</h2>
        {done ? (
          <p className="notice" role="status">
            {done}
          </p>
        ) : (
          <form onSubmit={report} noValidate>
            <FormError message={formError} />
            <Field label="Reason" name="reason" errors={fields.reason}>
              {(p) => (
                <select {...p} defaultValue="">
                  <option value="">Choose a reason</option>
                  {REPORT_REASONS.map((r) => (
                    <option key={r.value} value={r.value}>
                      {r.label}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            <Field label="What happened (optional)" name="details" errors={fields.details}>
              {(p) => <textarea {...p} rows={3} maxLength={2000} />}
            </Field>
            <button type="submit" disabled={busy}>
              Send report
            </button>
          </form>
        )}
      </section>
      <section aria-labelledby="block-title">
        <h2 id="block-title">Block</h2>
        <p className="hint">You will no longer see each other, and any match ends.</p>
        <button type="button" onClick={() => void block()} disabled={busy}>
          Block {user?.display_name ?? "this person"}
        </button>
      </section>
    </Shell>
  );
}

function ProfileRoute() {
  const params = useSearchParams();
  const userId = params.get("u");
  if (!userId) return <Shell title="Profile">{null}</Shell>;
  return <Profile userId={userId} matchId={params.get("m")} />;
}

export default function ProfilePage() {
  return (
    <Suspense>
      <ProfileRoute />
    </Suspense>
  );
}
