"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { PublicShell } from "@/components/Shell";
import { api } from "@/lib/api";
import { useSubmit } from "@/lib/useForm";

/** Forgot password: ask for a code by email, then set a new password with it. */
export default function ForgotPage() {
  const router = useRouter();
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const { busy, fields, formError, run } = useSubmit();

  async function ask(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const done = await run(() => api("/auth/password/forgot", { auth: false, body: { email } }).then(() => true));
    if (done) setSent(true);
  }

  async function reset(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const done = await run(() =>
      api("/auth/password/reset", {
        auth: false,
        body: { email, code: String(form.get("code") ?? "").trim(), new: String(form.get("new") ?? "") },
      }).then(() => true),
    );
    if (done) router.replace("/login");
  }

  return (
    <PublicShell title="Reset your password">
      {!sent ? (
        <form onSubmit={ask} noValidate>
          <FormError message={formError} />
          <Field label="University email" name="email" errors={fields.email} hint="If an account uses this email, we mail it a code.">
            {(p) => (
              <input {...p} type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} />
            )}
          </Field>
          <button type="submit" className="primary" disabled={busy}>
            Send code
          </button>
        </form>
      ) : (
        <form onSubmit={reset} noValidate>
          <p className="notice" role="status">
            If an account uses {email}, a code is on its way.
          </p>
          <FormError message={formError} />
          <Field label="Code from the email" name="code" errors={fields.code}>
            {(p) => <input {...p} inputMode="numeric" autoComplete="one-time-code" maxLength={6} />}
          </Field>
          <Field label="New password" name="new" errors={fields.new} hint="At least 10 characters.">
            {(p) => <input {...p} type="password" autoComplete="new-password" />}
          </Field>
          <button type="submit" className="primary" disabled={busy}>
            Set new password
          </button>
        </form>
      )}
      <p>
        <Link href="/login">Back to log in</Link>
      </p>
    </PublicShell>
  );
}
