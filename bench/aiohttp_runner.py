#!/usr/bin/env python3
"""The Python peer for bench/http.sh: GET every URL of a file with aiohttp, at most C at once,
writing one JSON result line per URL (the same work corral does). Written for the benchmark.

Usage: aiohttp_runner.py URLS_FILE OUT_FILE CONCURRENCY
"""
import asyncio
import json
import sys
import time

import aiohttp


async def main(urls_path: str, out_path: str, concurrency: int) -> None:
    urls = [u.strip() for u in open(urls_path) if u.strip()]
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        with open(out_path, "w") as out:

            async def one(line: int, url: str) -> None:
                async with sem:
                    start = time.perf_counter()
                    try:
                        async with session.get(url) as resp:
                            body = await resp.read()
                            rec = {"line": line, "url": url, "status": resp.status, "ok": resp.status < 400,
                                   "body_bytes": len(body)}
                    except Exception as e:  # noqa: BLE001 - a benchmark peer records every failure
                        rec = {"line": line, "url": url, "ok": False, "error": str(e)}
                    rec["latency_ms"] = (time.perf_counter() - start) * 1000
                    out.write(json.dumps(rec) + "\n")

            await asyncio.gather(*(one(i + 1, u) for i, u in enumerate(urls)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
