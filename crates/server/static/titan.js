// titan.js: a dependency-free JavaScript client for Titan (JSON-RPC 2.0 over WebSocket).
// Served by the server at /titan.js; copy it into your app as it is (an ES module, no build step).
//
//   import { TitanClient } from "/titan.js";
//   const titan = new TitanClient("ws://127.0.0.1:3000/ws", { token: "<JWT>", device: "laptop" });
//   titan.addEventListener("message", (e) => show(e.detail));   // {id, from, to, time, message}
//   titan.addEventListener("status", (e) => console.log(e.detail.state));
//   titan.start();
//   const { id, acked } = titan.send("bob", "hi");               // acked: resolves once stored
//
// What it does for you (see docs/protocol.md for the contract):
// - authenticates (`auth.jwt`) on every (re)connection; `token` may be a string or an async
//   function returning a fresh one (called on every connection attempt);
// - acknowledges every `msg.recv` after its "message" events were dispatched, so a message is
//   acked only once the page has seen it (at least once);
// - drops messages whose id it has already seen (redeliveries), remembering the newest
//   `seenLimit` ids; pass `seen` to carry them over a page reload;
// - reconnects after any drop with exponential backoff and full jitter, except after the close
//   codes that say not to (4002 replaced, 4005 too many auth failures, 4007 revoked) or a refused
//   token, which stop the client ("stopped" event);
// - keeps every `send` in an outbox until the server ACKs it and sends it again after a
//   reconnect with the same client id, so a resend is never stored twice.
//
// Events (all CustomEvent, data in `detail`):
//   status   {state: "connecting" | "online" | "offline" | "stopped", attempt, retryInMs, reason}
//   message  a received message {id, from, to, time, message}, once per id
//   acked    {id, to, message}: the server stored a sent message
//   failed   {id, to, message, error}: the server refused a sent message for good
//   stopped  {code, reason}: the client gave up and will not reconnect

/** Close codes after which reconnecting would be wrong (see the protocol's close code table). */
const FINAL_CLOSE_CODES = new Map([
  [4002, "replaced: the same user and device connected elsewhere"],
  [4005, "too many failed authentication attempts"],
  [4007, "tokens revoked"],
]);

/** JSON-RPC error codes worth retrying on the same connection (the "temporary" column). */
const TEMPORARY_ERRORS = new Set([-32603, -32004, -32005, -32006]);

/** The server's code for a bad or expired token: retrying with the same token cannot help. */
const BAD_TOKEN = -32002;

/** A random id for a sent message (the idempotency key), usable outside secure contexts too. */
export function newClientId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Who a token names (its `sub`, else `userid`), read without verifying it; null if unreadable. */
export function tokenUser(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    return claims.sub ?? claims.userid ?? null;
  } catch {
    return null;
  }
}

/** An error from a JSON-RPC call; `code` is the server's error code, or null for a lost link. */
export class TitanError extends Error {
  constructor(message, code = null, data = undefined) {
    super(message);
    this.name = "TitanError";
    this.code = code;
    this.data = data;
  }
}

export class TitanClient extends EventTarget {
  #url;
  #options;
  #ws = null;
  #running = false;
  #calls = new Map(); // JSON-RPC id -> {resolve, reject, timer}
  #nextCallId = 1;
  #outbox = new Map(); // client id -> {id, to, message, promise, resolve, reject, sendingOn}
  #seen = new Set();
  #seenOrder = [];
  #wake = null; // cuts a backoff wait short
  #state = "stopped";

  /**
   * @param {string} url  ws:// or wss:// URL of the server (path / or /ws).
   * @param {object} options
   *   token: string | () => Promise<string>   the JWT, or how to get a fresh one
   *   device: string                           the device name (default: the server's "default")
   *   minBackoffMs, maxBackoffMs               reconnect delays (default 250 ms .. 10 s)
   *   callTimeoutMs                            a call unanswered this long drops the connection
   *   seenLimit                                how many received ids are remembered for dedupe
   *   seen: string[]                           ids already seen (e.g. restored after a reload)
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#options = {
      minBackoffMs: 250,
      maxBackoffMs: 10000,
      callTimeoutMs: 15000,
      seenLimit: 5000,
      ...options,
    };
    for (const id of options.seen ?? []) this.#remember(id);
  }

  /** The current connection state (as in the last "status" event). */
  get state() {
    return this.#state;
  }

