"""`python3 -m caisse_ap`: the version, and a door to the server and client commands.

`python3 -m caisse_ap --version` prints it; `python3 -m caisse_ap server ...` and
`python3 -m caisse_ap client ...` run caisse-ap-ip-server and caisse-ap-ip-client.
"""

import argparse
import sys

from caisse_ap import __version__

COMMANDS = {
    "server": "start the simulated payment terminal (same as caisse-ap-ip-server)",
    "client": "send a payment request to a terminal (same as caisse-ap-ip-client)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m caisse_ap",
        description="Caisse-AP over IP simulated terminal and command-line point of sale.",
        epilog="\n".join(f"  {name}: {text}" for name, text in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caisse-ap-ip {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to run")
    parser.add_argument(
        "arguments", nargs=argparse.REMAINDER, help="options passed on to the command"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported only when asked for: the client must not pull in Twisted.
    if args.command == "server":
        from caisse_ap.terminal.cli import main as command_main
    else:
        from caisse_ap.client_cli import main as command_main
    return command_main(args.arguments)


if __name__ == "__main__":
    sys.exit(main())
