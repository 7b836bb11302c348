"""A cheap upper bound on a file's nesting depth, read from its text with regular expressions.

:func:`depth_bound` is never below the depth :mod:`dualtype_lint.limits` measures on CPython's
tree (``_weighted_depth(ast.parse(text))``) and costs a fraction of that parse: a file whose
bound is small can skip the parse, since it can neither crash libcst nor take quadratic time.

Why it is an upper bound. Walk down the tree from a statement to a leaf: each step shrinks the
node's source by at least one token, except for a few steps per bracket pair (a node spanning
the pair's separators, such as a call's keyword, a subscript's tuple or slice, a comprehension;
a node with the same source as its child, such as a ``withitem``; the ``Load`` leaf:
:data:`PER_BRACKET`). Strings become one character (an f-string one per token of its longest
replacement field, plus two), words one character, whitespace nothing. Inside a bracket pair,
siblings are separated by ``,``, a lone ``=`` (keyword, default) or ``:`` (dict, slice,
annotation, lambda); a path enters one of them, so the depth below a pair is at most the
largest, over those segments, of the segment's characters outside nested pairs (each nested
pair counting its two brackets) plus its deepest nested pair, plus :data:`PER_BRACKET`. At the
top level the segments are the parts of logical lines. A segment with ``and``/``or`` is split
at them: a step that leaves the operand's part crosses an operator, so it is a boolean chain
(``a and b and c`` weighs 2: libcst nests it) or a node with a token of its own among
``if``/``else``/``for``/``yield``/``*``/``:=``; the segment counts the deepest part plus one
per operator and per such token.

What nests without a token in the segment is counted from the whole text: a statement in a
block (two levels per indentation width, ``try`` → ``except`` → body; a block's width is that
of a line after a line ending in ``:``), an ``elif`` (an ``If`` in the previous one's
``orelse``) and a ``lambda`` (its body after a ``:``, its defaults after a ``,``; two per
``lambda`` of the logical line with the most).

Where the text is not read here as CPython's tokenizer reads it (a quote that opens no string,
a bracket that does not match, an f-string whose fields do not close, a NUL byte) the answer
is None: no bound, the caller parses.
"""

from __future__ import annotations

import re

PER_BRACKET = 4  # spanning node, spanning node, same-source step, Load leaf

# A comment, a string (from its quote: a prefix is left as a word), or a quote that opens no
# string. Every branch starts with a fixed character, which the scan skips to quickly.
_ATOMS = re.compile(
    r"""\#[^\n]*
    |(?P<string>'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''
               |\"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\"
               |'[^'\\\n]*(?:\\.[^'\\\n]*)*'
               |"[^"\\\n]*(?:\\.[^"\\\n]*)*")
    |'|\"""",
    re.S | re.X,
)
_F_PREFIX = re.compile(r"(?<!\w)(?:[rR]?[fF]|[fF][rR])\Z")  # just before the quote
_F_TEXT = re.compile(r"\{\{|\}\}|[{}]")  # outside fields: doubled braces are text
_F_FIELD = re.compile(r"""[{}'"]""")
# the first line of a block follows a line that ends with ":" (blank lines between)
_BLOCK_INDENT = re.compile(r":[ \t\f]*\n(?:[ \t\f]*\n)*([ \t\f]*)")
_WORD = re.compile(r"\b(?!(?:lambda|for|else|yield|if|and|or)\b)\w+")  # the rest: one "x"
_ANY_WORD = re.compile(r"\w+")
_BLANKS = str.maketrans("", "", " \t\f")
_LAMBDA, _BOOL = "\x01", "\x02"
# after _WORD only "x", those keywords and punctuation are left; "for" before "or"
_SPELLED = (("lambda", _LAMBDA), ("for", "*"), ("else", "*"), ("yield", "*"), ("if", "*"),
            (":=", "*"), ("and", _BOOL), ("or", _BOOL))
# brackets, ends of lines, boolean operators, and the separators of siblings: ",", ";", a
# lone "=" or ":" (not "==", "<=", "+=", ...: a comparison's operands are one node's)
_EVENTS = re.compile(r"([()\[\]{},;\n\x02]|(?<![=!<>:+\-*/%&|^@])=(?!=)|:)")
_OPEN, _CLOSE = "([{", ")]}"


class _Unread(Exception):
    """The text is not read here as the tokenizer reads it."""


