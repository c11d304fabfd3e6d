/**
 * Delivery: every event gets a client event id, is written to a bounded offline queue first,
 * then sent; a network failure, 408, 429 or 5xx keeps it queued and it is retried with the same
 * id (ingest counts an id once), after `Retry-After`, when the browser comes back online, or on
 * the next page load. Any other answer ends it: a 2xx that reports an item invalid is an error.
 */

import { report } from "./safe";
import { feedbackKey, randomId, read, write } from "./storage";
import type { ClientOptions, FeedbackError, SignalKind } from "./types";

export const MAX_QUEUED_EVENTS = 50;
export const MAX_QUEUED_BYTES = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 60_000;

export interface QueuedEvent {
  id: string;
  path: string;
  body: Record<string, unknown>;
  responseId: string;
  kind: SignalKind;
  retraction: boolean;
  auth: string | null;
  endpoint: string;
  /** Set once a refused credential was replaced by a fresh one from `getToken`. */
  refreshed?: boolean;
}

export type Outcome = "sent" | "queued" | "failed";

type Verdict =
  | { result: "ok" }
  | { result: "retry"; afterMs: number; message: string }
  | { result: "error"; status: number | null; message: string };

const QUEUE = "queue";
type Listener = (id: string, outcome: Outcome, error?: FeedbackError) => void;
const listeners = new Set<Listener>();
let flushing: Promise<void> | null = null;
let again = false;
let timer: ReturnType<typeof setTimeout> | null = null;
let backoffMs = 1000;

