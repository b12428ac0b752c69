// The chat page's logic. Everything that talks to Titan goes through titan.js; this file only
// signs in, draws the conversation and keeps it in sessionStorage so a reload (same tab) shows it
// again, resends what was not ACKed yet (same client ids) and never shows a message twice.

import { TitanClient, tokenUser, newClientId } from "/titan.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "titan.session";
const LOG_LIMIT = 500;

/** This tab's device: kept over reloads, distinct per tab so two tabs of one user don't fight. */
function tabDevice() {
  let device = sessionStorage.getItem("titan.device");
  if (!device) {
    device = "web-" + newClientId().slice(2, 10);
    sessionStorage.setItem("titan.device", device);
  }
  return device;
}

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
let client = null;
let session = null; // {user, token, dev}
let log = []; // [{kind: "in", id, from, time, message} | {kind: "out", id, to, time, message, state}]

function logKey() {
  return `titan.log.${session.user}.${tabDevice()}`;
}

function saveLog() {
  log = log.slice(-LOG_LIMIT);
  sessionStorage.setItem(logKey(), JSON.stringify(log));
}

function loadLog() {
  try {
    log = JSON.parse(sessionStorage.getItem(logKey()) ?? "[]");
  } catch {
    log = [];
  }
}

function timeText(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

function render(entry) {
  const li = document.createElement("li");
  li.className = `msg ${entry.kind}`;
  li.dataset.id = entry.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = entry.message;
  if (entry.kind === "in") {
    meta.textContent = `${entry.from} · ${timeText(entry.time)}`;
    li.dataset.from = entry.from;
  } else {
    const state = document.createElement("span");
    state.className = "state";
    meta.append(`to ${entry.to} · ${timeText(entry.time)} · `, state);
    li.dataset.to = entry.to;
  }
  li.append(meta, body);
  updateState(li, entry);
  return li;
}

function updateState(li, entry) {
  if (entry.kind !== "out") return;
  li.dataset.state = entry.state;
  const text = { sending: "sending…", acked: "✓ ACKed", failed: `✗ ${entry.error ?? "refused"}` };
  li.querySelector(".state").textContent = text[entry.state] ?? entry.state;
}

function append(entry) {
  log.push(entry);
  saveLog();
  $("log").append(render(entry));
  $("log").lastElementChild.scrollIntoView({ block: "nearest" });
}

function setOutState(id, state, error) {
  const entry = log.find((e) => e.kind === "out" && e.id === id);
  if (!entry) return;
  entry.state = state;
  if (error) entry.error = error;
  saveLog();
  const li = $("log").querySelector(`li.out[data-id="${CSS.escape(id)}"]`);
  if (li) updateState(li, entry);
}

function showStatus({ state, retryInMs, reason }) {
  const el = $("status");
  el.className = `status ${state}`;
  el.textContent =
    state === "offline" ? `offline, retrying in ${(retryInMs / 1000).toFixed(1)} s` :
    state === "stopped" && reason ? `stopped: ${reason}` : state;
  el.title = reason ?? "";
}

async function devToken(user) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (response.status === 404) {
    throw new Error("dev tokens are off: start the server with TITAN__AUTH__DEV_TOKENS=true, or paste a token");
  }
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error ?? `HTTP ${response.status}`);
  return answer;
}

function start(newSession) {
  session = newSession;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  loadLog();
  $("log").replaceChildren(...log.map(render));
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("signout").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = `${session.user} (${tabDevice()})`;

  // With dev tokens, a fresh token is fetched on every connection, so expiry never strands us.
  const token = session.dev
    ? async () => (await devToken(session.user)).token
    : session.token;
  const seen = log.filter((e) => e.kind === "in").map((e) => e.id);
  client = new TitanClient(wsUrl, { token, device: tabDevice(), seen });
  client.addEventListener("status", (e) => showStatus(e.detail));
  client.addEventListener("message", (e) => append({ kind: "in", ...e.detail }));
  client.addEventListener("acked", (e) => setOutState(e.detail.id, "acked"));
  client.addEventListener("failed", (e) => setOutState(e.detail.id, "failed", e.detail.error.message));
  // What was sent before a reload and not ACKed goes out again under the same client id.
  for (const entry of log) {
    if (entry.kind === "out" && entry.state === "sending") client.send(entry.to, entry.message, entry.id);
  }
  client.start();
}

function signOut() {
  client?.stop("signed out");
  client = null;
  sessionStorage.removeItem(SESSION_KEY);
  location.reload();
}

$("dev-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    const { user, token } = await devToken($("user").value.trim());
    start({ user, token, dev: true });
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  const user = tokenUser(token);
  if (!user) {
    $("signin-error").textContent = "that does not look like a JWT";
    return;
  }
  start({ user, token, dev: false });
});

$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const to = $("to").value.trim();
  const message = $("body").value;
  if (!to || !message) return;
  const { id } = client.send(to, message);
  append({ kind: "out", id, to, message, time: new Date().toISOString(), state: "sending" });
  $("body").value = "";
  $("body").focus();
});

$("signout").addEventListener("click", signOut);

const saved = sessionStorage.getItem(SESSION_KEY);
if (saved) {
  try {
    start(JSON.parse(saved));
  } catch {
    sessionStorage.removeItem(SESSION_KEY);
  }
}
