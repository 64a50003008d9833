"""The emulated shell's lexer and parser: a small POSIX/mksh subset (words with quoting,
``$VAR`` and ``$(...)`` substitution, redirections, pipelines, ``&&``/``||`` lists)."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass


class ShellSyntaxError(Exception):
    pass


@dataclass(frozen=True)
class Seg:
    kind: str  # lit | var | cmd
    text: str
    quoted: bool


Word = tuple[Seg, ...]


@dataclass
class Redir:
    fd: int
    op: str  # > >> < >& <&
    target: Word


@dataclass
class Simple:
    words: list[Word]
    redirs: list[Redir]


@dataclass
class Pipeline:
    commands: list[Simple]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]  # ("&&"|"||", pipeline)


_OPERATORS = ("&&", "||", ";;", ";", "|", "&", "\n", "(", ")")
_WORD_END = set(" \t\n;&|<>()")
_REDIR_RE = re.compile(r"(\d*)(>>|>&|<&|>\||>|<)")
_PLAIN_WORD_RE = re.compile(r"[^ \t\n;&|<>()'\"\\$`]+")  # needs no quoting or expansion


_NOTHING_TO_QUOTE_RE = re.compile(r"[^'\"\\$`#]*")
# blanks before each token; findall() gives (fd, redirection, operator, word) per token
_PLAIN_TOKEN_RE = re.compile(r"[ \t]*(?:(\d*)(>>|>&|<&|>\||>|<)|(&&|\|\||;;|[;|&\n()])|([^ \t\n;&|<>()]+))")


def _lex(src: str) -> list:
    """Tokens: ('op', str) | ('redir', fd, op) | ('word', Word)."""
    return _lex_plain(src) if _NOTHING_TO_QUOTE_RE.fullmatch(src) else _lex_any(src)


def _lex_any(src: str) -> list:
    tokens: list = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t":
            i += 1
            continue
        if c == "\\" and src.startswith("\\\n", i):
            i += 2
            continue
        if c == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        m = _REDIR_RE.match(src, i)
        if m:
            tokens.append(_redir_token(m.group(1), m.group(2)))
            i = m.end()
            continue
        matched = next((op for op in _OPERATORS if src.startswith(op, i)), None)
        if matched:
            tokens.append(("op", ";" if matched == "\n" else matched))
            i += len(matched)
            continue
        word, i = _lex_word(src, i)
        tokens.append(("word", word))
    return tokens


def _lex_plain(src: str) -> list:
    """`_lex` for a line without quotes, expansions, escapes or comments (a read-back batch
    is thousands of such words): one regular expression does it all."""
    tokens: list = []
    for fd_text, redir_op, op, word in _PLAIN_TOKEN_RE.findall(src):
        if word:
            tokens.append(_plain_word(word))
        elif op:
            tokens.append(("op", ";" if op == "\n" else op))
        else:
            tokens.append(_redir_token(fd_text, redir_op))
    return tokens


@functools.lru_cache(maxsize=1024)
def _plain_word(text: str) -> tuple[str, Word]:
    """A plain word's token (immutable, so shared): a batch repeats the same few words."""
    return ("word", (Seg("lit", text, False),))


def _redir_token(fd_text: str, op: str) -> tuple[str, int, str]:
    op = ">" if op == ">|" else op
    return ("redir", int(fd_text) if fd_text else (0 if op in ("<", "<&") else 1), op)


def _find_close(src: str, i: int) -> int:
    """Index of the ')' closing a '$(' whose body starts at i."""
    depth = 1
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = src.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated quoted string")
            i = j + 1
            continue
        if c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("missing ')'")


def _lex_dollar(src: str, i: int, quoted: bool) -> tuple[Seg, int]:
    """src[i] == '$'."""
    n = len(src)
    if i + 1 >= n:
        return Seg("lit", "$", quoted), i + 1
    c = src[i + 1]
    if c == "(":
        end = _find_close(src, i + 2)
        return Seg("cmd", src[i + 2:end], quoted), end + 1
    if c == "{":
        end = src.find("}", i + 2)
        if end < 0:
            raise ShellSyntaxError("missing '}'")
        return Seg("var", src[i + 2:end], quoted), end + 1
    if c in "?$#!0123456789*@-":
        return Seg("var", c, quoted), i + 2
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", src[i + 1:])
    if m:
        return Seg("var", m.group(0), quoted), i + 1 + m.end()
    return Seg("lit", "$", quoted), i + 1


