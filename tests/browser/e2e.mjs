// End-to-end test of the chat page in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core, which never downloads a browser of its own).
//
//   node e2e.mjs http://127.0.0.1:PORT/ SCREENSHOT.png
//
// The server must run with auth.dev_tokens = true. Two pages sign in as two users, exchange
// messages both ways, one page leaves, messages arrive while it is away, it comes back (same tab,
// so the same device) and shows them, and no message is ever shown twice. Exits non-zero on any
// failure; every wait is bounded. With TITAN_E2E_CONTROL=1 (as crates/server/tests/suite/browser.rs
// runs it) it also has the server killed and restarted under both pages.

import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node e2e.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}
const WAIT = 20_000;
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let passed = 0;
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  passed += 1;
  console.log(`ok - ${what}`);
}

async function signIn(page, user) {
  await page.goto(base);
  await page.fill("#user", user);
  await page.click("#dev-signin");
  await page.waitForSelector("#status.online", { timeout: WAIT });
  check((await page.textContent("#whoami")).startsWith(user), `${user} sees who they are`);
}

async function send(page, to, body) {
  await page.fill("#to", to);
  await page.fill("#body", body);
  await page.click("#send");
}

/** Waits until `page` shows an incoming message with exactly this body. */
async function waitIncoming(page, body) {
  await page.waitForFunction(
    (text) => [...document.querySelectorAll("#log li.in .body")].some((b) => b.textContent === text),
    body,
    { timeout: WAIT },
  );
}

/** Waits until every sent message on `page` is marked ACKed. */
async function waitAllAcked(page, count) {
  await page.waitForFunction(
    (n) => {
      const out = [...document.querySelectorAll("#log li.out")];
      return out.length === n && out.every((li) => li.dataset.state === "acked");
    },
    count,
    { timeout: WAIT },
  );
}

// With TITAN_E2E_CONTROL=1 the test that runs this script controls the server: a line "@@kill"
// on stdout asks it to kill the server, "@@start" to start it again on the same port; it
// answers each with a line on stdin once done.
const control = process.env.TITAN_E2E_CONTROL === "1" ? readLines(process.stdin) : null;

async function* readLines(stream) {
  let buffer = "";
  for await (const chunk of stream) {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
    }
  }
}

async function ask(command) {
  console.log(`@@${command}`);
  const { value, done } = await control.next();
  if (done || value !== `${command} done`) throw new Error(`server control: ${command} failed (${value})`);
}

/** Both pages ride out a server kill -9 and restart; a message typed while it is down is sent
 * after the restart (same client id), ACKed, and shown to its recipient once. */
async function restartScenario(alice, bob) {
  await ask("kill");
  await alice.waitForSelector("#status.offline", { timeout: WAIT });
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  check(true, "both pages notice the dead server and wait to reconnect");
  await send(alice, "bob", "sent while the server was down");
  const waiting = await alice.$eval("#log li.out:last-child", (li) => li.dataset.state);
  check(waiting === "sending", `the message waits, not ACKed (state ${waiting})`);
  await ask("start");
  await alice.waitForSelector("#status.online", { timeout: WAIT });
  await bob.waitForSelector("#status.online", { timeout: WAIT });
  check(true, "both pages reconnect and authenticate again by themselves");
  await waitIncoming(bob, "sent while the server was down");
  await waitAllAcked(alice, 4);
  check(true, "the message sent while down is ACKed and delivered after the restart");
  const bobSees = await shown(bob);
  assertNoDuplicates(bobSees, "bob after the restart");
  const copies = bobSees.filter((i) => i.body === "sent while the server was down").length;
  check(copies === 1, `bob shows it once (${copies})`);
}

/** The browser's own log lines for a server that is down (token fetch and WebSocket refused
 * during the restart scenario): expected, not page errors. */
function expectedWhileDown(text) {
  return text.includes("net::ERR_CONNECTION_REFUSED") || /WebSocket connection to .* failed/.test(text);
}

