// Smoke check for one peer (run by `bench/peers.sh smoke NAME`): raw WebSocket frames, no client
// SDKs, so the transcript it writes is exactly what a load generator adapter must send and parse.
//
//   node smoke.js --peer centrifugo|sockudo|socketio|raw --url-a WS_URL --url-b WS_URL
//                 [--transcript FILE]
//
// Env: BENCH_JWT_SECRET (centrifugo, socketio), BENCH_PING_S (the server heartbeat interval the
// peer was started with; the check waits for one server ping and answers it).
//
// Steps: a bad credential is refused; clients A and B connect and authenticate; both subscribe
// to one room; A publishes and B must receive the body; B publishes and A must receive it; A
// waits for a server ping, answers it, and A -> B still works afterwards.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const WebSocket = require("ws");

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const k of ["peer", "url-a", "url-b"]) if (!out[k]) throw new Error(`--${k} is required`);
  return out;
}

const args = parseArgs(process.argv.slice(2));
const PEER = args.peer;
const SECRET = process.env.BENCH_JWT_SECRET || "";
const PING_S = Number(process.env.BENCH_PING_S || "0");
const T0 = Date.now();
const transcript = [];

function note(line) {
  const s = `[${((Date.now() - T0) / 1000).toFixed(3)}] ${line}`;
  transcript.push(s);
  console.log(s);
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

function jwtHS256(claims, secret) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = b64url(crypto.createHmac("sha256", secret).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

function token(sub, secret = SECRET) {
  return jwtHS256({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, secret);
}

// One WebSocket with a frame log, a wait-for-frame primitive and an auto-answer hook for pings.
class Conn {
  constructor(label, url) {
    this.label = label;
    this.url = url;
    this.frames = []; // unconsumed frames (strings; Centrifugo frames are split on "\n")
    this.waiters = [];
    this.closed = null;
    this.pings = 0;
    this.autoAnswer = null; // (text) => reply string | null
  }

  open() {
    note(`${this.label} connect ${this.url}`);
    this.ws = new WebSocket(this.url, { perMessageDeflate: false });
    this.ws.on("message", (data, isBinary) => {
      const text = isBinary ? `<binary ${data.length} bytes>` : data.toString("utf8");
      note(`${this.label} < ${text}`);
      const parts = PEER === "centrifugo" ? text.split("\n").filter((p) => p !== "") : [text];
      for (const p of parts) {
        const reply = this.autoAnswer ? this.autoAnswer(p) : null;
        if (reply !== null) {
          this.pings += 1;
          this.send(reply);
          continue;
        }
        this.frames.push(p);
      }
      this.pump();
    });
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      note(`${this.label} closed ${code} ${reason}`);
      this.pump();
    });
    this.ws.on("error", (err) => note(`${this.label} error ${err.message}`));
    return new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
  }

  send(text) {
    note(`${this.label} > ${text}`);
    this.ws.send(text);
  }

  pump() {
    for (const w of [...this.waiters]) {
      const i = this.frames.findIndex(w.pred);
      if (i >= 0) {
        const [f] = this.frames.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(f);
      } else if (this.closed && !w.allowClose) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.reject(new Error(`${this.label}: closed (${this.closed.code} ${this.closed.reason}) while waiting for ${w.what}`));
      }
    }
  }

  // Resolves with the first (unconsumed) frame for which pred(text) is true.
  wait(what, pred, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const w = { what, pred, resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push(w);
      this.pump();
    });
  }

  waitClose(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      if (this.closed) return resolve(this.closed);
      const t = setTimeout(() => reject(new Error(`${this.label}: not closed within ${timeoutMs} ms`)), timeoutMs);
      this.ws.once("close", (code, reason) => {
        clearTimeout(t);
        resolve({ code, reason: reason.toString() });
      });
    });
  }

  close() {
    if (!this.closed) this.ws.close(1000);
  }
}

function json(text) {
  try {
    return JSON.parse(text);
  } catch (_e) {
    return null;
  }
}

// ---- per-protocol adapters ------------------------------------------------------------------

