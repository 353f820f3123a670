"""The structure of a POSIX shell command line, to compare a filled template with its template.

A small tokeniser written from the POSIX "Token Recognition" rules: it splits
a line into operators (`;`, `&&`, `|`, `>`, `(`, newline...) and words, removes
the quotes of each word as the shell does, and notes the expansions a word
undergoes (`$name`, `$(...)`, backquotes, unquoted globs, a leading `~`). A
substituted value changes nothing of the command's structure when the shape
(operators, number of words, the expansions of each) is the one of the
template filled with a plain word, and the words are the template's with the
values put in. (bashlex was tried first: it finds expansions inside single
quotes when a word mixes quoted and unquoted parts, which bash never does.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

_OPERATORS = sorted(["&&", "||", ";;", ";", "&", "|", "|&", "(", ")", "<", ">", ">>", "<<", "<&", ">&", "<>", ">|",
                     "\n"], key=len, reverse=True)
_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_SPECIAL_PARAMETERS = set("@*#?-$!0123456789{(")


@dataclass
class Token:
    kind: str  # "word" or "operator"
    text: str = ""  # the word after quote removal, or the operator
    expansions: list[str] = field(default_factory=list)


class ShellSyntaxError(ValueError):
    """An unterminated quote or substitution."""


def tokens(line: str) -> list[Token]:
    """The operators and words of `line`, quotes removed, expansions noted."""
    result: list[Token] = []
    word: Token | None = None
    i, n = 0, len(line)

    def current() -> Token:
        nonlocal word
        if word is None:
            word = Token("word")
        return word

    def end_word() -> None:
        nonlocal word
        if word is not None:
            result.append(word)
            word = None

    while i < n:
        char = line[i]
        if char == "\\":
            if i + 1 < n and line[i + 1] == "\n":
                i += 2  # line continuation
                continue
            current().text += line[i + 1: i + 2]
            i += 2
            continue
        if char == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise ShellSyntaxError("unterminated single quote")
            current().text += line[i + 1: close]
            i = close + 1
            continue
        if char == '"':
            token = current()
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError("unterminated double quote")
                if line[i] == '"':
                    i += 1
                    break
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '$`"\\\n':
                    token.text += line[i + 1]
                    i += 2
                    continue
                if line[i] in "$`":
                    i = _expansion(line, i, token)
                    continue
                token.text += line[i]
                i += 1
            continue
        if char in "$`":
            i = _expansion(line, i, current())
            continue
        operator = next((op for op in _OPERATORS if line.startswith(op, i)), None)
        if operator is not None:
            end_word()
            result.append(Token("operator", operator))
            i += len(operator)
            continue
        if char in " \t":
            end_word()
            i += 1
            continue
        if char == "#" and word is None:
            close = line.find("\n", i)
            i = n if close < 0 else close
            continue
        token = current()
        if char in "*?[":
            token.expansions.append("glob")
        if char == "~" and not token.text:
            token.expansions.append("tilde")
        token.text += char
        i += 1
    end_word()
    return result


def _expansion(line: str, i: int, token: Token) -> int:
    """Note the expansion starting at `line[i]` (`$` or a backquote) in `token`; the index after it."""
    if line[i] == "`":
        close = line.find("`", i + 1)
        if close < 0:
            raise ShellSyntaxError("unterminated backquote")
        token.expansions.append("command")
        return close + 1
    following = line[i + 1: i + 2]
    if following == "(" or following == "{":
        closing = ")" if following == "(" else "}"
        depth, j = 0, i + 1
        while j < len(line):
            if line[j] == "'":  # quoted text inside the substitution holds no bracket
                close = line.find("'", j + 1)
                if close < 0:
                    raise ShellSyntaxError("unterminated single quote")
                j = close + 1
                continue
            if line[j] == "\\":
                j += 2
                continue
            if line[j] == '"':  # a double-quoted part: its quotes and brackets are literal
                j += 1
                while j < len(line) and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= len(line):
                    raise ShellSyntaxError("unterminated double quote")
                j += 1
                continue
            if line[j] == following:
                depth += 1
            elif line[j] == closing:
                depth -= 1
                if depth == 0:
                    break
            j += 1
        else:
            raise ShellSyntaxError(f"unterminated ${following}")
        token.expansions.append("command" if following == "(" else "parameter")
        return j + 1
    if following and (following in _NAME_START or following in _SPECIAL_PARAMETERS):
        token.expansions.append("parameter")
        j = i + 1
        if following in _NAME_START:
            while j < len(line) and (line[j] in _NAME_START or line[j].isdigit()):
                j += 1
            return j
        return j + 1
    token.text += "$"  # a lone `$` is a literal
    return i + 1


def shape(line: str) -> list[tuple[str, ...]]:
    """Operators as themselves, each word as the expansions it undergoes (never its text)."""
    return [(t.kind, t.text) if t.kind == "operator" else (t.kind, *t.expansions) for t in tokens(line)]


def words(line: str) -> list[str]:
    """The words of `line` after quote removal (operators left out)."""
    return [t.text for t in tokens(line) if t.kind == "word"]