def _lex_substitution(src: str, i: int, quoted: bool) -> tuple[Seg, int]:
    """A `$...` expansion or a backquoted command starting at src[i]."""
    if src[i] == "$":
        return _lex_dollar(src, i, quoted)
    end = src.find("`", i + 1)
    if end < 0:
        raise ShellSyntaxError("unterminated quoted string")
    return Seg("cmd", src[i + 1:end], quoted), end + 1


def _lex_word(src: str, i: int) -> tuple[Word, int]:
    plain = _PLAIN_WORD_RE.match(src, i)
    if plain and (plain.end() == len(src) or src[plain.end()] in _WORD_END):
        return (Seg("lit", plain.group(0), False),), plain.end()  # the common case, fast
    segs: list[Seg] = []
    lit: list[str] = []

    def push_lit(quoted: bool) -> None:
        if lit:
            segs.append(Seg("lit", "".join(lit), quoted))
            lit.clear()

    n = len(src)
    while i < n and src[i] not in _WORD_END:
        c = src[i]
        if c == "\\":
            if i + 1 < n:
                if src[i + 1] != "\n":
                    push_lit(False)
                    segs.append(Seg("lit", src[i + 1], True))
                i += 2
            else:
                i += 1
            continue
        if c == "'":
            end = src.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            push_lit(False)
            segs.append(Seg("lit", src[i + 1:end], True))
            i = end + 1
            continue
        if c == '"':
            push_lit(False)
            i += 1
            opened = True
            if i >= n:
                raise ShellSyntaxError("unterminated quoted string")
            segs.append(Seg("lit", "", True))  # "" is an (empty) word
            while i < n:
                c = src[i]
                if c == '"':
                    opened = False
                    i += 1
                    break
                if c == "\\" and i + 1 < n and src[i + 1] in '"\\$`\n':
                    if src[i + 1] != "\n":
                        lit.append(src[i + 1])
                    i += 2
                    continue
                if c in "$`":
                    push_lit(True)
                    seg, i = _lex_substitution(src, i, True)
                    segs.append(seg)
                    continue
                lit.append(c)
                i += 1
            if opened:
                raise ShellSyntaxError("unterminated quoted string")
            push_lit(True)
            continue
        if c in "$`":
            push_lit(False)
            seg, i = _lex_substitution(src, i, False)
            segs.append(seg)
            continue
        lit.append(c)
        i += 1
    push_lit(False)
    return tuple(segs), i


def parse(src: str) -> list[AndOr]:
    """Parse a command line into and-or lists (sequenced by ';', '&' or newlines)."""
    tokens = _lex(src)
    lists: list[AndOr] = []
    pos = 0

    def parse_simple() -> Simple:
        nonlocal pos
        words: list[Word] = []
        redirs: list[Redir] = []
        while pos < len(tokens):
            tok = tokens[pos]
            if tok[0] == "word":
                words.append(tok[1])
                pos += 1
            elif tok[0] == "redir":
                if pos + 1 >= len(tokens) or tokens[pos + 1][0] != "word":
                    raise ShellSyntaxError("unexpected end of redirection")
                redirs.append(Redir(tok[1], tok[2], tokens[pos + 1][1]))
                pos += 2
            else:
                break
        if not words and not redirs:
            where = tokens[pos][1] if pos < len(tokens) else "newline"
            raise ShellSyntaxError(f"'{where}' unexpected")
        return Simple(words, redirs)

    def parse_pipeline() -> Pipeline:
        nonlocal pos
        negate = False
        if pos < len(tokens) and tokens[pos] == ("word", (Seg("lit", "!", False),)):
            negate = True
            pos += 1
        commands = [parse_simple()]
        while pos < len(tokens) and tokens[pos] == ("op", "|"):
            pos += 1
            commands.append(parse_simple())
        return Pipeline(commands, negate)

    while pos < len(tokens):
        if tokens[pos] == ("op", ";"):  # empty lines and stray separators
            pos += 1
            continue
        if tokens[pos][0] == "op":
            raise ShellSyntaxError(f"'{tokens[pos][1]}' unexpected")
        first = parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while pos < len(tokens) and tokens[pos] in (("op", "&&"), ("op", "||")):
            op = tokens[pos][1]
            pos += 1
            while pos < len(tokens) and tokens[pos] == ("op", ";"):  # newline after && is fine
                pos += 1
            rest.append((op, parse_pipeline()))
        lists.append(AndOr(first, rest))
        if pos < len(tokens):
            tok = tokens[pos]
            if tok in (("op", ";"), ("op", "&")):
                pos += 1  # '&' runs in the foreground here: we have no job control
            elif tok[0] == "op":
                raise ShellSyntaxError(f"'{tok[1]}' unexpected")
    return lists
