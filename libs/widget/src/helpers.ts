/**
 * Edit-to-final and replay: the text a person finally sent instead of the AI's suggestion, and,
 * for agent tools, the AI's suggestion beside what the agent sent with a useful yes/no.
 */

import { submit } from "./client";
import { labels as labelsOf, resolve, sender as senderOf } from "./config";
import { button, el, pressed } from "./dom";
import { report } from "./safe";
import { FEEDBACK_PATH, outcomeText, shell, statusLine } from "./thumbs";
import type { MountOptions, WidgetHandle } from "./types";

export interface CorrectionOptions extends MountOptions {
  /** The AI's suggested text the person started from. */
  suggestion: string;
  /** Sends on this form's `submit` event; without one, call `send()` yourself. */
  form?: HTMLFormElement;
}

export interface CorrectionHandle {
  /** Sends the field's current text as the correction if it differs from the suggestion;
   * resolves with the event id, or null when nothing was sent. Never rejects. */
  send(): Promise<string | null>;
  destroy(): void;
}

type TextField = HTMLTextAreaElement | HTMLInputElement | HTMLElement;

function textOf(field: TextField): string {
  if ("value" in field && typeof field.value === "string") return field.value;
  return field.textContent || "";
}

export function captureCorrection(field: TextField, given: CorrectionOptions): CorrectionHandle | null {
  const options = resolve(field, given) as CorrectionOptions;
  const responseId = options.responseId;
  if (!responseId) throw new Error("captureCorrection needs a responseId");
  const sender = senderOf(options);
  const suggestion = given.suggestion.trim();
  let lastSent: string | null = null;

  async function send(): Promise<string | null> {
    try {
      const text = textOf(field).trim();
      if (!text || text === suggestion || text === lastSent) return null;
      lastSent = text;
      return await submit(sender, {
        path: FEEDBACK_PATH, responseId: responseId as string, kind: "correction", retraction: false,
        token: options.token, fields: { correction: { text } },
      });
    } catch (error) {
      report(error);
      return null;
    }
  }

  const onSubmit = (): void => {
    void send();
  };
  given.form?.addEventListener("submit", onSubmit);
  return {
    send,
    destroy(): void {
      given.form?.removeEventListener("submit", onSubmit);
    },
  };
}

export interface ReplayOptions extends MountOptions {
  aiReply: string;
  agentReply?: string;
  /** The customer message both replies answer. */
  message?: string;
}

/** Shows the AI's suggestion beside the agent's reply and asks whether it was useful. */
export function mountReplay(element: Element, given: ReplayOptions): WidgetHandle | null {
  const options = resolve(element, given) as ReplayOptions;
  const responseId = options.responseId;
  if (!responseId) throw new Error("mountReplay needs a responseId");
  const labels = labelsOf(options);
  const sender = senderOf(options);
  const { host, root } = shell(element, options.nonce);

  const wrap = el("div", { class: "fbl" });
  const sides = el("div", { class: "fbl-replay" });
  for (const [title, text] of [[labels.aiReply, given.aiReply], [labels.agentReply, given.agentReply || ""]]) {
    const side = el("section");
    side.append(el("h3", {}, title), el("div", {}, text));
    sides.appendChild(side);
  }
  const question = el("div", { class: "fbl", role: "group", "aria-label": labels.usefulQuestion });
  question.appendChild(el("span", {}, labels.usefulQuestion));
  const yes = button(labels.useful, { "data-fbl": "useful" });
  yes.textContent = labels.useful;
  const no = button(labels.notUseful, { "data-fbl": "not-useful" });
  no.textContent = labels.notUseful;
  question.append(yes, no);
  const status = statusLine();
  wrap.append(sides, question, status);
  root.appendChild(wrap);

  function answer(useful: boolean): void {
    pressed(yes, useful);
    pressed(no, !useful);
    const replay: Record<string, unknown> = { ai_reply: given.aiReply, useful };
    if (given.agentReply) replay.agent_reply = given.agentReply;
    if (given.message) replay.message = given.message;
    void submit(
      sender,
      { path: FEEDBACK_PATH, responseId: responseId as string, kind: "replay", retraction: false,
        token: options.token, fields: { replay } },
      (outcome) => {
        status.textContent = outcomeText(outcome, labels);
      },
    ).catch(report);
  }

  const onYes = (): void => answer(true);
  const onNo = (): void => answer(false);
  yes.addEventListener("click", onYes);
  no.addEventListener("click", onNo);
  pressed(yes, false);
  pressed(no, false);
  return {
    responseId,
    destroy(): void {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      host.remove();
    },
  };
}
