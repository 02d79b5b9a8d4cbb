// Socket.IO 4.8 peer server for the onlychat benchmark. See ../README.md for the wire frames.
//
//   node server.js --port P [--host 127.0.0.1] [--redis-url redis://127.0.0.1:6379]
//
// Env: BENCH_JWT_SECRET (required): HS256 secret for the connection token in
// `socket.handshake.auth.token` (claims `sub`, `exp`).
//
// Events (client -> server):
//   "join", room:string [, ack]          -> socket.join(room); ack({ok:true, room})
//   "send", {room, body} [, ack]         -> io.to(room).emit("message", {room, body}); ack({ok:true})
//                                           (only if the sender joined the room, else
//                                           ack({ok:false, error:"not_joined"}) and nothing sent)
// Server -> client: "message", {room, body} to every member of the room, the sender included.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");

function parseArgs(argv) {
  const out = { host: "127.0.0.1", port: 0, redisUrl: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === "--port") out.port = Number(next());
    else if (a === "--host") out.host = next();
    else if (a === "--redis-url") out.redisUrl = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(out.port) || out.port <= 0) throw new Error("--port P is required");
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const secret = process.env.BENCH_JWT_SECRET;
  if (!secret) throw new Error("BENCH_JWT_SECRET is not set");

  const httpServer = http.createServer((req, res) => {
    res.writeHead(404).end();
  });

  const io = new Server(httpServer, {
    transports: ["websocket"], // no long-polling, no upgrade dance
    serveClient: false,
    // BENCH_PING_S: only the smoke check sets it (to see Engine.IO pings quickly)
    pingInterval: process.env.BENCH_PING_S ? Number(process.env.BENCH_PING_S) * 1000 : 25000,
    pingTimeout: 60000, // generous: a busy client still answers in time
    connectTimeout: 45000,
    perMessageDeflate: false,
    // maxHttpBufferSize: default (1e6) is plenty
  });

  if (args.redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pubClient = createClient({ url: args.redisUrl });
    const subClient = pubClient.duplicate();
    for (const c of [pubClient, subClient]) {
      c.on("error", (err) => console.error("redis error:", err.message));
    }
    // node-redis retries the first connect forever; a benchmark wants a clear failure instead.
    let timer;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`cannot connect to Redis at ${args.redisUrl} within 5 s`)), 5000);
    });
    await Promise.race([Promise.all([pubClient.connect(), subClient.connect()]), deadline]);
    clearTimeout(timer);
    io.adapter(createAdapter(pubClient, subClient));
    console.log(`redis adapter: ${args.redisUrl}`);
  }

  io.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    if (typeof token !== "string" || token === "") {
      return next(new Error("unauthorized"));
    }
    try {
      const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
      if (typeof claims.sub !== "string" || claims.sub === "") {
        return next(new Error("unauthorized"));
      }
      socket.data.user = claims.sub;
      return next();
    } catch (_err) {
      return next(new Error("unauthorized"));
    }
  });

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || room === "") {
        if (typeof ack === "function") ack({ ok: false, error: "invalid_room" });
        return;
      }
      socket.join(room);
      if (typeof ack === "function") ack({ ok: true, room });
    });

    socket.on("send", (msg, ack) => {
      const room = msg && msg.room;
      if (typeof room !== "string" || !socket.rooms.has(room)) {
        if (typeof ack === "function") ack({ ok: false, error: "not_joined" });
        return;
      }
      io.to(room).emit("message", { room, body: msg.body });
      if (typeof ack === "function") ack({ ok: true });
    });
  });

  httpServer.listen(args.port, args.host, () => {
    console.log(`socket.io ${require("socket.io/package.json").version} listening on ${args.host}:${args.port}`);
  });

  const stop = () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
