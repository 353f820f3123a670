"""`--completion bash`: a static bash completion script built from a tool's argparse parser.

CLI room. Static (no argcomplete dependency): option names are completed, and
options taking files complete file names.
"""

from __future__ import annotations

import argparse
import shlex

_FILE_METAVARS = {"FILE", "FILENAME", "MACHINELIST", "ENVFILE"}


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash script registering completion of `parser.prog`'s options."""
    options: list[str] = []
    file_options: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public listing
        options.extend(action.option_strings)
        if action.metavar in _FILE_METAVARS:
            file_options.extend(action.option_strings)
        if action.choices:
            for option in action.option_strings:
                choices[option] = [str(choice) for choice in action.choices]
    function = "_" + parser.prog.replace("-", "_")
    cases = "".join(
        f"        {shlex.quote(option)}) COMPREPLY=( $(compgen -W {shlex.quote(' '.join(values))} -- \"$cur\") ); return ;;\n"
        for option, values in choices.items()
    )
    file_case = ""
    if file_options:
        file_case = f"        {'|'.join(file_options)}) COMPREPLY=( $(compgen -f -- \"$cur\") ); return ;;\n"
    return (
        f"# bash completion for {parser.prog}; source it or copy it to /etc/bash_completion.d/{parser.prog}\n"
        f"{function}() {{\n"
        "    local cur prev\n"
        '    cur="${COMP_WORDS[COMP_CWORD]}"\n'
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        '    case "$prev" in\n'
        f"{cases}{file_case}"
        "    esac\n"
        f"    COMPREPLY=( $(compgen -W {shlex.quote(' '.join(sorted(set(options))))} -- \"$cur\") )\n"
        "}\n"
        f"complete -o default -F {function} {parser.prog}\n"
    )
