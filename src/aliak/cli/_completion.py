"""``aliak completion bash|zsh``: a shell completion script, generated from the parser.

The script is made by walking the argparse parser the command runs with -- every
command and subcommand, every option, which options take a value, their choices, and
which values are files -- so it lists exactly what the installed ``aliak`` accepts.
No third-party library: the bash script uses ``complete``/``compgen``, the zsh one
``compadd``/``_describe``/``_files``.

Install (bash): ``aliak completion bash > ~/.local/share/bash-completion/completions/aliak``,
or ``source <(aliak completion bash)`` in ``~/.bashrc``. Install (zsh): ``aliak completion
zsh > "${fpath[1]}/_aliak"``, or ``source <(aliak completion zsh)`` after ``compinit``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
from collections.abc import Iterator

import attrs

from aliak import __version__
from aliak.cli._console import Console

__all__ = ["SHELLS", "add_completion_command", "completion_script"]

SHELLS = ("bash", "zsh")

# Words a script may offer: no whitespace, no quoting surprises.
_is_word = re.compile(r"[A-Za-z0-9_.:,/@+=%-]+").fullmatch
_PATH_WORDS = frozenset({"PATH", "FILE", "DIR"})


@attrs.define
class _Command:
    """One (sub)command as the script needs it. ``path`` is the words that name it
    (``""`` for ``aliak`` itself, ``"keys create"``); a positional's key is ``""``."""

    path: str
    commands: list[tuple[str, str]] = attrs.field(factory=list)
    options: list[tuple[str, str]] = attrs.field(factory=list)
    valued: list[str] = attrs.field(factory=list)
    choices: dict[str, list[str]] = attrs.field(factory=dict)
    files: list[str] = attrs.field(factory=list)


def _help(action: argparse.Action) -> str:
    """The help text as ``--help`` shows it (argparse's ``%(default)s``, ``%%``), one line."""
    text = action.help or ""
    params = {name: value for name, value in vars(action).items() if value is not argparse.SUPPRESS}
    if isinstance(params.get("choices"), list | tuple | dict):
        params["choices"] = ", ".join(map(str, params["choices"]))
    # Not a format argparse would expand: shown as written.
    with contextlib.suppress(KeyError, TypeError, ValueError):
        text = text % dict(params, prog="aliak")
    return " ".join(text.split())


def _is_path(action: argparse.Action) -> bool:
    """A file name, by the metavar's words (``PATH``, ``FILE``, ``PATH|DSN``), else by
    the destination's (``data_file``)."""
    name = action.metavar if isinstance(action.metavar, str) else action.dest
    return not _PATH_WORDS.isdisjoint(re.split(r"[^A-Z0-9]+", name.upper()))


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[_Command]:
    command = _Command(path)
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: _help(choice) for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                if _is_word(name):
                    command.commands.append((name, helps.get(name, "")))
                    children.append((name, subparser))
            continue
        if action.help == argparse.SUPPRESS:
            continue
        keys = [option for option in action.option_strings if _is_word(option)]
        for key in keys:
            command.options.append((key, _help(action)))
        if action.option_strings and action.nargs == 0:
            continue  # a flag: no value to complete
        keys = keys or [""]  # a positional
        if action.option_strings:
            command.valued += keys
        if action.choices is not None:
            words = [str(choice) for choice in action.choices if _is_word(str(choice))]
            for key in keys:
                command.choices[key] = words
        elif _is_path(action):
            command.files += keys
    yield command
    for name, subparser in children:
        yield from _walk(subparser, f"{path} {name}".strip())


def _quote(word: str) -> str:
    """A case pattern or word, quoted for sh (and zsh): matched literally."""
    return shlex.quote(word)


def _case(entries: dict[str, list[str]], emit: str) -> list[str]:
    """``case`` arms: the key (``path|option``) -> ``emit`` of its words."""
    lines = []
    for key, words in entries.items():
        if words:
            lines.append(f"        {_quote(key)}) {emit} {' '.join(map(_quote, words))} ;;")
    return lines


def _tables(commands: list[_Command], shell: str) -> str:
    """The functions both scripts share: what each path offers."""
    described = shell == "zsh"

    def item(name: str, text: str) -> str:
        # zsh's _describe reads "name:description"; a colon in the name is escaped.
        return f"{name.replace(':', chr(92) + ':')}:{text}" if described and text else name

    emit = "print -rl --" if described else "printf '%s\\n'"
    subcommands = {c.path: [item(n, t) for n, t in c.commands] for c in commands}
    options = {c.path: [item(n, t) for n, t in c.options] for c in commands}
    values = {f"{c.path}|{key}": words for c in commands for key, words in c.choices.items()}
    valued = [_quote(f"{c.path}|{key}") for c in commands for key in c.valued]
    files = [_quote(f"{c.path}|{key}") for c in commands for key in c.files]
    lines = [
        "# The commands under a command (its words: '' for aliak itself, 'keys', ...).",
        "_aliak_commands() {",
        '    case "$1" in',
        *_case(subcommands, emit),
        "    esac",
        "}",
        "# The options of a command.",
        "_aliak_options() {",
        '    case "$1" in',
        *_case(options, emit),
        "    esac",
        "}",
        "# The choices of a command's option ($2), or of its positional ($2 empty).",
        "_aliak_values() {",
        '    case "$1|$2" in',
        *_case(values, emit),
        "    esac",
        "}",
        "# Whether a command's option takes a value (the next word).",
        "_aliak_takes_value() {",
        '    case "$1|$2" in',
        *([f"        {'|'.join(valued)}) return 0 ;;"] if valued else []),
        "    esac",
        "    return 1",
        "}",
        "# Whether a command's option (or positional) is a file name.",
        "_aliak_is_file() {",
        '    case "$1|$2" in',
        *([f"        {'|'.join(files)}) return 0 ;;"] if files else []),
        "    esac",
        "    return 1",
        "}",
    ]
    return "\n".join(lines)


