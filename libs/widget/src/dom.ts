/** DOM building with text only: no innerHTML anywhere, so user text can never become markup. */

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const name of Object.keys(attributes)) node.setAttribute(name, attributes[name]);
  if (text !== undefined) node.textContent = text;
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
const THUMB_UP =
  "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6c-.4.3-.6.8-.6 1.4v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1.2-.7v-2z";
const STAR = "M12 17.3 18.2 21l-1.6-7L22 9.2l-7.2-.6L12 2 9.2 8.6 2 9.2 7.5 14l-1.7 7z";

export function icon(kind: "up" | "down" | "star"): SVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", kind === "star" ? STAR : THUMB_UP);
  if (kind === "down") path.setAttribute("transform", "rotate(180 12 12)");
  svg.appendChild(path);
  return svg;
}

export function button(label: string, attributes: Record<string, string> = {}): HTMLButtonElement {
  return el("button", { type: "button", "aria-label": label, title: label, ...attributes });
}

export function pressed(node: HTMLElement, on: boolean): void {
  node.setAttribute("aria-pressed", on ? "true" : "false");
}

export function shown(node: HTMLElement, on: boolean): void {
  node.classList.toggle("fbl-hidden", !on);
}
