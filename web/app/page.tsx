"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect } from "react";

import { useSession } from "@/components/Session";
import { PublicShell } from "@/components/Shell";

export default function Home() {
  const { me, loading } = useSession();
  const router = useRouter();
  useEffect(() => {
    if (!loading && me) router.replace(me.profile_complete ? "/discover" : "/onboarding");
  }, [me, loading, router]);
  return (
    <PublicShell title="Meet students on your campus">
      <p>UniMatch is a dating app for university students in Kenya. Sign up with your university email.</p>
      <div className="row">
        <Link className="button-link" href="/signup">
          Create an account
        </Link>
        <Link href="/login">Log in</Link>
      </div>
    </PublicShell>
  );
}
