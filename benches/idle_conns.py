#!/usr/bin/env python3
"""Open N keep-alive connections, make one HTTP/1.1 request on each, then hold them idle.

    idle_conns.py HOST PORT N READY_FILE [HOLD_SECONDS=60]

Each connection sends `GET / HTTP/1.1` and reads the whole response (Content-Length or
chunked), so it went through the proxy's HTTP path, and then stays open without traffic.
When all are done, "OK FAILED" is written to READY_FILE; the connections are held until the
process is killed or HOLD_SECONDS pass. Standard library only (asyncio); used by memory.sh.
"""
import asyncio
import resource
import sys

CONCURRENT = 100  # connections being set up at a time (keeps the proxy's upstream pool small)


async def one(host, port, sem, held):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(b"GET / HTTP/1.1\r\nHost: bench.example.com\r\n\r\n")
            head = (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").lower()
            if "transfer-encoding: chunked" in head:
                await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 10)
            else:
                length = next((int(l.split(":", 1)[1]) for l in head.split("\r\n") if l.startswith("content-length:")), 0)
                await asyncio.wait_for(r.readexactly(length), 10)
            if not head.startswith("http/1.1 2") or "connection: close" in head:
                w.close()
                return False
            held.append(w)
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False


async def main(host, port, n, ready, hold):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem, held = asyncio.Semaphore(CONCURRENT), []
    results = await asyncio.gather(*(one(host, port, sem, held) for _ in range(n)))
    ok = sum(results)
    with open(ready, "w") as f:
        f.write(f"{ok} {n - ok}\n")
    await asyncio.sleep(hold)


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    h, p, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    asyncio.run(main(h, p, n, ready, float(sys.argv[5]) if len(sys.argv) == 6 else 60))
