/**
 * The thumbs widget on one AI response: thumbs up/down (`aria-pressed`, kept across reloads),
 * a second click on the pressed thumb retracts it, a thumbs down opens reason chips and an
 * optional comment, and an optional 1-5 rating.
 */

import { type Outcome, submit } from "./client";
import { labels as labelsOf, reasons as reasonsOf, sender as senderOf } from "./config";
import { button, el, icon, pressed, shown } from "./dom";
import { report } from "./safe";
import { read, write } from "./storage";
import { applyStyles } from "./styles";
import type { FeedbackError, Labels, MountOptions, SignalKind, Thumb, WidgetHandle } from "./types";

interface Remembered {
  thumb?: Thumb;
  rating?: number;
}

export const FEEDBACK_PATH = "/v1/feedback";
export const RETRACTION_PATH = "/v1/feedback/retractions";

/** A shadow root in a new child of `element` (the response's own content is left alone). */
export function shell(element: Element, nonce?: string): { host: HTMLElement; root: ShadowRoot | HTMLElement } {
  const host = el("div", { "data-feedbackloop-widget": "" });
  let root: ShadowRoot | HTMLElement = host;
  try {
    if (typeof host.attachShadow === "function") root = host.attachShadow({ mode: "open" });
  } catch {
    root = host;
  }
  applyStyles(root, nonce);
  element.appendChild(host);
  return { host, root };
}

/** What a person reads about their feedback's delivery. */
export function outcomeText(outcome: Outcome, labels: Labels, retraction = false): string {
  if (outcome === "sent") return retraction ? labels.retracted : labels.sent;
  if (outcome === "failed") return labels.failed;
  const offline = typeof navigator !== "undefined" && navigator.onLine === false;
  return offline ? labels.queued : labels.retrying;
}

export function statusLine(): HTMLElement {
  return el("div", { class: "fbl-status", role: "status", "aria-live": "polite" });
}

export function mountThumbs(element: Element, options: MountOptions, responseId: string): WidgetHandle {
  const labels = labelsOf(options);
  const sender = senderOf(options);
  const stateName = `state:${responseId}`;
  const remembered: Remembered = read<Remembered>(stateName) || {};
  const { host, root } = shell(element, options.nonce);

  const bar = el("div", { class: "fbl", role: "group", "aria-label": "Feedback" });
  const up = button(labels.up, { "data-fbl": "up" });
  up.appendChild(icon("up"));
  const down = button(labels.down, { "data-fbl": "down" });
  down.appendChild(icon("down"));
  bar.append(up, down);

  const stars: HTMLButtonElement[] = [];
  if (options.rating) {
    const group = el("div", { class: "fbl-stars", role: "group", "aria-label": labels.rating });
    for (let n = 1; n <= 5; n++) {
      const star = button(labels.star.replace("{n}", String(n)), { "data-fbl": `star-${n}` });
      star.appendChild(icon("star"));
      stars.push(star);
      group.appendChild(star);
    }
    bar.appendChild(group);
  }

  const panel = el("div", { class: "fbl-panel fbl-hidden", "data-fbl": "reasons" });
  const fieldset = el("fieldset", { class: "fbl-chips" });
  fieldset.appendChild(el("legend", {}, labels.reasonsTitle));
  const chips = reasonsOf(options).map((reason) => {
    const chip = el("button", { type: "button", "aria-pressed": "false", "data-reason": reason.id }, reason.label);
    fieldset.appendChild(chip);
    return chip;
  });
  const commentId = `fbl-comment-${Math.random().toString(36).slice(2, 10)}`;
  const label = el("label", { for: commentId }, labels.commentLabel);
  const comment = el("textarea", { id: commentId, placeholder: labels.commentPlaceholder, maxlength: "20000" });
  const send = el("button", { type: "button", class: "fbl-send" }, labels.send);
  panel.append(fieldset, label, comment, send);
  bar.appendChild(panel);

  const status = statusLine();
  bar.appendChild(status);
  root.appendChild(bar);

  function render(): void {
    pressed(up, remembered.thumb === "up");
    pressed(down, remembered.thumb === "down");
    stars.forEach((star, index) => {
      pressed(star, remembered.rating === index + 1);
      star.classList.toggle("fbl-lit", (remembered.rating || 0) > index);
    });
  }

  function remember(): void {
    write(stateName, remembered);
    render();
  }

  function say(outcome: Outcome, error: FeedbackError | undefined, retraction: boolean): void {
    status.textContent = outcomeText(outcome, labels, retraction);
    const hook = outcome === "failed" ? options.onError : undefined;
    if (hook && error) {
      try {
        hook(error);
      } catch (failure) {
        report(failure);
      }
    }
  }

  function send_(kind: SignalKind, fields: Record<string, unknown>, retraction: boolean): void {
    void submit(
      sender,
      {
        path: retraction ? RETRACTION_PATH : FEEDBACK_PATH,
        responseId,
        kind,
        retraction,
        token: options.token,
        fields: retraction ? { kind } : fields,
      },
      (outcome, eventId, error) => {
        say(outcome, error, retraction);
        if (outcome === "sent" && options.onSent) {
          try {
            options.onSent({ responseId, eventId, kind, retraction });
          } catch (failure) {
            report(failure);
          }
        }
      },
    ).catch(report);
  }

  function thumb(value: Thumb): void {
    if (remembered.thumb === value) {
      delete remembered.thumb;
      send_("thumb", {}, true);
    } else {
      remembered.thumb = value;
      send_("thumb", { thumb: value }, false);
    }
    shown(panel, remembered.thumb === "down");
    remember();
  }

  function rate(value: number): void {
    if (remembered.rating === value) {
      delete remembered.rating;
      send_("rating", {}, true);
    } else {
      remembered.rating = value;
      send_("rating", { rating: value }, false);
    }
    remember();
  }

  function sendComment(): void {
    const picked = chips.filter((chip) => chip.getAttribute("aria-pressed") === "true");
    const text = comment.value.trim();
    if (!text && picked.length === 0) return;
    const reasons = picked.map((chip) => chip.getAttribute("data-reason") || "");
    const spoken = picked.map((chip) => chip.textContent || "").join(", ");
    send_("comment", { comment: { text: text || spoken, reasons } }, false);
    shown(panel, false);
  }

  const listeners: [EventTarget, string, EventListener][] = [];
  function on(target: EventTarget, type: string, handler: () => void): void {
    const safe: EventListener = () => {
      try {
        handler();
      } catch (error) {
        report(error);
      }
    };
    target.addEventListener(type, safe);
    listeners.push([target, type, safe]);
  }
  on(up, "click", () => thumb("up"));
  on(down, "click", () => thumb("down"));
  stars.forEach((star, index) => on(star, "click", () => rate(index + 1)));
  chips.forEach((chip) => on(chip, "click", () => pressed(chip, chip.getAttribute("aria-pressed") !== "true")));
  on(send, "click", sendComment);

  render();
  return {
    responseId,
    destroy(): void {
      listeners.forEach(([target, type, handler]) => target.removeEventListener(type, handler));
      host.remove();
    },
  };
}
