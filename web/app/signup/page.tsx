"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, useState, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { PublicShell } from "@/components/Shell";
import { api } from "@/lib/api";
import type { Campus } from "@/lib/types";
import { useSubmit } from "@/lib/useForm";

export default function SignupPage() {
  const router = useRouter();
  const { busy, fields, formError, run } = useSubmit();
  const [domains, setDomains] = useState<string[]>([]);

  useEffect(() => {
    api<{ results: Campus[] }>("/campuses", { auth: false })
      .then((page) => setDomains(page.results.map((c) => c.email_domain).filter((d): d is string => Boolean(d))))
      .catch(() => undefined);
  }, []);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email") ?? "").trim();
    const done = await run(() =>
      api("/auth/register", {
        auth: false,
        body: {
          display_name: String(form.get("display_name") ?? ""),
          email,
          password: String(form.get("password") ?? ""),
        },
      }),
    );
    if (done !== undefined) router.push(`/verify?email=${encodeURIComponent(email)}`);
  }

  const examples = domains.slice(0, 3).join(", ");
  return (
    <PublicShell title="Create your account">
      <form onSubmit={submit} noValidate>
        <FormError message={formError} />
        <Field label="Your first name" name="display_name" errors={fields.display_name}>
          {(p) => <input {...p} autoComplete="given-name" maxLength={50} required />}
        </Field>
        <Field
          label="University email"
          name="email"
          errors={fields.email}
          hint={
            <>
              UniMatch is for students: sign up with your university address (one ending in
              <strong> .ac.ke</strong> or <strong>.edu</strong>
              {examples ? `, such as ${examples}` : ""}). We email you a 6-digit code to confirm it.
            </>
          }
        >
          {(p) => <input {...p} type="email" autoComplete="email" inputMode="email" required />}
        </Field>
        <Field label="Password" name="password" errors={fields.password} hint="At least 10 characters; not your name or email.">
          {(p) => <input {...p} type="password" autoComplete="new-password" required />}
        </Field>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create account"}
        </button>
      </form>
      <p>
        Already have an account? <Link href="/login">Log in</Link>
      </p>
    </PublicShell>
  );
}
