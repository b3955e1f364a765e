"""``python -m airflow_runway.emulator``: serve the emulator until SIGINT or SIGTERM.

Prints exactly one line on stdout once the socket is listening: the emulator's base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from airflow_runway.emulator.app import EmulatorService
from airflow_runway.emulator.config import (
    CANCEL_STATUSES,
    CREATE_HTTP_STATUSES,
    FAILURE_STATUSES,
    OUTPUT_SHAPES,
    EmulatorConfig,
)


def _optional_int(value: str) -> int | None:
    return None if value.lower() in ("", "none", "null") else int(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m airflow_runway.emulator", description="Serve a local emulator of the Eachlabs prediction API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8089, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument("--api-key", default=defaults.api_key, help="the accepted API key (default: %(default)s)")
    parser.add_argument("--no-auth", action="store_true", help="accept requests with any key or none")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="emulated seconds per prediction")
    parser.add_argument("--speed", type=float, default=defaults.speed, help="emulated seconds per real second")
    parser.add_argument(
        "--max-in-flight", type=_optional_int, default=defaults.max_in_flight, help="in-flight cap, 'none' for no cap"
    )
    parser.add_argument("--output-size", type=_optional_int, default=None, help="pad the output MP4 to N bytes")
    parser.add_argument("--output-shape", choices=OUTPUT_SHAPES, default=defaults.output_shape)
    parser.add_argument("--failure-status", choices=FAILURE_STATUSES, default=defaults.failure_status)
    parser.add_argument("--cancel-status", choices=CANCEL_STATUSES, default=defaults.cancel_status)
    parser.add_argument("--payment-required", action="store_true", help="answer every create with 402")
    parser.add_argument("--require-version", action="store_true", help="answer a create without version with 422")
    parser.add_argument("--create-http-status", type=int, choices=CREATE_HTTP_STATUSES, default=200)
    parser.add_argument("--access-log", action="store_true", help="log every request on stderr")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    config = EmulatorConfig(
        api_key=None if args.no_auth else args.api_key,
        duration=args.duration,
        speed=args.speed,
        max_in_flight=args.max_in_flight,
        output_size=args.output_size,
        output_shape=args.output_shape,
        failure_status=args.failure_status,
        cancel_status=args.cancel_status,
        payment_required=args.payment_required,
        require_version=args.require_version,
        create_http_status=args.create_http_status,
    )
    service = EmulatorService(config, args.host, args.port, access_log=args.access_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            loop.add_signal_handler(signum, stop.set)
    url = await service.start()
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as error:
        print(f"eachlabs emulator: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
