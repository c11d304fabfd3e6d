/** The options a host page gives; every one is optional except where a helper says so. */

export type Thumb = "up" | "down";
export type SignalKind = "thumb" | "rating" | "comment" | "correction" | "replay";

export interface Labels {
  up: string;
  down: string;
  rating: string;
  star: string;
  reasonsTitle: string;
  commentLabel: string;
  commentPlaceholder: string;
  send: string;
  sent: string;
  queued: string;
  retrying: string;
  failed: string;
  retracted: string;
  useful: string;
  notUseful: string;
  aiReply: string;
  agentReply: string;
  usefulQuestion: string;
}

export interface ClientOptions {
  /** The ingest service, e.g. `https://feedback.example.com`. Defaults to the script's origin. */
  endpoint?: string;
  /** A browser-safe API key (scope `feedback`). A per-response token is preferred. */
  key?: string;
  /** Your user id; without one an anonymous id is generated and kept in localStorage. */
  userId?: string;
  /** A short-lived signed token for a response, minted by your backend. */
  getToken?: (responseId: string) => string | null | undefined | Promise<string | null | undefined>;
  /** Called for every feedback that could not be delivered and will not be retried. */
  onError?: (error: FeedbackError) => void;
  /** Called once an event was accepted by ingest. */
  onSent?: (event: SentEvent) => void;
  /** A CSP nonce for the `<style>` fallback, where constructable stylesheets are missing. */
  nonce?: string;
}

export interface MountOptions extends ClientOptions {
  responseId?: string;
  token?: string;
  /** Show the 1-5 rating. */
  rating?: boolean;
  /** The reason chips shown after a thumbs down: an id sent as the reason, and its label. */
  reasons?: (string | Reason)[];
  labels?: Partial<Labels>;
}

export interface Reason {
  id: string;
  label: string;
}

export interface FeedbackError {
  responseId: string;
  eventId: string;
  status: number | null;
  message: string;
}

export interface SentEvent {
  responseId: string;
  eventId: string;
  kind: SignalKind;
  retraction: boolean;
}

export interface WidgetHandle {
  readonly responseId: string;
  /** Removes the widget; its element is left as it was. */
  destroy(): void;
}
