"""N plain HTTP requests (GET /healthz) opened at once against a server on 127.0.0.1:4800:
the completion times' p50/p90/p99/max. Run beside `nstat -az TcpExtListenOverflows` to see
whether the server's accept queue overflowed. Loopback only."""
import asyncio, time, sys
N=int(sys.argv[1])
async def one(start):
    r,w = await asyncio.open_connection('127.0.0.1', 4800)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await w.drain()
    await r.read()
    t=time.monotonic()-start
    w.close()
    return t
async def main():
    start=time.monotonic()
    ts=sorted(await asyncio.gather(*[one(start) for _ in range(N)]))
    print(f"n={N} p50={ts[N//2]*1000:.0f}ms p90={ts[int(N*.9)]*1000:.0f} p99={ts[int(N*.99)]*1000:.0f} max={ts[-1]*1000:.0f}")
asyncio.run(main())
