/** Nothing the widget does may throw into the host page: every entry point goes through here. */

export function guard<A extends unknown[], R>(
  fn: (...args: A) => R,
  fallback: R,
): (...args: A) => R {
  return (...args: A): R => {
    try {
      return fn(...args);
    } catch (error) {
      report(error);
      return fallback;
    }
  };
}

export function report(error: unknown): void {
  try {
    if (typeof console !== "undefined" && console.warn) console.warn("feedbackloop:", error);
  } catch {
    // A host that replaced console with something that throws still gets no exception.
  }
}

export function callHook<T>(hook: ((value: T) => void) | undefined, value: T): void {
  if (!hook) return;
  try {
    hook(value);
  } catch (error) {
    report(error);
  }
}
