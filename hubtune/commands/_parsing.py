"""Command-line parsing for the commands (see :mod:`hubtune.arguments`)."""

from hubtune.arguments import CONFIG_FILE_SUFFIXES, HelpFormatter, parse_command_line, read_config_file

__all__ = ["CONFIG_FILE_SUFFIXES", "HelpFormatter", "parse_command_line", "read_config_file"]
