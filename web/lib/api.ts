/**
 * The one API client: it owns the session's tokens, refreshes the access
 * token on a 401 (once, then retries the request), keeps one refresh in
 * flight across every tab (Web Locks), and ends the session in every tab
 * when the server revoked its token family.
 *
 * Tokens live in localStorage so a reload or a second tab keeps the
 * session; the server's Content-Security-Policy allows no inline or foreign
 * script, which is what keeps them from other code.
 */

export const API = "/api/v1";
const STORAGE_KEY = "unimatch.session";
const LOCK_NAME = "unimatch.refresh";
const CHANNEL_NAME = "unimatch.session";
// Refresh a little before expiry so a request rarely meets a 401.
const EXPIRY_MARGIN_MS = 30_000;

export interface Tokens {
  access: string;
  refresh: string;
}

export type FieldErrors = Record<string, string[]>;

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: unknown;
  readonly retryAfter: number | null;

  constructor(status: number, code: string, detail: unknown, retryAfter: number | null) {
    super(typeof detail === "string" ? detail : code);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }

  /** The per-field messages of a 400/409 (`detail: {field: [..]}`). */
  get fields(): FieldErrors {
    const out: FieldErrors = {};
    if (this.detail && typeof this.detail === "object" && !Array.isArray(this.detail)) {
      for (const [name, value] of Object.entries(this.detail as Record<string, unknown>)) {
        if (Array.isArray(value)) out[name] = value.map(String);
      }
    }
    return out;
  }

  /** One sentence for the user. */
  get summary(): string {
    if (typeof this.detail === "string") return this.detail;
    const all = Object.entries(this.fields).map(([k, v]) => `${k}: ${v.join(", ")}`);
    if (all.length) return all.join("; ");
    if (this.status === 0) return "You appear to be offline. Check your connection and try again.";
    return this.code.replace(/_/g, " ");
  }
}

type SessionListener = (reason: "signed_in" | "signed_out" | "revoked") => void;

let memory: Tokens | null = null;
let inflight: Promise<string | null> | null = null;
const listeners = new Set<SessionListener>();
let channel: BroadcastChannel | null = null;

function storage(): Storage | null {
  return typeof window === "undefined" ? null : window.localStorage;
}

function readTokens(): Tokens | null {
  const raw = storage()?.getItem(STORAGE_KEY);
  if (!raw) return null;
  try {
    const parsed = JSON.parse(raw) as Tokens;
    return parsed.access && parsed.refresh ? parsed : null;
  } catch {
    return null;
  }
}

function writeTokens(tokens: Tokens | null): void {
  memory = tokens;
  const store = storage();
  if (!store) return;
  if (tokens) store.setItem(STORAGE_KEY, JSON.stringify(tokens));
  else store.removeItem(STORAGE_KEY);
}

function announce(reason: "signed_in" | "signed_out" | "revoked", broadcast: boolean): void {
  if (broadcast) channel?.postMessage(reason);
  for (const listener of listeners) listener(reason);
}

/** Hooks this tab to the others: a sign-out anywhere signs out here. */
export function watchSession(listener: SessionListener): () => void {
  listeners.add(listener);
  if (!channel && typeof BroadcastChannel !== "undefined") {
    channel = new BroadcastChannel(CHANNEL_NAME);
    channel.onmessage = (event: MessageEvent) => {
      memory = readTokens();
      for (const l of listeners) l(event.data as "signed_in" | "signed_out" | "revoked");
    };
  }
  return () => listeners.delete(listener);
}

export function currentTokens(): Tokens | null {
  if (!memory) memory = readTokens();
  return memory;
}

export function isSignedIn(): boolean {
  return currentTokens() !== null;
}

export function signIn(tokens: Tokens): void {
  writeTokens(tokens);
  announce("signed_in", true);
}

function endSession(reason: "signed_out" | "revoked"): void {
  writeTokens(null);
  announce(reason, true);
}

export async function signOut(): Promise<void> {
  const tokens = currentTokens();
  endSession("signed_out");
  if (tokens) {
    await fetch(`${API}/auth/logout`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: tokens.refresh }),
    }).catch(() => undefined);
  }
}

