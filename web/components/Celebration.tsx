"use client";

import { useRouter } from "next/navigation";
import { useEffect, useRef } from "react";

import { useStore } from "@/lib/store";
import { photoUrl } from "@/lib/types";

/** "It's a match!": shown for every new match, whichever screen is open. */
export function Celebration() {
  const s = useStore();
  const router = useRouter();
  const current = s.celebrations[0];
  const dialog = useRef<HTMLDialogElement>(null);

  useEffect(() => {
    const node = dialog.current;
    if (!node) return;
    if (current && !node.open) node.showModal();
    if (!current && node.open) node.close();
  }, [current]);

  const photo = current?.user.photos?.[0];
  return (
    <dialog
      ref={dialog}
      className="celebration"
      aria-labelledby="celebration-title"
      data-testid={current ? "match-celebration" : undefined}
      data-match-id={current?.match_id}
      onClose={() => current && s.dismissCelebration(current.match_id)}
    >
      {current ? (
        <>
          <h2 id="celebration-title">It&apos;s a match!</h2>
          {photo ? (
            // eslint-disable-next-line @next/next/no-img-element
            <img src={photoUrl(photo)} alt="" className="celebration-photo" width={160} height={160} />
          ) : null}
          <p>You and {current.user.display_name ?? "your match"} like each other.</p>
          <div className="row">
            <button
              type="button"
              className="primary"
              onClick={() => {
                s.dismissCelebration(current.match_id);
                router.push(`/chat?m=${current.match_id}`);
              }}
            >
              Say hello
            </button>
            <button type="button" onClick={() => s.dismissCelebration(current.match_id)}>
              Keep swiping
            </button>
          </div>
        </>
      ) : null}
    </dialog>
  );
}
