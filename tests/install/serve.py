#!/usr/bin/env python3
"""Static file server for tests/install/run.sh.

Binds 127.0.0.1 on an ephemeral port (port 0) and serves DIR. Once it
listens, it prints exactly one line on stdout and closes stdout:

    {"ready": true, "host": "127.0.0.1", "port": 40123, "pid": 4242}

so the caller waits for that line instead of sleeping. Each request is logged
as one line "METHOD PATH STATUS" to --log (default: stderr).
Stops on SIGTERM or SIGINT.
"""

import argparse
import functools
import http.server
import json
import os
import signal
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()

    log = open(args.log, "a", buffering=1) if args.log else sys.stderr

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *a):  # noqa: A002 - stdlib signature
            pass

        def log_request(self, code="-", size="-"):
            log.write(f"{self.command} {self.path} {code}\n")

    handler = functools.partial(Handler, directory=os.path.abspath(args.dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() waits for serve_forever, which runs in this thread:
        # leave through an exception instead.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.server_address[:2]
    sys.stdout.write(
        json.dumps({"ready": True, "host": host, "port": port, "pid": os.getpid()})
        + "\n"
    )
    sys.stdout.flush()
    sys.stdout.close()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
