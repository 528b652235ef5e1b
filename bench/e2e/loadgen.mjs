// Load generator for bench/bench_e2e.py: WebSocket clients on Node.js with `ws`.
//
//   node loadgen.mjs echo  --url ws://127.0.0.1:PORT/echo --conns 50 --rounds 200
//   node loadgen.mjs bcast --url ws://127.0.0.1:PORT/bcast --trigger ws://.../trigger
//                          --clients 500 --repeats 30
//   node loadgen.mjs idle  --url ws://127.0.0.1:PORT/echo --conns 1000
//   node loadgen.mjs rate  --url ws://.../member,ws://.../member --trigger ws://...,ws://...
//                          --clients 1000 --limit 100
//
// bcast and rate take comma-separated lists for --url (members are spread over
// them in turn) and --trigger (broadcasts go through them in turn), so the
// clients of one run can be spread over several server processes.
//
// Prints one JSON object as its last line on stdout. Before it, "mark begin" and
// "mark end" bracket the measured window (so the runner can read the server's
// CPU time there); idle prints "ready N" instead and waits for a line on stdin. Every wait is bounded by --timeout seconds; on a timeout or a
// connection error the process exits with status 1 and the reason on stderr.
// It reports its own CPU time over the measured window, so the runner can show
// that the load generator was not the bottleneck.

import { performance } from "node:perf_hooks";
import process from "node:process";
import readline from "node:readline";
import WebSocket from "ws";