function expiresAt(token: string): number {
  try {
    const payload = JSON.parse(atob(token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/"))) as {
      exp?: number;
    };
    return (payload.exp ?? 0) * 1000;
  } catch {
    return 0;
  }
}

async function withRefreshLock<T>(work: () => Promise<T>): Promise<T> {
  if (typeof navigator !== "undefined" && navigator.locks) {
    return navigator.locks.request(LOCK_NAME, work) as Promise<T>;
  }
  return work();
}

/**
 * A new access token in place of `stale`; null when the session is over.
 * Another tab may have refreshed while this one waited for the lock: then
 * its tokens, already in storage, are used instead of rotating again.
 */
export function refreshAccess(stale: string | null): Promise<string | null> {
  if (inflight) return inflight;
  inflight = withRefreshLock(async () => {
    const tokens = readTokens();
    if (!tokens) {
      memory = null;
      return null;
    }
    if (tokens.access !== stale && expiresAt(tokens.access) - Date.now() > EXPIRY_MARGIN_MS) {
      memory = tokens;
      return tokens.access;
    }
    let response: Response;
    try {
      response = await fetch(`${API}/auth/refresh`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh: tokens.refresh }),
      });
    } catch {
      throw new ApiError(0, "offline", null, null);
    }
    if (response.status === 401) {
      // The family was revoked (a reused token, a password change): every
      // tab of this browser signs out.
      endSession("revoked");
      return null;
    }
    if (!response.ok) throw await toError(response);
    const fresh = (await response.json()) as Tokens;
    writeTokens(fresh);
    return fresh.access;
  }).finally(() => {
    inflight = null;
  });
  return inflight;
}

/** The access token to use now, refreshed first when it is about to expire. */
export async function accessToken(): Promise<string | null> {
  const tokens = currentTokens();
  if (!tokens) return null;
  if (expiresAt(tokens.access) - Date.now() > EXPIRY_MARGIN_MS) return tokens.access;
  return refreshAccess(tokens.access);
}

async function toError(response: Response): Promise<ApiError> {
  let body: { error?: string; detail?: unknown } = {};
  try {
    body = (await response.json()) as typeof body;
  } catch {
    /* not JSON */
  }
  const retry = response.headers.get("Retry-After");
  return new ApiError(
    response.status,
    body.error ?? `http_${response.status}`,
    body.detail ?? null,
    retry ? Number(retry) : null,
  );
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  auth?: boolean;
  signal?: AbortSignal;
}

async function send(path: string, options: RequestOptions, token: string | null): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(`${API}${path}`, {
      method: options.method ?? (options.body === undefined ? "GET" : "POST"),
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "offline", null, null);
  }
}

/** A JSON request to `/api/v1{path}`; throws ApiError for every non-2xx. */
export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const auth = options.auth ?? true;
  let token = auth ? await accessToken() : null;
  let response = await send(path, options, token);
  if (response.status === 401 && auth && token) {
    token = await refreshAccess(token);
    if (token) response = await send(path, options, token);
  }
  if (!response.ok) throw await toError(response);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** A multipart upload with progress (fetch cannot report upload progress). */
export async function upload<T>(
  path: string,
  form: FormData,
  onProgress: (fraction: number) => void,
): Promise<T> {
  const attempt = (token: string | null) =>
    new Promise<{ status: number; text: string; retryAfter: string | null }>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${API}${path}`);
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      };
      xhr.onload = () =>
        resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader("Retry-After") });
      xhr.onerror = () => reject(new ApiError(0, "offline", null, null));
      xhr.send(form);
    });
  let token = await accessToken();
  let result = await attempt(token);
  if (result.status === 401 && token) {
    token = await refreshAccess(token);
    if (token) result = await attempt(token);
  }
  const body = result.text ? (JSON.parse(result.text) as Record<string, unknown>) : {};
  if (result.status < 200 || result.status >= 300) {
    throw new ApiError(
      result.status,
      (body.error as string) ?? `http_${result.status}`,
      body.detail ?? null,
      result.retryAfter ? Number(result.retryAfter) : null,
    );
  }
  onProgress(1);
  return body as T;
}
