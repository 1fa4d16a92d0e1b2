"use client";

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { useSession } from "@/components/Session";
import { PublicShell } from "@/components/Shell";
import { api, signIn, type Tokens } from "@/lib/api";
import { useSubmit } from "@/lib/useForm";

const REASONS: Record<string, string> = {
  revoked: "Your session ended on this device (it was signed out elsewhere). Please log in again.",
  suspended: "This account is suspended.",
};

function Login() {
  const router = useRouter();
  const params = useSearchParams();
  const { reloadMe } = useSession();
  const { busy, fields, formError, run, setFormError } = useSubmit();
  const reason = REASONS[params.get("reason") ?? ""];

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const email = String(form.get("email") ?? "").trim();
    const result = await run(
      () =>
        api<Tokens>("/auth/login", {
          auth: false,
          body: { email, password: String(form.get("password") ?? "") },
        }),
      (error) => {
        if (error.code === "unverified") {
          router.push(`/verify?email=${encodeURIComponent(email)}`);
          return true;
        }
        if (error.status === 429) {
          setFormError(`Too many attempts. Try again in ${Math.ceil((error.retryAfter ?? 60) / 60)} min.`);
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

  return (
    <PublicShell title="Log in">
      {reason ? (
        <p className="notice" role="status">
          {reason}
        </p>
      ) : null}
      <form onSubmit={submit} noValidate>
        <FormError message={formError} />
        <Field label="University email" name="email" errors={fields.email}>
          {(p) => <input {...p} type="email" autoComplete="email" required />}
        </Field>
        <Field label="Password" name="password" errors={fields.password}>
          {(p) => <input {...p} type="password" autoComplete="current-password" required />}
        </Field>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
      </form>
      <p>
        <Link href="/forgot">Forgot your password?</Link>
      </p>
      <p>
        New here? <Link href="/signup">Create an account</Link>
      </p>
    </PublicShell>
  );
}

export default function LoginPage() {
  return (
    <Suspense>
      <Login />
    </Suspense>
  );
}
