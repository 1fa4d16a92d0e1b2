"use client";

import { useRouter } from "next/navigation";
import { useEffect, useMemo, useState, type ChangeEvent, type FormEvent } from "react";

import { Field, FormError } from "@/components/Field";
import { useRequireMe, useSession } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api, upload } from "@/lib/api";
import { GENDERS, type Campus, type Gender, type Interest, type Photo } from "@/lib/types";
import { useSubmit } from "@/lib/useForm";

const MIN_INTERESTS = 3;
const MAX_INTERESTS = 10;

function eighteenYearsAgo(): string {
  const d = new Date();
  d.setFullYear(d.getFullYear() - 18);
  return d.toISOString().slice(0, 10);
}

interface PendingPhoto {
  preview: string;
  progress: number;
  error: string | null;
}

function Photos({ photos, onChange }: { photos: Photo[]; onChange: () => Promise<unknown> }) {
  const [pending, setPending] = useState<PendingPhoto | null>(null);

  async function choose(event: ChangeEvent<HTMLInputElement>) {
    const file = event.target.files?.[0];
    event.target.value = "";
    if (!file) return;
    const preview = URL.createObjectURL(file);
    setPending({ preview, progress: 0, error: null });
    const form = new FormData();
    form.append("photo", file);
    try {
      await upload("/me/photos", form, (progress) => setPending((p) => (p ? { ...p, progress } : p)));
      await onChange();
      setPending(null);
      URL.revokeObjectURL(preview);
    } catch (error) {
      const message =
        error instanceof ApiError
          ? error.status === 413
            ? "That photo is too large (5 MB at most)."
            : error.status === 415
              ? "Use a JPEG, PNG or WebP photo."
              : error.summary
          : "Upload failed.";
      setPending((p) => (p ? { ...p, error: message } : p));
    }
  }

  async function remove(photoId: string) {
    await api(`/me/photos/${photoId}`, { method: "DELETE" });
    await onChange();
  }

  return (
    <section aria-labelledby="photos-title">
      <h2 id="photos-title">Photos</h2>
      <div className="previews">
        {photos.map((photo, i) => (
          <figure key={photo.photo_id} className="stack">
            {/* eslint-disable-next-line @next/next/no-img-element */}
            <img src={photo.url} alt={`Your photo ${i + 1}`} width={96} height={120} />
            <button type="button" onClick={() => void remove(photo.photo_id)}>
              Remove<span className="sr-only"> photo {i + 1}</span>
            </button>
          </figure>
        ))}
        {pending ? (
          // eslint-disable-next-line @next/next/no-img-element
          <img src={pending.preview} alt="Photo being uploaded" width={96} height={120} />
        ) : null}
      </div>
      {pending ? (
        <div className="field">
          <label htmlFor="upload-progress">Upload progress</label>
          <progress id="upload-progress" max={1} value={pending.progress} data-testid="upload-progress" />
          {pending.error ? (
            <p className="error" role="alert" data-testid="error-photo">
              {pending.error}
            </p>
          ) : null}
        </div>
      ) : null}
      <Field label="Add a photo" name="photo" hint="JPEG, PNG or WebP, up to 5 MB. At least one is needed.">
        {(p) => <input {...p} type="file" accept="image/jpeg,image/png,image/webp" onChange={(e) => void choose(e)} />}
      </Field>
    </section>
  );
}

