"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";
import type { ReactNode } from "react";

import { useStore } from "@/lib/store";

import { Celebration } from "./Celebration";
import { useSession } from "./Session";

const STATE_LABEL = { online: "Online", reconnecting: "Reconnecting…", offline: "Offline" } as const;

export function ConnectionStatus() {
  const state = useStore().connection;
  return (
    <span className={`connection connection-${state}`} data-testid="connection-status" data-state={state} role="status">
      {STATE_LABEL[state]}
    </span>
  );
}

function NavLink({ href, children }: { href: string; children: ReactNode }) {
  const path = usePathname();
  const current = path === href || path.startsWith(`${href}/`);
  return (
    <Link href={href} aria-current={current ? "page" : undefined} className="nav-link" prefetch={false}>
      {children}
    </Link>
  );
}

/** The frame of every signed-in screen: header, navigation, celebration. */
export function Shell({ title, children }: { title: string; children: ReactNode }) {
  const { me, logout } = useSession();
  const s = useStore();
  const unread = [...s.matches.values()].reduce((sum, m) => sum + m.unread_count, 0);
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">UniMatch</span>
        {me?.profile_complete ? <ConnectionStatus /> : null}
        <button type="button" className="link-button" onClick={() => void logout()}>
          Log out
        </button>
      </header>
      <main id="main" className="main">
        <h1 className="screen-title">{title}</h1>
        {children}
      </main>
      {me?.profile_complete ? (
        <nav className="bottom" aria-label="Main">
          <NavLink href="/discover">Discover</NavLink>
          <NavLink href="/matches">
            Matches{unread > 0 ? <span className="badge" aria-label={`${unread} unread`}>{unread}</span> : null}
          </NavLink>
          <NavLink href="/notifications">
            Alerts
            {s.unreadNotifications > 0 ? (
              <span className="badge" aria-label={`${s.unreadNotifications} unread`}>
                {s.unreadNotifications}
              </span>
            ) : null}
          </NavLink>
          <NavLink href="/onboarding">Profile</NavLink>
          {me.user.role === "moderator" ? <NavLink href="/moderation">Reports</NavLink> : null}
        </nav>
      ) : null}
      <Celebration />
    </>
  );
}

/** The frame of the signed-out screens. */
export function PublicShell({ title, children }: { title: string; children: ReactNode }) {
  return (
    <>
      <header className="top">
        <span className="brand">UniMatch</span>
      </header>
      <main id="main" className="main narrow">
        <h1 className="screen-title">{title}</h1>
        {children}
      </main>
    </>
  );
}
