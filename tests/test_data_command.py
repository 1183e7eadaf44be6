"""The prepare sub-command: summary on success, exit 2 with a one-line error on bad input."""

import argparse

from dvae_jax import cli
from dvae_jax.commands import prepare as command
from dvae_jax.data import fixtures


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dvae-jax")
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_prepare_folder_prints_summary(tmp_path, capsys):
    root = fixtures.make_folder(tmp_path / "f", n_speakers=3, n_utts=2, seconds=0.5)
    args = _parse(["prepare", "--corpus", "folder", "--root", str(root), "--cache-dir", str(tmp_path / "c"),
                   "--features", "mel", "--set", "data.transcripts=" + str(root / "transcripts.tsv"), "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "train" in out and "skipped: 0" in out and "frames" in out and "cache:" in out


def test_prepare_errors_are_one_line(tmp_path, capsys):
    # errors propagate from the command to cli.main, which prints them as one line
    assert cli.main(["prepare", "--corpus", "vctk", "--cache-dir", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
    assert cli.main(["prepare", "--set", "data.nope=1", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown config key 'data.nope'" in capsys.readouterr().err