  /** Sent messages not yet ACKed by the server: [{id, to, message}]. */
  get pending() {
    return Array.from(this.#outbox.values(), ({ id, to, message }) => ({ id, to, message }));
  }

  /** Starts connecting (and reconnecting) in the background. */
  start() {
    if (this.#running) return;
    this.#running = true;
    this.#loop();
  }

  /** Closes the connection and stops reconnecting; unsent messages stay in `pending`. */
  stop(reason = "stopped by the application") {
    this.#halt(1000, reason);
  }

  /** Replaces the token used from the next (re)connection on. */
  setToken(token) {
    this.#options.token = token;
  }

  /**
   * Sends `message` to user `to`. Returns {id, acked}: `id` is the client id (the idempotency
   * key; pass your own as `id` to resend something from an earlier page load), `acked` a promise
   * that resolves once the server stored the message and rejects only if the server refuses it
   * for good. Messages sent while offline (or stopped) wait in `pending` and go out on connect.
   */
  send(to, message, id = newClientId()) {
    const existing = this.#outbox.get(id);
    if (existing) return { id, acked: existing.promise };
    const entry = { id, to, message, sendingOn: null };
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.#outbox.set(id, entry);
    if (this.#state === "online") this.#transmit(entry);
    return { id, acked: entry.promise };
  }

  /** Any JSON-RPC call (e.g. "echo") on the current connection. */
  call(method, params) {
    return new Promise((resolve, reject) => {
      const ws = this.#ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new TitanError("not connected"));
        return;
      }
      const id = this.#nextCallId++;
      const timer = setTimeout(() => {
        // A silent server: drop the link; the reconnect resends whatever was in flight.
        this.#calls.delete(id);
        reject(new TitanError(`${method}: no answer in time`));
        ws.close(1000, "call timed out");
      }, this.#options.callTimeoutMs);
      this.#calls.set(id, { resolve, reject, timer, ws });
      const request = { jsonrpc: "2.0", method, id };
      if (params !== undefined) request.params = params;
      ws.send(JSON.stringify(request));
    });
  }

  // ---- connection loop ----

  async #loop() {
    let attempt = 0;
    while (this.#running) {
      this.#status("connecting", { attempt });
      let reason;
      try {
        const { closed } = await this.#connect();
        attempt = 0;
        this.#status("online", {});
        for (const entry of this.#outbox.values()) this.#transmit(entry);
        const event = await closed;
        reason = `closed (${event.code}${event.reason ? ": " + event.reason : ""})`;
        const final = FINAL_CLOSE_CODES.get(event.code);
        if (final) {
          this.#halt(event.code, final);
          return;
        }
      } catch (error) {
        if (error instanceof TitanError && error.code === BAD_TOKEN) {
          this.#halt(4401, `token refused: ${error.message}`);
          return;
        }
        reason = error.message;
      }
      if (!this.#running) return;
      const retryInMs = this.#backoff(attempt++);
      this.#status("offline", { attempt, retryInMs, reason });
      await this.#sleep(retryInMs);
    }
  }

  /** Opens the socket and authenticates; resolves to `{closed}`, a promise of the close event
   * (wrapped: an async function returning a bare promise would wait for it). */
  async #connect() {
    const token =
      typeof this.#options.token === "function" ? await this.#options.token() : this.#options.token;
    if (!token) throw new TitanError("no token", BAD_TOKEN);
    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    const closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        if (this.#ws === ws) this.#ws = null;
        this.#failCalls(ws, "connection closed");
        for (const entry of this.#outbox.values()) {
          if (entry.sendingOn === ws) entry.sendingOn = null;
        }
        resolve(event);
      });
    });
    ws.addEventListener("message", (event) => this.#frame(ws, event.data));
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      closed.then((event) => reject(new TitanError(`cannot connect (${event.code})`)));
    });
    const params = { token };
    if (this.#options.device) params.device = this.#options.device;
    try {
      const result = await this.call("auth.jwt", params);
      if (result !== "ACK") throw new TitanError(`auth.jwt answered ${JSON.stringify(result)}`);
    } catch (error) {
      ws.close(1000, "authentication failed");
      throw error;
    }
    return { closed };
  }