export default function OnboardingPage() {
  const me = useRequireMe({ complete: false });
  const { reloadMe } = useSession();
  const router = useRouter();
  const { busy, fields, formError, run } = useSubmit();
  const [campuses, setCampuses] = useState<Campus[]>([]);
  const [interests, setInterests] = useState<Interest[]>([]);
  const [saved, setSaved] = useState(false);
  const [chosen, setChosen] = useState<Set<string> | null>(null);
  const [seeking, setSeeking] = useState<Set<Gender> | null>(null);

  useEffect(() => {
    void api<{ results: Campus[] }>("/campuses", { auth: false }).then((p) => setCampuses(p.results));
    void api<{ results: Interest[] }>("/interests", { auth: false }).then((p) => setInterests(p.results));
  }, []);

  const profile = me?.profile;
  const picked = useMemo(() => chosen ?? new Set(profile?.interests.map((i) => i.id) ?? []), [chosen, profile]);
  const seek = useMemo(() => seeking ?? new Set<Gender>(profile?.interested_in ?? []), [seeking, profile]);

  if (!me || !profile) return <Shell title="Your profile">{null}</Shell>;

  function toggle<T>(set: Set<T>, value: T): Set<T> {
    const next = new Set(set);
    if (next.has(value)) next.delete(value);
    else next.add(value);
    return next;
  }

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setSaved(false);
    const form = new FormData(event.currentTarget);
    const text = (name: string) => {
      const v = String(form.get(name) ?? "").trim();
      return v === "" ? undefined : v;
    };
    const year = text("year_of_study");
    const body: Record<string, unknown> = {
      display_name: text("display_name"),
      bio: String(form.get("bio") ?? ""),
      birthdate: text("birthdate"),
      gender: text("gender"),
      campus: text("campus"),
      year_of_study: year === undefined ? undefined : Number(year),
      interested_in: [...seek],
      interests: [...picked],
    };
    const done = await run(() => api("/me/profile", { method: "PATCH", body }).then(() => true));
    if (done) {
      await reloadMe();
      setSaved(true);
    }
  }

  const missing = me.missing.filter((m) => m !== "photos");
  return (
    <Shell title="Your profile">
      {!me.profile_complete ? (
        <p className="notice">Complete your profile to start discovering people: every field, 3 interests and a photo.</p>
      ) : null}
      <form onSubmit={submit} noValidate aria-describedby="profile-status">
        <FormError message={formError} />
        <Field label="Display name" name="display_name" errors={fields.display_name}>
          {(p) => <input {...p} defaultValue={profile.display_name ?? ""} maxLength={50} autoComplete="given-name" />}
        </Field>
        <Field label="Campus" name="campus" errors={fields.campus}>
          {(p) => (
            <select {...p} defaultValue={profile.campus?.id ?? ""} key={`campus-${campuses.length}`}>
              <option value="">Choose your university</option>
              {campuses.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Year of study" name="year_of_study" errors={fields.year_of_study}>
          {(p) => (
            <select {...p} defaultValue={profile.year_of_study ?? ""}>
              <option value="">Choose a year</option>
              {[1, 2, 3, 4, 5, 6, 7].map((y) => (
                <option key={y} value={y}>
                  Year {y}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Birthdate" name="birthdate" errors={fields.birthdate} hint="You must be 18 or older to use UniMatch.">
          {(p) => <input {...p} type="date" defaultValue={profile.birthdate ?? ""} max={eighteenYearsAgo()} />}
        </Field>
        <Field label="Gender" name="gender" errors={fields.gender}>
          {(p) => (
            <select {...p} defaultValue={profile.gender ?? ""}>
              <option value="">Choose</option>
              {GENDERS.map((g) => (
                <option key={g.value} value={g.value}>
                  {g.label}
                </option>
              ))}
            </select>
          )}
        </Field>
        <fieldset aria-describedby={fields.interested_in ? "interested-error" : undefined}>
          <legend>Interested in</legend>
          <div className="checks">
            {GENDERS.map((g) => (
              <label key={g.value} className="check">
                <input
                  type="checkbox"
                  name="interested_in"
                  value={g.value}
                  checked={seek.has(g.value)}
                  onChange={() => setSeeking(toggle(seek, g.value))}
                />
                {g.label}
              </label>
            ))}
          </div>
          {fields.interested_in ? (
            <p className="error" id="interested-error" role="alert" data-testid="error-interested_in">
              {fields.interested_in.join(" ")}
            </p>
          ) : null}
        </fieldset>
        <fieldset aria-describedby="interests-hint">
          <legend>Interests</legend>
          <p className="hint" id="interests-hint">
            Pick {MIN_INTERESTS} to {MAX_INTERESTS} ({picked.size} chosen).
          </p>
          <div className="checks">
            {interests.map((i) => (
              <label key={i.id} className="check">
                <input
                  type="checkbox"
                  name="interests"
                  value={i.id}
                  checked={picked.has(i.id)}
                  disabled={!picked.has(i.id) && picked.size >= MAX_INTERESTS}
                  onChange={() => setChosen(toggle(picked, i.id))}
                />
                {i.name}
              </label>
            ))}
          </div>
          {fields.interests ? (
            <p className="error" role="alert" data-testid="error-interests">
              {fields.interests.join(" ")}
            </p>
          ) : null}
        </fieldset>
        <Field label="About you" name="bio" errors={fields.bio} hint="Up to 500 characters.">
          {(p) => <textarea {...p} defaultValue={profile.bio ?? ""} maxLength={500} rows={3} />}
        </Field>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Saving…" : "Save profile"}
        </button>
        <p id="profile-status" role="status" className="hint">
          {saved ? "Profile saved." : ""}
          {missing.length && saved ? ` Still missing: ${missing.join(", ")}.` : ""}
        </p>
      </form>
      <Photos photos={profile.photos} onChange={reloadMe} />
      <button
        type="button"
        className="primary"
        disabled={!me.profile_complete}
        onClick={() => router.push("/discover")}
      >
        {me.profile_complete ? "Start discovering" : "Complete your profile to continue"}
      </button>
    </Shell>
  );
}