function parseArgs(argv) {
  const args = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const TIMEOUT_MS = Number(args.timeout ?? 120) * 1000;
const PAYLOAD = args.payload ?? "hello, world: a small text frame";

function fail(reason) {
  process.stderr.write(`loadgen: ${reason}\n`);
  process.exit(1);
}

const deadline = setTimeout(() => fail(`timed out after ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS);

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

// CPU time of this process (µs) and wall time (ms), to report its CPU use.
function cpuMark() {
  const c = process.cpuUsage();
  return { cpu: c.user + c.system, wall: performance.now() };
}

function cpuShare(from) {
  const to = cpuMark();
  return (to.cpu - from.cpu) / 1000 / (to.wall - from.wall);
}

// Open `count` connections, at most `batch` handshakes in flight at a time.
// `url` may be a comma-separated list: connection i goes to url i mod n.
async function openAll(url, count, batch = 50) {
  const urls = url.split(",");
  const sockets = [];
  for (let start = 0; start < count; start += batch) {
    const wave = [];
    for (let i = start; i < Math.min(count, start + batch); i++) {
      wave.push(
        new Promise((resolve, reject) => {
          const ws = new WebSocket(urls[i % urls.length], { perMessageDeflate: false });
          ws.once("open", () => resolve(ws));
          ws.once("error", (err) => reject(new Error(`connection ${i}: ${err.message}`)));
          ws.once("unexpected-response", (_req, res) =>
            reject(new Error(`connection ${i}: HTTP ${res.statusCode}`)),
          );
        }),
      );
    }
    sockets.push(...(await Promise.all(wave)));
  }
  for (const ws of sockets) {
    ws.on("error", (err) => fail(`socket error: ${err.message}`));
    ws.on("close", (code) => {
      if (!ws.closingOnPurpose) fail(`server closed a connection (code ${code})`);
    });
  }
  return sockets;
}

async function closeAll(sockets) {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise((resolve) => {
          ws.closingOnPurpose = true;
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once("close", resolve);
          ws.close(1000);
        }),
    ),
  );
}

// Each connection sends a frame, waits for its echo, and repeats `rounds` times;
// all connections run at once. Returns round trips per second and latencies.
async function echo() {
  const conns = Number(args.conns ?? 50);
  const rounds = Number(args.rounds ?? 200);
  const warmup = Number(args.warmup ?? 20);
  const sockets = await openAll(args.url, conns);

  const run = (count, latencies) =>
    Promise.all(
      sockets.map(
        (ws) =>
          new Promise((resolve) => {
            let done = 0;
            let sentAt = 0;
            const onMessage = (data, isBinary) => {
              if (isBinary || data.toString() !== PAYLOAD) fail("echo does not match what was sent");
              if (latencies) latencies.push(performance.now() - sentAt);
              if (++done === count) {
                ws.off("message", onMessage);
                resolve();
              } else {
                sentAt = performance.now();
                ws.send(PAYLOAD);
              }
            };
            ws.on("message", onMessage);
            sentAt = performance.now();
            ws.send(PAYLOAD);
          }),
      ),
    );

  if (warmup > 0) await run(warmup, null);
  const latencies = [];
  process.stdout.write("mark begin\n");
  const mark = cpuMark();
  await run(rounds, latencies);
  const seconds = (performance.now() - mark.wall) / 1000;
  const cpu = cpuShare(mark);
  process.stdout.write("mark end\n");
  await closeAll(sockets);
  latencies.sort((a, b) => a - b);
  return {
    roundtrips: conns * rounds,
    seconds,
    per_second: (conns * rounds) / seconds,
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    loadgen_cpu: cpu,
  };
}

// `clients` connections join the group; a separate trigger connection sends a
// numbered frame `repeats` times, one at a time. For each, the time from
// sending the trigger until each client has the message (client clocks only).
async function bcast() {
  const clients = Number(args.clients ?? 500);
  const repeats = Number(args.repeats ?? 30);
  const warmup = Number(args.warmup ?? 3);
  const pause = Number(args.pause ?? 20);
  const members = await openAll(args.url, clients);
  const triggers = await openAll(args.trigger, args.trigger.split(",").length);
  let sent = 0;

  let current = null; // { id, t0, remaining, latencies, resolve }
  for (const ws of members) {
    ws.on("message", (data) => {
      const now = performance.now();
      const text = data.toString();
      if (current === null || text !== current.id) fail(`unexpected broadcast ${text}`);
      current.latencies.push(now - current.t0);
      if (--current.remaining === 0) current.resolve(now);
    });
  }

  const broadcast = (id) =>
    new Promise((resolve) => {
      current = { id, t0: 0, remaining: clients, latencies: [], resolve };
      current.t0 = performance.now();
      triggers[sent++ % triggers.length].send(id);
    }).then((lastAt) => {
      const result = { all: lastAt - current.t0, latencies: current.latencies };
      current = null;
      return result;
    });
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  for (let i = 0; i < warmup; i++) {
    await broadcast(`warmup ${i}`);
    await sleep(pause);
  }
  const allTimes = [];
  const firstTimes = [];
  const medianTimes = [];
  let cpuBusy = 0;
  let cpuWall = 0;
  process.stdout.write("mark begin\n");
  for (let i = 0; i < repeats; i++) {
    const mark = cpuMark();
    const { all, latencies } = await broadcast(`broadcast ${i}`);
    cpuBusy += (cpuMark().cpu - mark.cpu) / 1000;
    cpuWall += performance.now() - mark.wall;
    latencies.sort((a, b) => a - b);
    allTimes.push(all);
    firstTimes.push(latencies[0]);
    medianTimes.push(percentile(latencies, 50));
    await sleep(pause);
  }
  process.stdout.write("mark end\n");
  await closeAll([...members, ...triggers]);
  allTimes.sort((a, b) => a - b);
  const med = (xs) => percentile([...xs].sort((a, b) => a - b), 50);
  return {
    clients,
    repeats,
    all_p50_ms: percentile(allTimes, 50),
    all_p99_ms: percentile(allTimes, 99),
    first_p50_ms: med(firstTimes),
    client_p50_ms: med(medianTimes),
    loadgen_cpu: cpuBusy / cpuWall,
  };
}

// Open `conns` connections, say "ready", keep them open until a line arrives
// on stdin (or stdin closes), then close them.
async function idle() {
  const conns = Number(args.conns ?? 1000);
  const sockets = await openAll(args.url, conns);
  process.stdout.write(`ready ${sockets.length}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => {
    lines.once("line", resolve);
    lines.once("close", resolve);
  });
  lines.close();
  await closeAll(sockets);
  return { conns };
}

// The sustained broadcast rate: `clients` members as in bcast; broadcasts are
// sent at a fixed rate R (open loop: on schedule, whether or not earlier ones
// have arrived) for a step of max(--step s, --min-broadcasts / R), and each is
// timed until every member has it. A step passes when its p99 (--percentile)
// is at most --limit ms and every broadcast reached every member within
// --drain s of the step's end. R starts at --rate-start and is multiplied by
// --factor while steps pass (divided while they fail, down to --rate-min), then --refine
// bisection steps (geometric) narrow it between the last pass and the first
// failure; a failed step is tried --retries more times (1) before its rate
// counts as failed. Each step's window is marked "mark begin sN"/"mark end sN".
async function rate() {
  const clients = Number(args.clients ?? 1000);
  const limit = Number(args.limit ?? 100);
  const judged = Number(args.percentile ?? 99);
  const stepSeconds = Number(args.step ?? 2);
  const minBroadcasts = Number(args["min-broadcasts"] ?? 20);
  const factor = Number(args.factor ?? 1.5);
  const rateMin = Number(args["rate-min"] ?? 1);
  const rateMax = Number(args["rate-max"] ?? 5000);
  const refine = Number(args.refine ?? 2);
  const drainMs = Number(args.drain ?? 2) * 1000;
  const quietMs = Number(args.quiet ?? 300);
  const warmup = Number(args.warmup ?? 3);
  const members = await openAll(args.url, clients);
  const triggers = await openAll(args.trigger, args.trigger.split(",").length);

  const pending = new Map(); // id -> { t0, remaining, done }
  let lastArrival = performance.now();
  let late = 0;
  for (const ws of members) {
    ws.on("message", (data) => {
      const now = performance.now();
      lastArrival = now;
      const entry = pending.get(data.toString());
      if (entry === undefined) {
        late++; // a broadcast given up on after its step
        return;
      }
      if (--entry.remaining === 0) {
        entry.done(now - entry.t0);
      }
    });
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  let sent = 0;
  const send = (id) =>
    new Promise((resolve) => {
      pending.set(id, { t0: performance.now(), remaining: clients, done: resolve });
      triggers[sent++ % triggers.length].send(id);
    }).then((ms) => {
      pending.delete(id);
      return ms;
    });
  // Wait until nothing has arrived for `quietMs` (a failed step's backlog drains).
  const settle = async (maxMs) => {
    const until = performance.now() + maxMs;
    while (performance.now() - lastArrival < quietMs && performance.now() < until) {
      await sleep(quietMs / 3);
    }
  };

  for (let i = 0; i < warmup; i++) await send(`warmup ${i}`);
  await settle(2000);

  const steps = [];
  const runStep = async (r) => {
    const index = steps.length;
    const count = Math.max(minBroadcasts, Math.round(r * stepSeconds));
    const interval = 1000 / r;
    const outcomes = [];
    process.stdout.write(`mark begin s${index}\n`);
    const mark = cpuMark();
    const start = performance.now();
    for (let i = 0; i < count; i++) {
      const due = start + i * interval;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      outcomes.push(send(`s${index}-${i}`));
    }
    const sentFor = performance.now() - start;
    const timedOut = Symbol("timed out");
    const drained = await Promise.race([
      Promise.all(outcomes),
      sleep(drainMs).then(() => timedOut),
    ]);
    const loadgenCpu = cpuShare(mark);
    const seconds = (performance.now() - start) / 1000;
    process.stdout.write(`mark end s${index}\n`);
    let times;
    if (drained === timedOut) {
      // Whatever has not arrived by now counts as infinitely late.
      times = [];
      for (const p of outcomes) {
        times.push(await Promise.race([p, Promise.resolve(Infinity)]));
      }
      for (const [id] of pending) pending.delete(id);
    } else {
      times = drained;
    }
    times.sort((a, b) => a - b);
    const incomplete = times.filter((t) => t === Infinity).length;
    const step = {
      rate: r,
      achieved: (count - 1) / (sentFor / 1000),
      broadcasts: count,
      seconds,
      incomplete,
      p50_ms: percentile(times, 50),
      p99_ms: percentile(times, 99),
      loadgen_cpu: loadgenCpu,
    };
    step.judged_ms = percentile(times, judged);
    step.pass = incomplete === 0 && step.judged_ms <= limit;
    steps.push(step);
    process.stderr.write(`rate ${r.toFixed(1)}/s: p50 ${step.p50_ms.toFixed(1)} ms, ` +
      `p99 ${step.p99_ms.toFixed(1)} ms, ${incomplete} incomplete -> ${step.pass ? "pass" : "fail"}\n`);
    await settle(drained === timedOut ? 15000 : 3000);
    return step.pass;
  };

  // A failed step is run once more before R counts as failed: on a shared
  // machine one stall of the server's CPU is enough to fail a step at any rate.
  const retries = Number(args.retries ?? 1);
  const tryRate = async (r) => {
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (await runStep(r)) return true;
    }
    return false;
  };
  let lo = 0; // highest rate that passed
  let hi = Infinity; // lowest rate that failed
  let r = Number(args["rate-start"] ?? 5);
  if (await tryRate(r)) {
    lo = r;
    while (r * factor <= rateMax) {
      r *= factor;
      if (await tryRate(r)) lo = r;
      else {
        hi = r;
        break;
      }
    }
  } else {
    hi = r;
    while (r / factor >= rateMin) {
      r /= factor;
      if (await tryRate(r)) {
        lo = r;
        break;
      }
      hi = r;
    }
  }
  for (let i = 0; i < refine && lo > 0 && hi !== Infinity; i++) {
    const mid = Math.sqrt(lo * hi);
    if (await tryRate(mid)) lo = mid;
    else hi = mid;
  }
  await closeAll([...members, ...triggers]);
  return { clients, limit_ms: limit, percentile: judged, sustained_rate: lo, first_failure: hi === Infinity ? null : hi,
           late, steps };
}

const modes = { echo, bcast, idle, rate };
if (!(args.mode in modes)) fail(`unknown mode ${args.mode}; use echo, bcast, idle or rate`);
modes[args.mode]()
  .then((result) => {
    clearTimeout(deadline);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  })
  .catch((err) => fail(err.stack ?? String(err)));
