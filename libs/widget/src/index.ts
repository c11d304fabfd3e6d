/**
 * feedbackloop's feedback widget. Every export is safe to call from a host page: a failure is
 * logged with `console.warn` and answered with null (or an empty list), never thrown.
 */

import { flush as flushQueue, watchConnectivity } from "./client";
import { configure as setOptions, resolve } from "./config";
import {
  type CorrectionHandle,
  type CorrectionOptions,
  captureCorrection as capture,
  mountReplay as replay,
  type ReplayOptions,
} from "./helpers";
import { guard } from "./safe";
import { mountThumbs } from "./thumbs";
import type { ClientOptions, MountOptions, WidgetHandle } from "./types";

export type {
  ClientOptions, FeedbackError, Labels, MountOptions, Reason, SentEvent, SignalKind, Thumb, WidgetHandle,
} from "./types";
export type { CorrectionHandle, CorrectionOptions, ReplayOptions } from "./helpers";

export const VERSION = "1.0.0";
export const RESPONSE_ID_ATTRIBUTE = "data-feedbackloop-response-id";

const mounted = new WeakMap<Element, WidgetHandle>();

/** Sets options every later widget starts from (endpoint, key, userId, getToken...). */
export const configure = guard((options: ClientOptions): void => setOptions(options), undefined);

/** The thumbs widget on `element`, an AI response (its id from `options.responseId` or the
 * element's `data-feedbackloop-response-id`). Mounting the same element twice returns the first. */
export const mount = guard((element: Element, options: MountOptions = {}): WidgetHandle | null => {
  const existing = mounted.get(element);
  if (existing) return existing;
  const resolved = resolve(element, options);
  if (!resolved.responseId) throw new Error("mount needs a response id");
  const handle = mountThumbs(element, resolved, resolved.responseId);
  mounted.set(element, {
    responseId: handle.responseId,
    destroy(): void {
      mounted.delete(element);
      handle.destroy();
    },
  });
  watchConnectivity();
  void flushQueue();
  return mounted.get(element) as WidgetHandle;
}, null);

/** Mounts a widget on every element under `root` that holds a response id (but those marked
 * `data-feedbackloop-auto="false"`). */
export const attach = guard((root: ParentNode = document, options: MountOptions = {}): WidgetHandle[] => {
  const handles: WidgetHandle[] = [];
  root.querySelectorAll(`[${RESPONSE_ID_ATTRIBUTE}]`).forEach((element) => {
    if (element.getAttribute("data-feedbackloop-auto") === "false") return;
    const handle = mount(element, options);
    if (handle) handles.push(handle);
  });
  return handles;
}, [] as WidgetHandle[]);

export const captureCorrection = guard(
  (field: HTMLElement, options: CorrectionOptions): CorrectionHandle | null => capture(field, options),
  null,
);

export const mountReplay = guard(
  (element: Element, options: ReplayOptions): WidgetHandle | null => replay(element, options),
  null,
);

/** Sends whatever is queued now; resolves when the queue is empty or must wait. */
export const flush = guard((): Promise<void> => flushQueue(), Promise.resolve());
