"""The `dvae-jax` command: one entry point; each sub-command's options live in dvae_jax/commands/."""

from __future__ import annotations

import argparse
import sys

from dvae_jax import commands, errors


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line with exit status 2, like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dvae-jax", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--no-cache", action="store_true",
                        help="no persistent JAX compilation cache (also DVAE_JAX_NO_COMPILE_CACHE=1)")
    commands.register_all(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command itself (not a call from Python): a caching allocator first
        from dvae_jax import allocator

        allocator.reexec(sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.no_cache:  # before anything compiles
        from dvae_jax import compile_cache

        compile_cache.enable()
    try:
        return args.func(args)
    except errors.DvaeError as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message
        print(f"dvae-jax {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output piped into `head` or a closed pager: not an error
        sys.stdout = None  # nothing more is written, not even at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
