"""`python3 -m caisse_ap`: the version, and a door to the server and client commands.

`python3 -m caisse_ap --version` prints it; `python3 -m caisse_ap server ...` and
`python3 -m caisse_ap client ...` run caisse-ap-ip-server and caisse-ap-ip-client.
"""

import argparse
import sys

from caisse_ap import __version__
from caisse_ap.i18n import N_, _, set_up_command

COMMANDS = {
    "server": N_("start the simulated payment terminal (same as caisse-ap-ip-server)"),
    "client": N_("send a payment request to a terminal (same as caisse-ap-ip-client)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m caisse_ap",
        description=_("Caisse-AP over IP simulated terminal and command-line point of sale."),
        epilog="\n".join(f"  {name}: {_(text)}" for name, text in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caisse-ap-ip {__version__}",
                        help=_("show the version and exit"))
    parser.add_argument("command", choices=sorted(COMMANDS), help=_("what to run"))
    parser.add_argument(
        "arguments", nargs=argparse.REMAINDER, help=_("options passed on to the command")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    set_up_command()
    args = build_parser().parse_args(argv)
    # Imported only when asked for: the client must not pull in Twisted.
    if args.command == "server":
        from caisse_ap.terminal.cli import main as command_main
    else:
        from caisse_ap.client_cli import main as command_main
    return command_main(args.arguments)


if __name__ == "__main__":
    sys.exit(main())
