/** The defaults, the host's `configure()` and an element's data attributes, merged. */

import type { Sender } from "./client";
import type { ClientOptions, Labels, MountOptions, Reason } from "./types";

export const DEFAULT_LABELS: Labels = {
  up: "Helpful",
  down: "Not helpful",
  rating: "Rate this response",
  star: "{n} of 5 stars",
  reasonsTitle: "What went wrong?",
  commentLabel: "Tell us more (optional)",
  commentPlaceholder: "What would have been better?",
  send: "Send feedback",
  sent: "Thanks for your feedback.",
  queued: "Saved. It will be sent when you are back online.",
  retrying: "Saved. It will be sent again shortly.",
  failed: "Your feedback could not be sent.",
  retracted: "Feedback removed.",
  useful: "Useful",
  notUseful: "Not useful",
  aiReply: "AI suggestion",
  agentReply: "Sent reply",
  usefulQuestion: "Was the AI suggestion useful?",
};

export const DEFAULT_REASONS: Reason[] = [
  { id: "inaccurate", label: "Inaccurate" },
  { id: "unhelpful", label: "Not helpful" },
  { id: "too_long", label: "Too long" },
  { id: "off_topic", label: "Off topic" },
  { id: "unsafe", label: "Unsafe or offensive" },
];

let global: ClientOptions = {};

export function configure(options: ClientOptions): void {
  global = { ...global, ...options };
}

export function globalOptions(): ClientOptions {
  return global;
}

function data(element: Element, name: string): string | undefined {
  const value = element.getAttribute(`data-feedbackloop-${name}`);
  return value === null || value === "" ? undefined : value;
}

export function resolve(element: Element, options: MountOptions = {}): MountOptions {
  const fromData: MountOptions = {};
  const responseId = data(element, "response-id");
  if (responseId) fromData.responseId = responseId;
  const token = data(element, "token");
  if (token) fromData.token = token;
  const userId = data(element, "user-id");
  if (userId) fromData.userId = userId;
  const rating = data(element, "rating");
  if (rating) fromData.rating = rating === "true";
  const merged: MountOptions = { ...global, ...fromData };
  for (const key of Object.keys(options) as (keyof MountOptions)[]) {
    if (options[key] !== undefined) (merged as Record<string, unknown>)[key] = options[key];
  }
  return merged;
}

export function sender(options: ClientOptions): Sender {
  const endpoint = options.endpoint || (typeof location !== "undefined" ? location.origin : "");
  return { endpoint, options };
}

export function labels(options: MountOptions): Labels {
  return { ...DEFAULT_LABELS, ...(options.labels || {}) };
}

export function reasons(options: MountOptions): Reason[] {
  const given = options.reasons;
  if (!Array.isArray(given) || given.length === 0) return DEFAULT_REASONS;
  return given.map((reason) => (typeof reason === "string" ? { id: reason, label: reason } : reason));
}