export function onOutcome(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function emit(id: string, outcome: Outcome, error?: FeedbackError): void {
  listeners.forEach((listener) => {
    try {
      listener(id, outcome, error);
    } catch (error) {
      report(error);
    }
  });
}

export function queued(): QueuedEvent[] {
  const items = read<QueuedEvent[]>(QUEUE);
  return Array.isArray(items) ? items.filter((item) => item && typeof item.id === "string") : [];
}

/** Keeps the newest events within both caps; the oldest are dropped first. */
export function bounded(items: QueuedEvent[]): QueuedEvent[] {
  let kept = items.slice(-MAX_QUEUED_EVENTS);
  while (kept.length > 1 && JSON.stringify(kept).length > MAX_QUEUED_BYTES) kept = kept.slice(1);
  return JSON.stringify(kept).length > MAX_QUEUED_BYTES ? [] : kept;
}

function save(items: QueuedEvent[]): void {
  write(QUEUE, bounded(items));
}

function dequeue(id: string): void {
  save(queued().filter((item) => item.id !== id));
}

export interface Sender {
  endpoint: string;
  options: ClientOptions;
}

// `getToken` of each endpoint's senders: a queued event whose token expired (401) asks it once
// for a fresh one. Functions cannot be stored with the queue, so they are kept here.
const tokenSources = new Map<string, NonNullable<ClientOptions["getToken"]>>();

/** The identity sent with every signal: the host's user id, else the anonymous person's id. */
export function person(options: ClientOptions): Record<string, string> {
  return options.userId ? { user_id: options.userId } : { feedback_key: feedbackKey() };
}

export async function authorization(
  sender: Sender,
  responseId: string,
  token: string | undefined,
): Promise<string | null> {
  let credential: string | null | undefined = token;
  if (!credential && sender.options.getToken) {
    try {
      credential = await sender.options.getToken(responseId);
    } catch (error) {
      report(error);
    }
  }
  credential = credential || sender.options.key;
  return credential ? `Bearer ${credential}` : null;
}

/** Queues and sends one event; `changed` hears each outcome until it is sent or failed.
 * Resolves with the event id, never rejects. */
export async function submit(
  sender: Sender,
  input: { path: string; responseId: string; kind: SignalKind; retraction: boolean; token?: string;
    fields: Record<string, unknown> },
  changed?: (outcome: Outcome, id: string, error?: FeedbackError) => void,
): Promise<string> {
  const id = randomId();
  const item: QueuedEvent = {
    id,
    path: input.path,
    responseId: input.responseId,
    kind: input.kind,
    retraction: input.retraction,
    endpoint: sender.endpoint,
    auth: await authorization(sender, input.responseId, input.token),
    body: {
      response_id: input.responseId,
      ...input.fields,
      ...person(sender.options),
      event_id: id,
      occurred_at: new Date().toISOString(),
    },
  };
  if (sender.options.getToken) tokenSources.set(sender.endpoint, sender.options.getToken);
  save([...queued(), item]);
  if (changed) {
    const stop = onOutcome((done, outcome, error) => {
      if (done !== id) return;
      if (outcome !== "queued") stop();
      changed(outcome, id, error);
    });
  }
  watchConnectivity();
  void flush();
  return id;
}

let watching = false;

/** Retries as soon as the browser is back online; installed on first use, not on import. */
export function watchConnectivity(): void {
  if (watching || typeof window === "undefined") return;
  watching = true;
  window.addEventListener("online", () => {
    backoffMs = 1000;
    void flush();
  });
}

/** Sends what is queued, oldest first; stops at the first event that must wait. */
export function flush(): Promise<void> {
  if (flushing) {
    again = true;
    return flushing;
  }
  flushing = (async () => {
    let waiting = false;
    do {
      again = false;
      waiting = await drain();
    } while (again && !waiting);
    // Events queued while the head was failing wait for its retry instead of hammering now.
    if (again) queued().forEach((item) => emit(item.id, "queued"));
  })()
    .catch(report)
    .finally(() => {
      flushing = null;
    });
  return flushing;
}

/** Sends the queue in order; true when it stopped at an event that must wait for a retry. */
async function drain(): Promise<boolean> {
  for (const item of queued()) {
    let verdict = await deliver(item);
    if (verdict.result === "error" && verdict.status === 401 && !item.refreshed) {
      const fresh = await refreshed(item);
      if (fresh) verdict = await deliver(fresh);
    }
    if (verdict.result === "retry") {
      queued().forEach((waiting) => emit(waiting.id, "queued"));
      schedule(verdict.afterMs);
      return true;
    }
    dequeue(item.id);
    backoffMs = 1000;
    if (verdict.result === "ok") {
      emit(item.id, "sent");
    } else {
      emit(item.id, "failed", {
        responseId: item.responseId, eventId: item.id, status: verdict.status, message: verdict.message,
      });
      report(`feedback ${item.id} on ${item.responseId} refused: ${verdict.message}`);
    }
  }
  return false;
}

/** The item with a new credential from its endpoint's `getToken`, saved; null when none. */
async function refreshed(item: QueuedEvent): Promise<QueuedEvent | null> {
  const source = tokenSources.get(item.endpoint);
  if (!source) return null;
  let token: string | null | undefined;
  try {
    token = await source(item.responseId);
  } catch (error) {
    report(error);
    return null;
  }
  if (!token || `Bearer ${token}` === item.auth) return null;
  const fresh: QueuedEvent = { ...item, auth: `Bearer ${token}`, refreshed: true };
  save(queued().map((waiting) => (waiting.id === item.id ? fresh : waiting)));
  return fresh;
}

function schedule(afterMs: number): void {
  if (timer !== null) clearTimeout(timer);
  const wait = Math.max(afterMs, backoffMs);
  backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
  timer = setTimeout(() => {
    timer = null;
    void flush();
  }, wait);
}

async function deliver(item: QueuedEvent): Promise<Verdict> {
  const controller = typeof AbortController !== "undefined" ? new AbortController() : null;
  const timeout = setTimeout(() => controller?.abort(), REQUEST_TIMEOUT_MS);
  try {
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (item.auth) headers.Authorization = item.auth;
    const response = await fetch(item.endpoint.replace(/\/+$/, "") + item.path, {
      method: "POST",
      headers,
      body: JSON.stringify(item.body),
      credentials: "omit",
      mode: "cors",
      signal: controller?.signal,
    });
    return await judge(response);
  } catch (error) {
    return { result: "retry", afterMs: 0, message: String(error) };
  } finally {
    clearTimeout(timeout);
  }
}

/** What an answer means for the event: delivered, to retry, or refused for good. */
export async function judge(response: Response): Promise<Verdict> {
  const status = response.status;
  let body: Record<string, unknown> | null = null;
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    body = null;
  }
  if (status >= 200 && status < 300) {
    const results = body && Array.isArray(body.results) ? (body.results as { status?: string }[]) : [];
    const invalid = results.some((result) => result && result.status !== "accepted")
      || (body !== null && typeof body.invalid === "number" && body.invalid > 0)
      || (body !== null && typeof body.status === "string" && body.status !== "accepted");
    return invalid
      ? { result: "error", status, message: "ingest reported the event invalid" }
      : { result: "ok" };
  }
  const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
  if (status === 408 || status === 429 || status >= 500) {
    const seconds = Number(response.headers.get("Retry-After"));
    return { result: "retry", afterMs: Number.isFinite(seconds) ? seconds * 1000 : 0, message: detail };
  }
  return { result: "error", status, message: detail };
}
