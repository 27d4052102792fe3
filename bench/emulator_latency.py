"""Per-request latency of the emulator over HTTPS with keep-alive, next to two bare servers
answering a fixed 200 on the same machine, in the same run: a stdlib `http.server` (Nagle's
algorithm on, as it has it: the gap is what TCP_NODELAY buys) and the emulator's own werkzeug
listener with a one-line WSGI application (the gap is the emulator's own work).

    python bench/emulator_latency.py [requests]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from clients.azure import AzureClients
from console.emulator_blocks import emulator_azure_credentials
from emulator.server import Emulator
from emulator.serving import Listener


class _Fixed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def fixed_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])  # type: ignore[operator]
    return [b'{"ok": true}']


def timed(call: object, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    samples.sort()
    print(
        f"{name:<46} median {statistics.median(samples):6.3f} ms   "
        f"p95 {samples[int(len(samples) * 0.95)]:6.3f} ms   n={len(samples)}"
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with Emulator() as emulator:
        # the floor: a bare stdlib HTTPS server with the same certificate
        floor = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
        floor.socket = emulator.tls.server_context().wrap_socket(floor.socket, server_side=True)
        threading.Thread(target=floor.serve_forever, daemon=True).start()
        session = requests.Session()
        session.trust_env = False
        session.verify = str(emulator.ca_path)
        floor_url = f"https://127.0.0.1:{floor.server_address[1]}/"
        session.get(floor_url)
        report(
            "bare stdlib HTTPS server (Nagle on), requests",
            timed(lambda: session.get(floor_url), n),
        )

        bare = Listener(fixed_app, "bare", 0, emulator.ssl_context)
        threading.Thread(target=bare.serve_forever, daemon=True).start()
        bare_url = f"https://127.0.0.1:{bare.server_address[1]}/"
        session.get(bare_url)
        report(
            "bare werkzeug listener (as the emulator's)", timed(lambda: session.get(bare_url), n)
        )

        # client-side pacing off: at ARM's documented 25 reads/s after a 250-read burst
        # (clients/ratelimit.py) it would measure the pace, not the round trip
        clients = AzureClients(emulator_azure_credentials(emulator, arm_rate_limit=False))
        groups = clients.resources().resource_groups
        groups.create_or_update("bench", {"location": "westeurope"})
        token = clients.credential.get_token("https://management.azure.com/.default").token
        url = (
            f"{emulator.base_url}/subscriptions/{emulator.identity.subscription_id}"
            "/resourceGroups/bench?api-version=2025-04-01"
        )
        headers = {"Authorization": f"Bearer {token}"}
        report("emulator ARM GET, requests", timed(lambda: session.get(url, headers=headers), n))
        report("emulator ARM GET, ResourceManagementClient", timed(lambda: groups.get("bench"), n))
        floor.shutdown()
        bare.shutdown()


if __name__ == "__main__":
    main()
