"""Serve bench/floor_app.py like the real server serves the webhook (see app/sidecar_injector/server.py).

    python bench/floor_server.py --port P --cert-file tls.crt --key-file tls.key [--host 127.0.0.1]

The basic uvicorn.run arguments of ``sidecar-injector serve`` (TLS, no log config, no access
log, no server header; uvloop and httptools), one process, without the server's own limits
(guarded protocol, handshake timeout, large reviews in a worker thread, memory trim): the benchmark's ratios
include what they cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor_app import app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.cert_file,
        ssl_keyfile=args.key_file,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
