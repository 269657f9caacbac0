"""`p1-gateway tap`: a remote meter of the rig as a local TCP port or serial port.

    p1-gateway tap --host HOST [--port 1883] --username H --password-file FILE
                   [--tls-ca-file FILE] --rig R (--tcp V=ADDR:PORT | --pty V=PATH)...
                   [--valid-only] [--line-rate BAUD] [--client-id ID] [--topic-prefix p1]

Exit codes: 0 after SIGINT or SIGTERM; 1 a fatal error (a port that cannot be listened on, a
broker that says another client took the session over); 2 bad arguments; 3 refused by the
broker (credentials, subscriptions).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from gateway.errors import IdentifierError, TapError, TopicError
from gateway.identifiers import (
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)
from gateway.tap.service import (
    EXIT_FATAL,
    EXIT_USAGE,
    PtySpec,
    Tap,
    TapSettings,
    TcpSpec,
)

_CLIENT_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")


def _identifier(validate: Callable[[object], str], text: str) -> str:
    """`text` through an identifier check, as argparse wants it."""
    try:
        return validate(text)
    except (IdentifierError, TopicError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _holder(text: str) -> str:
    """--username: a slot holder's name."""
    return _identifier(validate_holder, text)


def _rig(text: str) -> str:
    """--rig: a rig id."""
    return _identifier(validate_rig_id, text)


def _prefix(text: str) -> str:
    """--topic-prefix."""
    return _identifier(validate_topic_prefix, text)


def _port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not 1 to 65535")
    return port


def _listen_port(text: str) -> int:
    """A port to listen on: 0 (any free one, reported at start) to 65535."""
    return 0 if text == "0" else _port(text)


def _variant_and(text: str, what: str) -> tuple[str, str]:
    """`V=REST` split, V checked as a variant id."""
    variant, sep, rest = text.partition("=")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"expected V={what}, got {text!r}")
    return _identifier(validate_variant_id, variant), rest


def _tcp_spec(text: str) -> TcpSpec:
    """--tcp V=ADDR:PORT (ADDR may be [v6])."""
    variant, rest = _variant_and(text, "ADDR:PORT")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected V=ADDR:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return TcpSpec(variant, host, _listen_port(port))


def _pty_spec(text: str) -> PtySpec:
    """--pty V=PATH."""
    variant, rest = _variant_and(text, "PATH")
    return PtySpec(variant, Path(rest))


def _baud(text: str) -> int:
    """--line-rate: a positive baud rate."""
    try:
        baud = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a baud rate: {text!r}") from None
    if not 50 <= baud <= 10_000_000:
        raise argparse.ArgumentTypeError(f"baud rate {baud} is not 50 to 10000000")
    return baud


def _client_id(text: str) -> str:
    """--client-id: 1 to 256 printable ASCII characters, no spaces."""
    if _CLIENT_ID_RE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError("a client id is 1 to 256 printable characters, no spaces")
    return text


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare tap's arguments."""
    add = parser.add_argument
    add("--host", required=True, help="the broker's host name or address")
    add("--port", type=_port, default=1883, help="the broker's port (default 1883)")
    add("--username", required=True, type=_holder, help="your broker user name (the slot holder)")
    add(
        "--password-file",
        required=True,
        type=Path,
        help="a file whose first line is your broker password",
    )
    add("--tls-ca-file", type=Path, help="use TLS, checking the broker against this CA file")
    add("--rig", required=True, type=_rig, help="the rig id")
    add(
        "--tcp",
        action="append",
        type=_tcp_spec,
        default=[],
        metavar="V=ADDR:PORT",
        help="serve variant V's bytes to every client of this TCP port (repeatable)",
    )
    add(
        "--pty",
        action="append",
        type=_pty_spec,
        default=[],
        metavar="V=PATH",
        help="serve variant V's bytes on a pseudo-terminal, symlinked at PATH (repeatable)",
    )
    add("--valid-only", action="store_true", help="leave out frames whose CRC failed")
    add(
        "--line-rate",
        type=_baud,
        metavar="BAUD",
        help="pace each telegram at BAUD/10 bytes per second, as the meter's line does",
    )
    add(
        "--client-id",
        type=_client_id,
        help="the MQTT client id of the tap's persistent session "
        "(default: p1-tap-USER-RIG-HOST-<hash of the variants>)",
    )
    add("--topic-prefix", type=_prefix, default="p1", help="the rig's topic prefix (default p1)")


def _usage(text: str) -> int:
    """Say what is wrong with the arguments; the exit code for it."""
    print(f"p1-gateway tap: error: {text}", file=sys.stderr)
    return EXIT_USAGE


def settings_from(args: argparse.Namespace) -> TapSettings | str:
    """The settings the arguments give, or what is wrong with them."""
    tcp: list[TcpSpec] = list(args.tcp)
    pty: list[PtySpec] = list(args.pty)
    if not tcp and not pty:
        return "name at least one --tcp V=ADDR:PORT or --pty V=PATH"
    listening = [(spec.host, spec.port) for spec in tcp if spec.port]
    for address in listening:
        if listening.count(address) > 1:
            return f"--tcp {address[0]}:{address[1]} is named twice"
    paths = [spec.path.absolute() for spec in pty]
    for spec in pty:
        if paths.count(spec.path.absolute()) > 1:
            return f"--pty {spec.path} is named twice"
        if not spec.path.absolute().parent.is_dir():
            return f"--pty {spec.path}: the folder {spec.path.absolute().parent} does not exist"
        if spec.path.exists() and not spec.path.is_symlink():
            return f"--pty {spec.path}: exists and is not a symlink (it would be replaced)"
    try:
        with Path(args.password_file).open(encoding="utf-8") as fh:
            password = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeError) as exc:
        return f"cannot read the password file {args.password_file}: {exc}"
    tls = args.tls_ca_file
    if tls is not None and not Path(tls).is_file():
        return f"--tls-ca-file {tls}: no such file"
    return TapSettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=password,
        rig=args.rig,
        tcp=tuple(tcp),
        pty=tuple(pty),
        tls_ca_file=None if tls is None else Path(tls),
        valid_only=bool(args.valid_only),
        line_rate=args.line_rate,
        client_id=args.client_id,
        prefix=args.topic_prefix,
    )


def main(args: argparse.Namespace) -> int:
    """Run the tap until SIGINT or SIGTERM; the exit code."""
    settings = settings_from(args)
    if isinstance(settings, str):
        return _usage(settings)
    tap = Tap(settings)
    try:
        tap.open()
    except TapError as exc:
        tap.close()
        tap.say(str(exc))
        return EXIT_FATAL

    def stop(_signum: int, _frame: FrameType | None) -> None:
        tap.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = tap.run()
    except TapError as exc:
        tap.say(str(exc))
        code = EXIT_FATAL
    finally:
        tap.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in tap.summary():
        tap.say(line)
    return code