const adapters = {
  centrifugo: {
    room: "room-3",
    serverPings: true,
    init(c) {
      c.nextId = 1;
      c.autoAnswer = (t) => (t === "{}" ? "{}" : null); // server ping {} -> client pong {}
    },
    async connect(c, user, tok = token(user)) {
      const id = c.nextId++;
      c.send(JSON.stringify({ id, connect: { token: tok, name: "bench" } }));
      const r = json(await c.wait("connect reply", (t) => json(t)?.id === id));
      if (!r.connect) throw new Error(`connect refused: ${JSON.stringify(r)}`);
    },
    async refused(c) {
      const id = c.nextId++;
      c.send(JSON.stringify({ id, connect: { token: token("intruder", "wrong-secret"), name: "bench" } }));
      // Refusal is an error reply or a close (Centrifugo closes with 3500 "invalid token").
      const r = await c.wait("connect error", (t) => json(t)?.id === id, 5000).then(
        (t) => json(t),
        (e) => (c.closed ? { closed: c.closed } : Promise.reject(e)),
      );
      if (r.connect) throw new Error("a token signed with the wrong secret was accepted");
      return r;
    },
    async subscribe(c, room) {
      const id = c.nextId++;
      c.send(JSON.stringify({ id, subscribe: { channel: room } }));
      const r = json(await c.wait("subscribe reply", (t) => json(t)?.id === id));
      if (!r.subscribe) throw new Error(`subscribe failed: ${JSON.stringify(r)}`);
    },
    async publish(c, room, body) {
      const id = c.nextId++;
      c.send(JSON.stringify({ id, publish: { channel: room, data: { body } } }));
      const r = json(await c.wait("publish reply", (t) => json(t)?.id === id));
      if (!r.publish) throw new Error(`publish failed: ${JSON.stringify(r)}`);
    },
    isDelivery: (room, body) => (t) => {
      const m = json(t);
      return m?.push?.channel === room && m.push.pub?.data?.body === body;
    },
  },

  sockudo: {
    room: "private-room-3",
    serverPings: true,
    init(c) {
      c.autoAnswer = (t) => (json(t)?.event === "pusher:ping" ? JSON.stringify({ event: "pusher:pong", data: {} }) : null);
    },
    async connect(c) {
      const f = json(await c.wait("pusher:connection_established", (t) => json(t)?.event === "pusher:connection_established"));
      const data = typeof f.data === "string" ? JSON.parse(f.data) : f.data;
      c.socketId = data.socket_id;
      if (!c.socketId) throw new Error("no socket_id");
    },
    auth(c, room, secret = "bench-secret") {
      const sig = crypto.createHmac("sha256", secret).update(`${c.socketId}:${room}`).digest("hex");
      return `bench-key:${sig}`;
    },
    async refused(c) {
      await this.connect(c);
      const room = this.room;
      c.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: room, auth: this.auth(c, room, "wrong-secret") } }));
      const r = await c.wait("subscription error", (t) => /error/i.test(json(t)?.event || ""), 5000).then(
        (t) => json(t),
        (e) => (c.closed ? { closed: c.closed } : Promise.reject(e)),
      );
      return r;
    },
    async subscribe(c, room) {
      c.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: room, auth: this.auth(c, room) } }));
      const r = json(await c.wait("subscription reply", (t) => {
        const m = json(t);
        return m && m.channel === room && /subscription_(succeeded|error)/.test(m.event || "");
      }));
      if (!/succeeded/.test(r.event)) throw new Error(`subscribe failed: ${JSON.stringify(r)}`);
    },
    async publish(c, room, body) {
      c.send(JSON.stringify({ event: "client-msg", channel: room, data: { body } }));
    },
    isDelivery: (room, body) => (t) => {
      const m = json(t);
      if (!m || m.event !== "client-msg" || m.channel !== room) return false;
      const d = typeof m.data === "string" ? json(m.data) : m.data;
      return d?.body === body;
    },
    async clientPing(c) {
      c.autoAnswer = null;
      c.send(JSON.stringify({ event: "pusher:ping", data: {} }));
      await c.wait("pusher:pong", (t) => json(t)?.event === "pusher:pong");
      this.init(c);
    },
  },

  socketio: {
    room: "room-3",
    serverPings: true,
    init(c) {
      c.nextAck = 0;
      c.autoAnswer = (t) => (t === "2" ? "3" : null); // Engine.IO ping -> pong
    },
    async connect(c, user, tok = token(user)) {
      await c.wait("engine.io open", (t) => t.startsWith("0{"));
      c.send(`40${JSON.stringify({ token: tok })}`);
      const r = await c.wait("socket.io connect reply", (t) => t.startsWith("40") || t.startsWith("44"));
      if (!r.startsWith("40")) throw new Error(`connect refused: ${r}`);
    },
    async refused(c) {
      await c.wait("engine.io open", (t) => t.startsWith("0{"));
      c.send(`40${JSON.stringify({ token: token("intruder", "wrong-secret") })}`);
      const r = await c.wait("socket.io connect reply", (t) => t.startsWith("40") || t.startsWith("44"), 5000);
      if (!r.startsWith("44")) throw new Error(`a token signed with the wrong secret was accepted: ${r}`);
      return r;
    },
    async subscribe(c, room) {
      const ack = c.nextAck++;
      c.send(`42${ack}${JSON.stringify(["join", room])}`);
      const r = await c.wait("join ack", (t) => t.startsWith(`43${ack}[`));
      if (!json(r.slice(`43${ack}`.length))?.[0]?.ok) throw new Error(`join failed: ${r}`);
    },
    async publish(c, room, body) {
      const ack = c.nextAck++;
      c.send(`42${ack}${JSON.stringify(["send", { room, body }])}`);
      const r = await c.wait("send ack", (t) => t.startsWith(`43${ack}[`));
      if (!json(r.slice(`43${ack}`.length))?.[0]?.ok) throw new Error(`send failed: ${r}`);
    },
    isDelivery: (room, body) => (t) => {
      if (!t.startsWith("42[")) return false;
      const m = json(t.slice(2));
      return m?.[0] === "message" && m[1]?.room === room && m[1]?.body === body;
    },
  },

  raw: {
    room: "room-3",
    serverPings: false,
    init(c) {
      c.nextRef = 1;
    },
    async connect(c) {
      await c.wait("welcome", (t) => json(t)?.type === "welcome");
    },
    async subscribe(c, room) {
      const ref = `j${c.nextRef++}`;
      c.send(JSON.stringify({ type: "join", room, ref }));
      const r = json(await c.wait("joined", (t) => json(t)?.ref === ref));
      if (r.type !== "joined") throw new Error(`join failed: ${JSON.stringify(r)}`);
    },
    async publish(c, room, body) {
      const ref = `s${c.nextRef++}`;
      const clientId = crypto.randomUUID();
      c.send(JSON.stringify({ type: "send", room, body, client_id: clientId, ref }));
      const r = json(await c.wait("ack", (t) => json(t)?.ref === ref));
      if (r.type !== "ack" || r.client_id !== clientId) throw new Error(`send failed: ${JSON.stringify(r)}`);
    },
    isDelivery: (room, body) => (t) => {
      const m = json(t);
      return m?.type === "message" && m.room === room && m.body === body;
    },
    async clientPing(c) {
      c.send(JSON.stringify({ type: "ping" }));
      await c.wait("pong", (t) => json(t)?.type === "pong");
    },
  },
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const ad = adapters[PEER];
  if (!ad) throw new Error(`unknown peer ${PEER}`);
  const room = ad.room;

  if (ad.refused) {
    note("--- step: a bad credential is refused");
    const x = new Conn("X", args["url-a"]);
    ad.init(x);
    await x.open();
    const r = await ad.refused(x);
    note(`X refused as expected: ${JSON.stringify(r)}`);
    x.close();
  }

  note("--- step: connect + authenticate");
  const a = new Conn("A", args["url-a"]);
  const b = new Conn("B", args["url-b"]);
  ad.init(a);
  ad.init(b);
  await Promise.all([a.open(), b.open()]);
  await ad.connect(a, "user-a");
  await ad.connect(b, "user-b");

  note(`--- step: subscribe both to ${room}`);
  await ad.subscribe(a, room);
  await ad.subscribe(b, room);
  await sleep(300); // cluster forms: let the subscription reach the broker

  note("--- step: A publishes, B receives");
  const body1 = `hello from A ${crypto.randomUUID()}`;
  const gotB = b.wait("A's message", ad.isDelivery(room, body1));
  const echoA = a.wait("A's own message", ad.isDelivery(room, body1), 2000).then(() => true, () => false);
  await ad.publish(a, room, body1);
  await gotB;
  const selfEcho = await echoA;
  note(`B received A's message; A received its own copy: ${selfEcho}`);

  note("--- step: B publishes, A receives");
  const body2 = `hello from B ${crypto.randomUUID()}`;
  const gotA = a.wait("B's message", ad.isDelivery(room, body2));
  await ad.publish(b, room, body2);
  await gotA;

  note("--- step: heartbeat");
  if (ad.clientPing) await ad.clientPing(a);
  if (ad.serverPings && PING_S > 0) {
    const deadline = Date.now() + (PING_S * 3 + 10) * 1000;
    while (a.pings === 0 && Date.now() < deadline && !a.closed) await sleep(100);
    if (a.pings === 0) throw new Error(`A saw no server ping within ${PING_S * 3 + 10} s`);
    await sleep(Math.min(PING_S * 1000, 3000) + 500); // past the pong deadline
    if (a.closed) throw new Error("A was closed after answering the ping");
    const body3 = `after ping ${crypto.randomUUID()}`;
    const got3 = b.wait("message after ping", ad.isDelivery(room, body3));
    await ad.publish(a, room, body3);
    await got3;
    note(`A answered ${a.pings} server ping(s) and still works`);
  }

  a.close();
  b.close();
  await sleep(200);
  note(`SMOKE OK ${PEER}`);
}

main()
  .then(() => {
    if (args.transcript) fs.writeFileSync(args.transcript, transcript.join("\n") + "\n");
    process.exit(0);
  })
  .catch((err) => {
    note(`SMOKE FAILED ${PEER}: ${err.message}`);
    if (args.transcript) fs.writeFileSync(args.transcript, transcript.join("\n") + "\n");
    process.exit(1);
  });