_BASH_MAIN = r"""
# Whether $2 is a command under the command $1.
_aliak_is_command() {
    local name
    for name in $(_aliak_commands "$1"); do
        [[ "$name" == "$2" ]] && return 0
    done
    return 1
}

_aliak() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" word i skip=0 values
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        if ((skip)); then
            skip=0
            continue
        fi
        case "$word" in
            --*=*) continue ;;
            -*)
                if _aliak_takes_value "$cmd" "$word"; then skip=1; fi
                continue
                ;;
        esac
        if _aliak_is_command "$cmd" "$word"; then cmd="${cmd:+$cmd }$word"; fi
    done
    local key=""
    if ((skip)); then
        key="${COMP_WORDS[COMP_CWORD - 1]}"  # the word is this option's value
    elif [[ "$cur" == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_aliak_options "$cmd")" -- "$cur")
        return 0
    else
        values="$(_aliak_commands "$cmd")"
        if [[ -n "$values" ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
            return 0
        fi
    fi
    values="$(_aliak_values "$cmd" "$key")"
    if [[ -n "$values" ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
    elif _aliak_is_file "$cmd" "$key"; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
}

complete -F _aliak aliak
"""

_ZSH_MAIN = r"""
# Whether $2 is a command under the command $1.
_aliak_is_command() {
    local name
    for name in "${(@f)$(_aliak_commands "$1")}"; do
        [[ "${name%%:*}" == "$2" ]] && return 0
    done
    return 1
}

_aliak() {
    local cmd="" word key="" i skip=0
    local -a entries
    for (( i = 2; i < CURRENT; i++ )); do
        word="${words[i]}"
        if (( skip )); then
            skip=0
            continue
        fi
        case "$word" in
            --*=*) continue ;;
            -*)
                if _aliak_takes_value "$cmd" "$word"; then skip=1; fi
                continue
                ;;
        esac
        if _aliak_is_command "$cmd" "$word"; then cmd="${cmd:+$cmd }$word"; fi
    done
    if (( skip )); then
        key="${words[CURRENT - 1]}"  # the word is this option's value
    elif [[ "${words[CURRENT]}" == -* ]]; then
        entries=("${(@f)$(_aliak_options "$cmd")}")
        _describe -t options option entries
        return
    else
        entries=("${(@f)$(_aliak_commands "$cmd")}")
        if [[ -n "${entries[1]}" ]]; then
            _describe -t commands command entries
            return
        fi
    fi
    entries=("${(@f)$(_aliak_values "$cmd" "$key")}")
    if [[ -n "${entries[1]}" ]]; then
        compadd -- "${entries[@]}"
    elif _aliak_is_file "$cmd" "$key"; then
        _files
    fi
}

if [[ "${funcstack[1]}" == _aliak ]]; then
    _aliak "$@"
else
    compdef _aliak aliak
fi
"""


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (``bash`` or ``zsh``) of ``parser``."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}; one of {', '.join(SHELLS)}")
    commands = list(_walk(parser, ""))
    head = [
        *(["#compdef aliak"] if shell == "zsh" else []),
        f"# {shell} completion for aliak {__version__}, generated from its parser by "
        f"`aliak completion {shell}`.",
    ]
    main = _ZSH_MAIN if shell == "zsh" else _BASH_MAIN
    return "\n".join([*head, "", _tables(commands, shell), main.rstrip("\n"), ""])


def add_completion_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parser: argparse.ArgumentParser,
) -> None:
    """``aliak completion SHELL``, generated from ``parser`` (the whole command, read when
    the completion command runs, so every command registered is in it)."""
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for bash or zsh, generated from this "
        "command's own parser. bash: `source <(aliak completion bash)`, or save it as "
        "~/.local/share/bash-completion/completions/aliak. zsh: save it as _aliak in a "
        'directory of $fpath (`aliak completion zsh > "${fpath[1]}/_aliak"`), or '
        "`source <(aliak completion zsh)` after compinit.",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")

    def run(args: argparse.Namespace, console: Console) -> int:
        console.out.write(completion_script(parser, args.shell))
        return 0

    completion.set_defaults(run=run)
