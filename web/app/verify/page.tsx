"use client";

import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { useSession } from "@/components/Session";
import { PublicShell } from "@/components/Shell";
import { ApiError, api, signIn, type Tokens } from "@/lib/api";
import { useSubmit } from "@/lib/useForm";

const RESEND_SECONDS = 60;

function useCountdown(initial: number) {
  const [left, setLeft] = useState(initial);
  useEffect(() => {
    if (left <= 0) return;
    const timer = setTimeout(() => setLeft((n) => n - 1), 1000);
    return () => clearTimeout(timer);
  }, [left]);
  return [left, setLeft] as const;
}

function Verify() {
  const router = useRouter();
  const params = useSearchParams();
  const { reloadMe } = useSession();
  const [email, setEmail] = useState(params.get("email") ?? "");
  const { busy, fields, formError, run, setFields } = useSubmit();
  const [left, setLeft] = useCountdown(RESEND_SECONDS);
  const [notice, setNotice] = useState<string | null>(null);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const code = String(new FormData(event.currentTarget).get("code") ?? "").trim();
    const result = await run(
      () => api<Tokens & { user: unknown }>("/auth/otp/verify", { auth: false, body: { email, code } }),
      (error: ApiError) => {
        const detail = error.detail as { attempts_left?: number } | null;
        if (error.status === 400 && error.fields.code) {
          const left = detail && typeof detail.attempts_left === "number" ? ` (${detail.attempts_left} attempts left)` : "";
          setFields({ code: [`${error.fields.code.join(" ")}${left}`] });
          return true;
        }
        if (error.status === 410 || error.status === 429) {
          setFields({ code: [error.summary] });
          return true;
        }
        return false;
      },
    );
    if (!result) return;
    signIn({ access: result.access, refresh: result.refresh });
    const me = await reloadMe();
    router.replace(me?.profile_complete ? "/discover" : "/onboarding");
  }

  async function resend() {
    setNotice(null);
    try {
      await api("/auth/otp/resend", { auth: false, body: { email } });
      setNotice("A new code is on its way.");
      setLeft(RESEND_SECONDS);
    } catch (error) {
      if (error instanceof ApiError && error.retryAfter) {
        setLeft(error.retryAfter);
        setNotice(`Please wait ${error.retryAfter} s before asking for another code.`);
      } else if (error instanceof ApiError) {
        setNotice(error.summary);
      }
    }
  }

  return (
    <PublicShell title="Check your email">
      <p>
        We sent a 6-digit code to <strong>{email || "your university email"}</strong>. It expires after a while; you
        can ask for a new one.
      </p>
      <form onSubmit={submit} noValidate>
        <FormError message={formError} />
        {!params.get("email") ? (
          <Field label="University email" name="email" errors={fields.email}>
            {(p) => (
              <input {...p} type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} />
            )}
          </Field>
        ) : null}
        <Field label="Verification code" name="code" errors={fields.code}>
          {(p) => (
            <input
              {...p}
              inputMode="numeric"
              autoComplete="one-time-code"
              pattern="[0-9]{6}"
              maxLength={6}
              required
            />
          )}
        </Field>
        <div className="row">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Checking…" : "Verify"}
          </button>
          <button type="button" onClick={() => void resend()} disabled={left > 0 || !email} aria-live="polite">
            {left > 0 ? `Resend code in ${left} s` : "Resend code"}
          </button>
        </div>
        {notice ? (
          <p className="notice" role="status">
            {notice}
          </p>
        ) : null}
      </form>
    </PublicShell>
  );
}

export default function VerifyPage() {
  return (
    <Suspense>
      <Verify />
    </Suspense>
  );
}