def _widest_field(body: str) -> int | None:
    """The tokens of an f-string body's longest replacement field (as characters), or None
    if the fields do not close before the end of the body (on Python 3.12+ a field may hold
    the f-string's own quote, which ends the regular expression's match inside the field)."""
    depth, i, at, widest = 0, 0, 0, 0
    while (m := (_F_TEXT if depth == 0 else _F_FIELD).search(body, i)) is not None:
        t, i = m.group(), m.end()
        if t == "{":
            depth += 1
            if depth == 1:
                at = i
        elif t == "}":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                widest = max(widest, len(_ANY_WORD.sub("x", body[at:i]).translate(_BLANKS)))
        elif depth:  # a string inside a field: skip it
            j = body.find(t, i)
            if j < 0:
                return None
            i = j + 1
    return widest if depth == 0 else None


def _atom(m: re.Match[str]) -> str:
    """A comment: nothing. A string: one character (``$``), or for an f-string one per token of
    its longest replacement field, plus two (``JoinedStr`` → ``FormattedValue``). A quote that
    opens no string: unread."""
    s = m.group("string")
    if s is None:
        if m.group()[0] != "#":
            raise _Unread
        return ""
    i = m.start()
    if _F_PREFIX.search(m.string, max(0, i - 3), i) is None:
        return "$"  # no word character: it must not join the word before it
    q = 3 if s[:3] in ('"""', "'''") else 1
    body = s[q:-q]
    if "{" not in body and "}" not in body:
        return "$"
    widest = _widest_field(body)
    if widest is None:
        raise _Unread
    return "$" * (widest + 2)


def depth_bound(text: str, limit: int | None = None) -> int | None:
    """An upper bound on the weighted depth of ``ast.parse(text)``, or None (also when the
    bound would exceed ``limit``: then the work stops early)."""
    elifs = text.count("elif")
    cap = 1 << 62 if limit is None else limit
    if "\0" in text or 5 + elifs + PER_BRACKET > cap:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        code = _ATOMS.sub(_atom, text)
    except _Unread:
        return None
    blocks = len(set(_BLOCK_INDENT.findall(code)))  # at least the indentation stack's depth
    outer = 1 + 2 * (blocks + 1) + elifs + PER_BRACKET
    if outer > cap:
        return None
    flat = _WORD.sub("x", code).translate(_BLANKS).replace("\\\n", "")
    for word, char in _SPELLED:
        flat = flat.replace(word, char)
    inner = _deepest_line(flat, cap - outer)
    if inner is None or outer + inner > cap:
        return None
    return outer + inner


def _deepest_line(flat: str, cap: int) -> int | None:
    """Over the logical lines of ``flat``, the largest depth bound of an expression, plus two
    for each ``lambda`` of the line with the most; None if a line's is over ``cap``."""
    pieces = _EVENTS.split(flat)
    stack: list[tuple[str, int, int, int, int, int, int]] = []
    # own: characters of the current part outside nested pairs (their brackets included);
    # child: its deepest nested pair; parts: the deepest part of the segment so far;
    # bools: its boolean operators; pair: the deepest segment of the pair so far
    own = child = parts = bools = pair = best = lambdas = 0
    seg_start = pos = line_start = 0
    count_lambdas = _LAMBDA in flat
    for n, c in zip(map(len, pieces[0::2]), pieces[1::2]):
        own += n
        at = pos + n
        pos = at + 1
        if c == "\n" and stack:
            continue
        if c in _OPEN:
            stack.append((c, own, child, parts, bools, seg_start, pair))
            own = child = parts = bools = pair = 0
            seg_start = pos
            continue
        part = own + child
        if c == _BOOL:
            if part > parts:
                parts = part
            bools += 1
            own = child = 0
            continue
        seg = part if part > parts else parts  # the segment ends here
        if bools:
            seg += bools + flat.count("*", seg_start, at)
        if c in _CLOSE:
            if seg + PER_BRACKET > pair:
                pair = seg + PER_BRACKET
            if not stack:
                return None
            o, own, child, parts, bools, seg_start, outer = stack.pop()
            if _OPEN.index(o) != _CLOSE.index(c):
                return None
            own += 2
            if pair > child:
                child = pair
            pair = outer
            continue
        if stack:  # a separator (a ";" inside brackets is not Python)
            if c == ";":
                return None
            if seg + PER_BRACKET > pair:
                pair = seg + PER_BRACKET
        else:
            if seg > best:
                if seg > cap:
                    return None
                best = seg
            if c == "\n" and count_lambdas:
                lambdas = max(lambdas, flat.count(_LAMBDA, line_start, at))
                line_start = pos
        own = child = parts = bools = 0
        seg_start = pos
    if stack:
        return None
    part = own + len(pieces[-1]) + child
    seg = max(parts, part) + (bools + flat.count("*", seg_start) if bools else 0)
    if count_lambdas:
        lambdas = max(lambdas, flat.count(_LAMBDA, line_start))
    return max(best, seg) + 2 * lambdas
