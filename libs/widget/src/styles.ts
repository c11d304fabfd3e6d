/**
 * The widget's styles, in its shadow root: a constructable stylesheet (`adoptedStyleSheets`),
 * which a strict CSP does not block; else a `<style>` element with the host's nonce. No style
 * attribute is ever written. Theme with CSS variables on any ancestor, e.g.
 * `--feedbackloop-accent: #0b57d0`.
 */

const CSS = `
:host{all:initial;display:block;margin-top:.5em;font:var(--feedbackloop-font,14px/1.4 system-ui,sans-serif);color:var(--feedbackloop-fg,#1f2328)}
.fbl{display:flex;flex-wrap:wrap;align-items:center;gap:.375em}
.fbl-hidden{display:none!important}
button{font:inherit;color:inherit;cursor:pointer;background:var(--feedbackloop-bg,#fff);border:1px solid var(--feedbackloop-border,#8c959f);border-radius:var(--feedbackloop-radius,999px);padding:.25em .625em;min-height:2em;min-width:2em;display:inline-flex;align-items:center;justify-content:center;gap:.25em}
button:hover{border-color:var(--feedbackloop-accent,#0b57d0)}
button:focus-visible,textarea:focus-visible{outline:3px solid var(--feedbackloop-focus,#0b57d0);outline-offset:2px}
button[aria-pressed=true]{background:var(--feedbackloop-accent,#0b57d0);border-color:var(--feedbackloop-accent,#0b57d0);color:var(--feedbackloop-accent-fg,#fff)}
svg{width:1.1em;height:1.1em;fill:currentColor}
.fbl-panel{flex-basis:100%;display:flex;flex-direction:column;gap:.5em;margin-top:.25em;padding:.625em;border:1px solid var(--feedbackloop-border,#8c959f);border-radius:var(--feedbackloop-panel-radius,.5em);background:var(--feedbackloop-bg,#fff)}
.fbl-chips{display:flex;flex-wrap:wrap;gap:.375em;border:0;margin:0;padding:0}
.fbl-chips legend{padding:0;margin-bottom:.25em;font-weight:600}
textarea{font:inherit;color:inherit;background:var(--feedbackloop-bg,#fff);border:1px solid var(--feedbackloop-border,#8c959f);border-radius:.375em;padding:.375em;min-height:3.5em;resize:vertical;width:100%;box-sizing:border-box}
label{font-weight:600}
.fbl-send{align-self:flex-start;background:var(--feedbackloop-accent,#0b57d0);border-color:var(--feedbackloop-accent,#0b57d0);color:var(--feedbackloop-accent-fg,#fff)}
.fbl-status{font-size:.875em;color:var(--feedbackloop-muted,#57606a);min-height:1em}
.fbl-stars{display:inline-flex;gap:.125em;margin-left:.5em}
.fbl-stars button{padding:.125em .375em}
.fbl-stars .fbl-lit{color:var(--feedbackloop-star,#9a6700);border-color:var(--feedbackloop-star,#9a6700)}
.fbl-stars button[aria-pressed=true]{color:var(--feedbackloop-accent-fg,#fff);background:var(--feedbackloop-star,#9a6700)}
.fbl-replay{display:grid;grid-template-columns:1fr 1fr;gap:.5em;flex-basis:100%}
.fbl-replay section{border:1px solid var(--feedbackloop-border,#8c959f);border-radius:.5em;padding:.5em;white-space:pre-wrap;overflow-wrap:anywhere}
.fbl-replay h3{margin:0 0 .25em;font-size:.875em}
`;

let shared: CSSStyleSheet | null | undefined;

function sheet(): CSSStyleSheet | null {
  if (shared !== undefined) return shared;
  try {
    const created = new CSSStyleSheet();
    created.replaceSync(CSS);
    shared = created;
  } catch {
    shared = null;
  }
  return shared;
}

/** Styles `root` (a shadow root, or the host element where Shadow DOM is missing). */
export function applyStyles(root: ShadowRoot | HTMLElement, nonce?: string): void {
  const constructed = sheet();
  if (constructed && "adoptedStyleSheets" in root) {
    try {
      (root as ShadowRoot).adoptedStyleSheets = [constructed];
      return;
    } catch {
      // fall through to the element
    }
  }
  const style = document.createElement("style");
  if (nonce) style.nonce = nonce;
  style.textContent = root instanceof HTMLElement ? scoped(CSS) : CSS;
  root.appendChild(style);
}

/** Without Shadow DOM, every rule is confined to the widget's element. */
function scoped(css: string): string {
  const host = "[data-feedbackloop-widget]";
  return css
    .split("}")
    .filter((rule) => rule.includes("{"))
    .map((rule) => {
      const [selectors, body] = rule.split("{");
      const confined = selectors
        .split(",")
        .map((selector) => selector.trim())
        .map((selector) => (selector.startsWith(":host") ? selector.replace(":host", host) : `${host} ${selector}`));
      return `${confined.join(",")}{${body}}`;
    })
    .join("");
}
