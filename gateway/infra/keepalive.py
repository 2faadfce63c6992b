"""How long our HTTP clients keep an idle connection for reuse: less than the servers we talk to.

A server closes a keep-alive connection it has not seen a request on for a while: uvicorn and
Node after 5 s, nginx after 75 s, cloud load balancers after 60 s or so. A client that reuses the
connection at the moment the server closes it sends its request into a socket being torn down and
gets a reset or an empty answer (httpx ``ReadError``, aiohttp ``ServerDisconnectedError``). For a
POST neither library retries, and neither may we blindly: for Plivo the outcome is then unknown
and the request is not resent; for a webhook the attempt fails and waits for its back-off.

httpx keeps an idle connection 5 s and aiohttp 15 s, so against a 5 s server the race is real:
POSTs re-sent on connections idle 4.99-5.005 s failed 0-4 of 200 with httpx and 10-79 of 200 with
aiohttp, none with 4 s (``tests/bench/idle_race.py``; docs/performance.md, "Idle connections").
Our clients drop a connection after IDLE_SECONDS instead, below the shortest idle timeout in
common use; a busy gateway never lets one idle that long, and a quiet one pays one new handshake.
"""

from __future__ import annotations

IDLE_SECONDS = 4.0
