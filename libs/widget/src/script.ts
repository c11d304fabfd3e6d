/**
 * The script-tag build: `<script src=".../widget/v1/feedbackloop.js" data-key="..." async>`.
 * Its one global is `window.feedbackloop`. It mounts a widget on every element holding
 * `data-feedbackloop-response-id`, now and as they are added (`data-auto="false"` to opt out).
 */

import * as api from "./index";
import { report } from "./safe";

declare global {
  interface Window {
    feedbackloop?: typeof api;
  }
}

function start(): void {
  if (window.feedbackloop) return;
  window.feedbackloop = api;
  const script = document.currentScript as HTMLScriptElement | null;
  const data = script ? script.dataset : {};
  let endpoint = data.endpoint;
  if (!endpoint && script && script.src) endpoint = new URL(script.src, location.href).origin;
  api.configure({
    endpoint,
    key: data.key || undefined,
    userId: data.userId || undefined,
    nonce: data.nonce || script?.nonce || undefined,
  });
  if (data.auto === "false") return;
  const scan = (): void => {
    api.attach(document);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", scan);
  else scan();
  if (typeof MutationObserver === "function") {
    let pending = false;
    new MutationObserver(() => {
      if (pending) return;
      pending = true;
      setTimeout(() => {
        pending = false;
        scan();
      }, 0);
    }).observe(document.documentElement, { childList: true, subtree: true });
  }
}

try {
  start();
} catch (error) {
  report(error);
}