  /** Full jitter: a random delay up to min * 2^attempt, capped. */
  #backoff(attempt) {
    const { minBackoffMs, maxBackoffMs } = this.#options;
    const ceiling = Math.min(maxBackoffMs, minBackoffMs * 2 ** Math.min(attempt, 20));
    return Math.round(minBackoffMs / 2 + Math.random() * (ceiling - minBackoffMs / 2));
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const online = () => done(); // the browser says the network is back: try at once
      function done() {
        clearTimeout(timer);
        globalThis.removeEventListener?.("online", online);
        resolve();
      }
      globalThis.addEventListener?.("online", online);
      this.#wake = done;
    });
  }

  #halt(code, reason) {
    if (!this.#running && this.#state === "stopped") return;
    this.#running = false;
    this.#ws?.close(1000, "bye");
    this.#ws = null;
    this.#wake?.();
    this.#status("stopped", { reason });
    this.dispatchEvent(new CustomEvent("stopped", { detail: { code, reason } }));
  }

  #status(state, detail) {
    this.#state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...detail } }));
  }

  /** Fails the calls made on `ws` (calls on a newer connection are not affected). */
  #failCalls(ws, why) {
    for (const [id, call] of this.#calls) {
      if (call.ws !== ws) continue;
      clearTimeout(call.timer);
      call.reject(new TitanError(why));
      this.#calls.delete(id);
    }
  }

  // ---- sending ----

  async #transmit(entry) {
    if (entry.sendingOn === this.#ws || !this.#outbox.has(entry.id)) return;
    entry.sendingOn = this.#ws;
    try {
      const result = await this.call("msg.send", [
        { to: entry.to, message: entry.message, id: entry.id },
      ]);
      if (result !== "ACK") throw new TitanError(`msg.send answered ${JSON.stringify(result)}`);
      this.#outbox.delete(entry.id);
      entry.resolve(entry.id);
      this.#emit("acked", { id: entry.id, to: entry.to, message: entry.message });
    } catch (error) {
      entry.sendingOn = null;
      if (error.code === null) return; // link lost: the reconnect sends it again
      if (TEMPORARY_ERRORS.has(error.code)) {
        const wait = error.data?.retry_after_ms ?? this.#backoff(2);
        setTimeout(() => this.#state === "online" && this.#transmit(entry), wait);
        return;
      }
      this.#outbox.delete(entry.id);
      entry.reject(error);
      this.#emit("failed", { id: entry.id, to: entry.to, message: entry.message, error });
    }
  }

  // ---- receiving ----

  #frame(ws, data) {
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      console.warn("titan: unparseable frame from the server");
      return;
    }
    for (const item of Array.isArray(parsed) ? parsed : [parsed]) this.#item(ws, item);
  }

  #item(ws, item) {
    if (item === null || typeof item !== "object") return;
    if (typeof item.method === "string") {
      if (item.id === undefined) return; // a notification: nothing to answer
      if (item.method !== "msg.recv") {
        this.#answer(ws, { error: { code: -32601, message: `Method not found: ${item.method}` } }, item.id);
        return;
      }
      if (!Array.isArray(item.params)) {
        this.#answer(ws, { error: { code: -32602, message: "Invalid params" } }, item.id);
        return;
      }
      for (const message of item.params) {
        if (!message || typeof message.id !== "string" || this.#seen.has(message.id)) continue;
        this.#remember(message.id);
        this.#emit("message", message);
      }
      // After the listeners ran: the page has the messages, so they may leave the server.
      this.#answer(ws, { result: "ACK" }, item.id);
      return;
    }
    const call = this.#calls.get(item.id);
    if (!call) return;
    this.#calls.delete(item.id);
    clearTimeout(call.timer);
    if (item.error) {
      call.reject(new TitanError(item.error.message, item.error.code, item.error.data));
    } else {
      call.resolve(item.result);
    }
  }

  #answer(ws, body, id) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ jsonrpc: "2.0", ...body, id }));
  }

  #remember(id) {
    if (this.#seen.has(id)) return;
    this.#seen.add(id);
    this.#seenOrder.push(id);
    while (this.#seenOrder.length > this.#options.seenLimit) {
      this.#seen.delete(this.#seenOrder.shift());
    }
  }

  #emit(type, detail) {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    } catch (error) {
      console.error("titan: a listener failed", error);
    }
  }
}
