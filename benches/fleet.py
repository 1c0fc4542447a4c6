#!/usr/bin/env python3
"""Fleet mode measurements for docs/FLEET.md (SPEC §11), against a real etcd and three real
replicas on 127.0.0.2-4. Not a timed test: it prints numbers.

    cargo build --release && python3 benches/fleet.py [--changes 1000] [--bin PATH]

1. commit -> applied on the other replicas: PUT weights through one replica (round robin),
   then poll the two others' GET /api/v1/services/api until they show the revision; p50/p99
   over --changes changes, from the committing replica's 200 (so the commit itself is not in
   it) to the revision being visible (so the poll interval, ~1 ms, is). Also the replicas'
   own switchyard_fleet_apply_seconds (commit in etcd -> applied).
2. a catastrophic canary: a rollout at 50%, then the canary starts failing everything while
   load runs on all three listeners; time from the first failure to 0% on every replica.
3. etcd writes per second per replica with 1 and 100 services whose rollout progresses
   (etcd's own proposals_committed and mvcc put counters, over 20 s, divided by 3).
4. does the request path touch etcd? etcd's gRPC request count over 10 s with no traffic
   and over 10 s with traffic through every listener: equal up to heartbeat jitter.
"""
import argparse, http.client, http.server, json, os, re, shutil, signal, socket, subprocess
import sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Backend(http.server.BaseHTTPRequestHandler):
    fail = {}  # port -> bool

    def do_GET(self):
        failing = Backend.fail.get(self.server.server_address[1], False)
        body = b"x"
        self.send_response(500 if failing and self.path != "/health" else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the client went away (load stopped)

    def log_message(self, *a):
        pass


def backend():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


class Conn:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=10)

    def req(self, method, path, body=None):
        headers = {"content-type": "application/json"} if body is not None else {}
        self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers=headers)
        r = self.c.getresponse()
        data = r.read()
        return r.status, data

    def json(self, path):
        return json.loads(self.req("GET", path)[1])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class Fleet:
    def __init__(self, bin_, services):
        self.dir = tempfile.mkdtemp()
        self.procs = []
        self.etcd_port, peer = free_port(), free_port()
        self.procs.append(subprocess.Popen(
            ["etcd", "--name=b", f"--data-dir={self.dir}/etcd",
             f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
             f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
             f"--listen-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-cluster=b=http://127.0.0.1:{peer}", "--log-level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wait(lambda: b"true" in Conn(f"127.0.0.1:{self.etcd_port}").req("GET", "/health")[1])
        self.listen, self.admin = [], []
        for i in range(3):
            ip = f"127.0.0.{i + 2}"
            listen, admin = f"{ip}:{free_port()}", f"{ip}:{free_port()}"
            path = f"{self.dir}/edge-{i + 1}.yaml"
            with open(path, "w") as f:
                f.write(f"cluster:\n  etcd: {{ endpoints: [\"127.0.0.1:{self.etcd_port}\"], "
                        f"prefix: /bench }}\n  replica: edge-{i + 1}\n  lease: 2s\n"
                        f"listeners: [{{ name: public, address: \"{listen}\" }}]\n"
                        f"admin: {{ address: \"{admin}\" }}\nservices:\n{services}")
            log = open(f"{self.dir}/edge-{i + 1}.log", "w")
            self.procs.append(subprocess.Popen(
                [bin_, "serve", "--config", path], stdout=log, stderr=log,
                env=dict(os.environ, RUST_LOG="warn")))
            self.listen.append(listen)
            self.admin.append(admin)
        for a in self.admin:
            self.wait(lambda: Conn(a).req("GET", "/ready")[0] == 200)
        self.wait(lambda: len(Conn(self.admin[0]).json("/api/v1/fleet")["replicas"]) == 3)

    @staticmethod
    def wait(probe, within=20):
        end = time.time() + within
        while True:
            try:
                if probe():
                    return
            except Exception:
                pass
            if time.time() > end:
                raise SystemExit("timed out")
            time.sleep(0.05)

    def etcd_metrics(self):
        text = Conn(f"127.0.0.1:{self.etcd_port}").req("GET", "/metrics")[1].decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def service(name, blue, green, rollout=""):
    return (f"  {name}:\n    match: {{ hosts: [\"{name}.test\"] }}\n    versions:\n"
            f"      blue: {{ release: v1, backends: [\"127.0.0.1:{blue}\"], weight: 100 }}\n"
            f"      green: {{ release: v2, backends: [\"127.0.0.1:{green}\"], weight: 0 }}\n"
            + rollout)


ROLLOUT = ("    rollout:\n      stable: blue\n      canary: green\n"
           "      steps: [{ traffic: 50%, duration: 10m }, { traffic: 100% }]\n"
           "      analysis: { interval: 1m, threshold: 5, min_requests: 1000000, "
           "metrics: [{ name: error-rate, threshold: 1 }] }\n")


def load(addrs, host, stop, counts):
    def run(addr):
        c = Conn(addr)
        n = 0
        while not stop.is_set():
            try:
                c.c.request("GET", "/", headers={"host": host})
                c.c.getresponse().read()
                n += 1
            except Exception:
                c = Conn(addr)
        counts.append(n)
    ts = [threading.Thread(target=run, args=(a,), daemon=True) for a in addrs for _ in range(2)]
    for t in ts:
        t.start()
    return ts


def apply_latency(bin_, changes, blue, green):
    f = Fleet(bin_, service("api", blue, green))
    try:
        conns = [Conn(a) for a in f.admin]
        lags = []
        for k in range(changes):
            via = k % 3
            g = 1 + k % 99
            t0 = time.perf_counter()
            status, body = conns[via].req("PUT", "/api/v1/services/api/weights",
                                          {"blue": 100 - g, "green": g})
            t1 = time.perf_counter()
            assert status == 200, body
            rev = json.loads(body)["revision"]
            for other in (i for i in range(3) if i != via):
                while conns[other].json("/api/v1/services/api")["revision"] < rev:
                    time.sleep(0.0005)
                lags.append(time.perf_counter() - t1)
        ms = [x * 1000 for x in lags]
        print(f"1. commit -> applied elsewhere, {changes} changes ({len(ms)} applications): "
              f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms")
        text = conns[0].req("GET", "/metrics")[1].decode()
        s = re.search(r"switchyard_fleet_apply_seconds_sum (\S+)", text)
        c = re.search(r"switchyard_fleet_apply_seconds_count (\S+)", text)
        if s and c:
            print(f"   edge-1's switchyard_fleet_apply_seconds: mean "
                  f"{float(s.group(1)) / float(c.group(1)) * 1000:.2f} ms over {c.group(1)}")
    finally:
        f.stop()


def catastrophic(bin_, blue, green):
    f = Fleet(bin_, service("api", blue, green, ROLLOUT.replace("min_requests: 1000000",
                                                                 "min_requests: 1000000, fast_fail: { error_rate: 50, min_requests: 20 }")))
    try:
        f.wait(lambda: all(
            next(v for v in Conn(a).json("/api/v1/services/api")["versions"]
                 if v["name"] == "green")["weight"] == 50 for a in f.admin))
        stop, counts = threading.Event(), []
        load(f.listen, "api.test", stop, counts)
        time.sleep(1)
        t0 = time.perf_counter()
        Backend.fail[green] = True
        conns = [Conn(a) for a in f.admin]
        pending = set(range(3))
        took = {}
        while pending:
            for i in list(pending):
                doc = conns[i].json("/api/v1/services/api")
                if next(v for v in doc["versions"] if v["name"] == "green")["weight"] == 0:
                    took[i] = time.perf_counter() - t0
                    pending.discard(i)
            time.sleep(0.002)
        stop.set()
        Backend.fail[green] = False
        hist = conns[0].json("/api/v1/services/api/history")["revisions"]
        rollbacks = sum(1 for r in hist if r["source"] == "analysis")
        print("2. catastrophic canary, first failure -> 0% on: " +
              ", ".join(f"edge-{i + 1} {took[i] * 1000:.0f} ms" for i in sorted(took)) +
              f" (rollback revisions: {rollbacks})")
    finally:
        f.stop()


def writes(bin_, n, blue, green):
    services = "".join(service(f"s{k}", blue, green, ROLLOUT) for k in range(n))
    f = Fleet(bin_, services)
    try:
        time.sleep(3)
        a = f.etcd_metrics()
        time.sleep(20)
        b = f.etcd_metrics()
        per = lambda k: (b.get(k, 0) - a.get(k, 0)) / 20 / 3
        print(f"3. {n} service(s) progressing: per replica {per('etcd_server_proposals_committed_total'):.2f} "
              f"etcd writes/s (raft proposals), {per('etcd_mvcc_put_total'):.2f} key puts/s, "
              f"{per('etcd_mvcc_txn_total'):.2f} txns/s")
        return f
    except BaseException:
        f.stop()
        raise


def request_path(f):
    a = f.etcd_metrics()
    time.sleep(10)
    b = f.etcd_metrics()
    idle = b["grpc_server_started_total"] - a["grpc_server_started_total"]
    stop, counts = threading.Event(), []
    load(f.listen, "s0.test", stop, counts)
    time.sleep(10)
    stop.set()
    time.sleep(0.5)
    c = f.etcd_metrics()
    busy = c["grpc_server_started_total"] - b["grpc_server_started_total"]
    print(f"4. etcd gRPC requests in 10 s: {idle:.0f} without traffic, {busy:.0f} while "
          f"{sum(counts)} requests went through the three listeners")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/switchyard"))
    ap.add_argument("--changes", type=int, default=1000)
    args = ap.parse_args()
    blue, green = backend(), backend()
    apply_latency(args.bin, args.changes, blue, green)
    catastrophic(args.bin, blue, green)
    writes(args.bin, 1, blue, green).stop()
    f = writes(args.bin, 100, blue, green)
    try:
        request_path(f)
    finally:
        f.stop()


if __name__ == "__main__":
    main()
