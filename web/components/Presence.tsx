"use client";

import { useStore } from "@/lib/store";

/** Whether a matched user is online, as the last presence frame said. */
export function Presence({ userId }: { userId: string }) {
  const known = useStore().presence.get(userId);
  const online = known?.online ?? false;
  const label = online ? "Online" : known?.last_active ? `Last seen ${new Date(known.last_active).toLocaleString()}` : "Offline";
  return (
    <span className="presence" data-testid="presence" data-online={String(online)}>
      <span className="dot" data-online={String(online)} aria-hidden="true" />
      <span className="sr-only">{label}</span>
      <span aria-hidden="true" className="hint">
        {" "}
        {online ? "online" : "offline"}
      </span>
    </span>
  );
}
