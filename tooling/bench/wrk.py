"""wrk, when on PATH: the closed-loop generator with the least CPU per request (C, epoll).

wrk cannot sign, so its Lua script replays the pre-signed corpus; it reports its own latency
histogram through ``done()`` as one ``WRKJSON {...}`` line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tooling.bench.report import Stats

SCRIPT = r"""
-- wrk script for callback-gateway bench: replays pre-signed callbacks from a corpus file.
-- args: corpus path, number of wrk threads, Host header. Thread k takes lines k, k+n, ...
-- Each callback is sent once; a thread that runs out starts over (bench reports it).
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local path, nthreads, host = args[1], tonumber(args[2]), args[3]
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local p, sig, nonce, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", p, {
        ["Host"] = host,
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Plivo-Signature-V3"] = sig,
        ["X-Plivo-Signature-V3-Nonce"] = nonce,
      }, body)
    end
    i = i + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run(corpus: Path, port: int, *, threads: int, connections: int, duration: float) -> Stats:
    script = corpus.with_suffix(".lua")
    script.write_text(SCRIPT, encoding="utf-8")
    host = f"127.0.0.1:{port}"
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://{host}/",
        "--",
        str(corpus),
        str(threads),
        host,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    elapsed = data["duration_us"] / 1e6
    failed = data["status_errors"] + data["socket_errors"] + data["timeouts"]
    return Stats(
        generator="wrk",
        requests=data["requests"],
        ok=data["requests"] - data["status_errors"],
        failed=failed,
        elapsed=elapsed,
        p50=data["p50_us"] / 1000,
        p95=data["p95_us"] / 1000,
        p99=data["p99_us"] / 1000,
        max=data["max_us"] / 1000,
    )