/** What a page shows: [{kind, id, from, body}]. */
async function shown(page) {
  return page.$$eval("#log li", (items) =>
    items.map((li) => ({
      kind: li.classList.contains("in") ? "in" : "out",
      id: li.dataset.id,
      from: li.dataset.from,
      body: li.querySelector(".body").textContent,
    })),
  );
}

function assertNoDuplicates(items, who) {
  const ids = items.map((i) => i.id);
  check(new Set(ids).size === ids.length, `${who} shows no message twice (${ids.length} shown)`);
}

// playwright-core gives the browser a fresh temporary profile (--user-data-dir) of its own.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const errors = [];
try {
  // Two separate browser contexts: two people, nothing shared.
  const alice = await (await browser.newContext()).newPage();
  const bob = await (await browser.newContext()).newPage();
  for (const [name, page] of [["alice", alice], ["bob", bob]]) {
    page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !expectedWhileDown(m.text())) errors.push(`${name} console: ${m.text()}`);
    });
  }
  await alice.setViewportSize({ width: 900, height: 640 });
  await bob.setViewportSize({ width: 900, height: 640 });

  await signIn(alice, "alice");
  await signIn(bob, "bob");

  await send(alice, "bob", "hello bob");
  await waitIncoming(bob, "hello bob");
  check(true, "bob received alice's message");
  await send(bob, "alice", "hi alice, bob here");
  await waitIncoming(alice, "hi alice, bob here");
  check(true, "alice received bob's reply");
  await waitAllAcked(alice, 1);
  await waitAllAcked(bob, 1);
  check(true, "both pages show their sent message as ACKed");

  // Bob leaves (the tab navigates away, closing its WebSocket); alice writes meanwhile.
  await bob.goto("about:blank");
  await send(alice, "bob", "while you were away (1)");
  await send(alice, "bob", "while you were away (2)");
  await waitAllAcked(alice, 3);
  check(true, "alice's messages to the absent bob are ACKed (stored)");

  // Bob comes back in the same tab: same device, the session is restored from sessionStorage.
  await bob.goto(base);
  await bob.waitForSelector("#status.online", { timeout: WAIT });
  await waitIncoming(bob, "while you were away (1)");
  await waitIncoming(bob, "while you were away (2)");
  check(true, "bob receives what arrived while he was away");

  // A plain reload on top: what was shown and acked must not come back as new entries.
  await bob.reload();
  await bob.waitForSelector("#status.online", { timeout: WAIT });
  await send(bob, "alice", "back again");
  await waitIncoming(alice, "back again");
  await waitAllAcked(bob, 2);

  const bobSees = await shown(bob);
  assertNoDuplicates(bobSees, "bob");
  const bobIn = bobSees.filter((i) => i.kind === "in").map((i) => i.body);
  check(
    JSON.stringify(bobIn) ===
      JSON.stringify(["hello bob", "while you were away (1)", "while you were away (2)"]),
    `bob's incoming messages are exactly alice's three, in order (got ${JSON.stringify(bobIn)})`,
  );
  check(bobSees.filter((i) => i.kind === "in").every((i) => i.from === "alice"), "sender shown as alice");
  const aliceSees = await shown(alice);
  assertNoDuplicates(aliceSees, "alice");
  const aliceIn = aliceSees.filter((i) => i.kind === "in").map((i) => i.body);
  check(
    JSON.stringify(aliceIn) === JSON.stringify(["hi alice, bob here", "back again"]),
    `alice's incoming messages are exactly bob's two (got ${JSON.stringify(aliceIn)})`,
  );

  if (process.env.TITAN_E2E_CONTROL === "1") await restartScenario(alice, bob);

  await bob.screenshot({ path: screenshot, fullPage: true });
  check(errors.length === 0, `no page errors (${errors.join("; ")})`);
  console.log(`${passed} passed, 0 failed`);
} catch (error) {
  console.error(`not ok - ${error.message}`);
  if (errors.length) console.error(`page errors: ${errors.join("; ")}`);
  process.exitCode = 1;
} finally {
  process.stdin.destroy(); // let node exit even though the control stream was open
  await browser.close();
}
