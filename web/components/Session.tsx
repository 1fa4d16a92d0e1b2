"use client";

import { useRouter } from "next/navigation";
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";

import { ApiError, api, isSignedIn, signOut, watchSession } from "@/lib/api";
import { loadNotifications, startRealtime, stopRealtime } from "@/lib/realtime";
import { store } from "@/lib/store";
import type { Me } from "@/lib/types";

interface SessionValue {
  me: Me | null;
  /** True until the first look at the session is done. */
  loading: boolean;
  reloadMe: () => Promise<Me | null>;
  logout: () => Promise<void>;
}

const SessionContext = createContext<SessionValue | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const router = useRouter();
  const [me, setMe] = useState<Me | null>(null);
  const [loading, setLoading] = useState(true);

  const reloadMe = useCallback(async (): Promise<Me | null> => {
    if (!isSignedIn()) {
      setMe(null);
      return null;
    }
    try {
      const fresh = await api<Me>("/me");
      setMe(fresh);
      store.setMe(fresh.user.user_id);
      if (fresh.profile_complete) {
        startRealtime((reason) => {
          if (reason === "suspended") router.replace("/login?reason=suspended");
        });
        void loadNotifications().catch(() => undefined);
      }
      return fresh;
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 404)) {
        setMe(null);
        return null;
      }
      throw error;
    }
  }, [router]);

  useEffect(() => {
    // Loading the session is the external system this effect syncs with.
    // eslint-disable-next-line react-hooks/set-state-in-effect
    void reloadMe()
      .catch(() => undefined)
      .finally(() => setLoading(false));
    return watchSession((reason) => {
      if (reason === "signed_in") {
        void reloadMe().catch(() => undefined);
        return;
      }
      stopRealtime();
      store.reset();
      setMe(null);
      router.replace(reason === "revoked" ? "/login?reason=revoked" : "/login");
    });
  }, [reloadMe, router]);

  const logout = useCallback(async () => {
    await signOut();
  }, []);

  const value = useMemo(() => ({ me, loading, reloadMe, logout }), [me, loading, reloadMe, logout]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}

/**
 * The signed-in user for a screen that needs one: sends a visitor to log in
 * and an incomplete profile to onboarding (unless `complete` is false).
 */
export function useRequireMe({ complete = true }: { complete?: boolean } = {}): Me | null {
  const { me, loading } = useSession();
  const router = useRouter();
  useEffect(() => {
    if (loading) return;
    if (!me) router.replace("/login");
    else if (complete && !me.profile_complete) router.replace("/onboarding");
  }, [me, loading, complete, router]);
  if (!me || (complete && !me.profile_complete)) return null;
  return me;
}
