/** localStorage that never throws (disabled storage, quota, private mode): memory instead. */

const memory = new Map<string, string>();
const PREFIX = "feedbackloop:v1:";

function store(): Storage | null {
  try {
    return typeof localStorage !== "undefined" ? localStorage : null;
  } catch {
    return null;
  }
}

export function read<T>(name: string): T | null {
  const key = PREFIX + name;
  let text: string | null = null;
  try {
    text = store()?.getItem(key) ?? null;
  } catch {
    text = null;
  }
  if (text === null) text = memory.get(key) ?? null;
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export function write(name: string, value: unknown): void {
  const key = PREFIX + name;
  const text = JSON.stringify(value);
  memory.set(key, text);
  try {
    store()?.setItem(key, text);
  } catch {
    // Over quota or disabled: the in-memory copy lasts for this page.
  }
}

export function remove(name: string): void {
  const key = PREFIX + name;
  memory.delete(key);
  try {
    store()?.removeItem(key);
  } catch {
    // nothing to do
  }
}

export function randomId(): string {
  const c = typeof crypto !== "undefined" ? crypto : undefined;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The anonymous person's opaque id, generated once per browser. */
export function feedbackKey(): string {
  const existing = read<string>("person");
  if (typeof existing === "string" && existing) return existing;
  const created = randomId();
  write("person", created);
  return created;
}
