"""Every word the console and the player show comes from the catalogue (i18n.js).

The rule checked, on the pages' JavaScript: no string literal with a word in it (two Latin
letters or more) is put where a person reads it -- assigned to ``textContent``,
``innerText``, ``innerHTML``, ``title``, ``placeholder``; given to ``say``/``fail``/
``toast``/``showSendError``/``status`` (messages), to ``act`` as its success message, to
``createTextNode``/``append``/``prepend``, as the text of ``node(tag, class, text)``,
``button(text, ...)`` or ``make(tag, props, ...children)``; as a ``placeholder`` or
``title`` property of an object of properties; as an ``Error``'s message in the console
(shown by its catcher); or to ``setAttribute`` for ``title``/``aria-label``/
``placeholder`` -- unless it is a catalogue key (``con.x``). The words are
``t("key", {...})`` calls; the catalogue has each key in English and Chinese (the browser
tests walk it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "danmaku" / "web" / "static"
FILES = sorted(
    [*STATIC.glob("console*.js"), STATIC / "player.js", *(STATIC / "player").glob("*.js")]
)
KEY_RE = re.compile(r"[a-z]+(\.[A-Za-z0-9_]+)+")
WORD_RE = re.compile(r"[A-Za-z]{2,}")
NOT_WORDS = {"px", "ms", "HTTP", "danmaku"}  # units, a protocol, the product's name
# call name -> the arguments that are text: [first, last) (the others: tags, classes, kinds)
CALLS = {
    "say": (0, 1), "fail": (0, 1), "toast": (0, 1), "showSendError": (0, 1), "status": (0, 1),
    "createTextNode": (0, 1), "append": (0, None), "prepend": (0, None), "button": (0, 1),
    "node": (2, 3), "make": (2, None), "act": (3, 4),
}  # fmt: skip
ASSIGNED = ("textContent", "innerText", "innerHTML", "title", "placeholder")
VISIBLE_ATTRS = ("title", "aria-label", "placeholder")


def _strip_comments(src: str) -> str:
    """The source with comments blanked out (string literals kept as they are)."""
    out: list[str] = []
    i = 0
    while i < len(src):
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = len(src) if j < 0 else j
            continue
        if src.startswith("/*", i):
            j = src.index("*/", i) + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
            continue
        if c in "\"'`":
            j = _end_of_literal(src, i)
            out.append(src[i:j])
            i = j
            continue
        if c == "/" and re.search(r"[(,=:!&|?;{}\[]\s*$", "".join(out[-3:])):
            j = i + 1  # a regex literal: skip it whole (it may hold quotes)
            while src[j] != "/" or src[j - 1] == "\\":
                if src[j] == "[":
                    j = src.index("]", j)
                j += 1
            out.append(src[i : j + 1])
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _end_of_literal(src: str, i: int) -> int:
    quote = src[i]
    j = i + 1
    depth = 0
    while True:
        if src[j] == "\\":
            j += 2
            continue
        if quote == "`" and src.startswith("${", j):
            depth += 1
            j += 2
            continue
        if quote == "`" and depth and src[j] == "}":
            depth -= 1
        elif src[j] == quote and not depth:
            return j + 1
        j += 1


def _args(src: str, open_at: int) -> list[tuple[int, int]]:
    """(start, end) of each top-level argument of the call whose "(" is at open_at."""
    spans = []
    depth = 0
    start = open_at + 1
    i = open_at + 1
    while i < len(src):
        c = src[i]
        if c in "\"'`":
            i = _end_of_literal(src, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                spans.append((start, i))
                return spans
            depth -= 1
        elif c == "," and depth == 0:
            spans.append((start, i))
            start = i + 1
        i += 1
    return spans


def _worded_literals(expr: str) -> list[str]:
    """The literals of ``expr`` itself (not those inside a call, such as ``t("key")``, an
    array or an object) with words that are not catalogue keys."""
    found = []
    depth = 0
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            j = _end_of_literal(expr, i)
            lit = expr[i:j]
            body = re.sub(r"\$\{[^}]*\}", " ", lit[1:-1])
            words = set(WORD_RE.findall(body)) - NOT_WORDS
            compared = re.search(r"[=!]==?\s*$", expr[:i]) or re.match(r"\s*[=!]==?", expr[j:])
            if depth == 0 and words and not compared and not KEY_RE.fullmatch(body.strip()):
                found.append(lit)
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return found


def visible_literals(src: str, errors: bool = True) -> list[str]:
    """The string literals with words that ``src`` puts where a person reads them.
    ``errors``: an ``Error``'s message counts (the console shows them; the player's are
    caught and replaced with its own words)."""
    code = _strip_comments(src)
    hits: list[str] = []
    calls = {**CALLS, "Error": (0, 1)} if errors else CALLS
    for m in re.finditer(r"\b(" + "|".join(calls) + r")\(", code):
        first, last = calls[m.group(1)]
        spans = _args(code, m.end() - 1)
        if (
            m.group(1) == "append"
            and len(spans) == 2
            and re.fullmatch(r"\s*\"\w+\"\s*", code[spans[0][0] : spans[0][1]])
        ):
            continue  # URLSearchParams.append(name, value): a query, not text
        for a, b in spans[first:last]:
            hits += _worded_literals(code[a:b])
    for m in re.finditer(r"\.(" + "|".join(ASSIGNED) + r")\s*=(?!=)", code):
        end = code.find(";", m.end())
        hits += _worded_literals(code[m.end() : end])
    # the same in an object of properties: make("input", {placeholder: "..."})
    for m in re.finditer(r"[{,]\s*(placeholder|title|textContent|ariaLabel)\s*:", code):
        end = min(x for x in (code.find(",", m.end()), code.find("}", m.end())) if x > 0)
        hits += _worded_literals(code[m.end() : end])
    attrs = "|".join(VISIBLE_ATTRS)
    for m in re.finditer(r"setAttribute\(\s*\"(" + attrs + r")\"\s*,", code):
        spans = _args(code, code.index("(", m.start()))
        for a, b in spans[1:]:
            hits += _worded_literals(code[a:b])
    return hits


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_english_literal_is_shown_outside_the_catalogue(path: Path) -> None:
    left = visible_literals(path.read_text(encoding="utf-8"), path.name.startswith("console"))
    assert not left, f"{path.name} shows words that are not in the catalogue: {left}"


def test_the_rule_finds_what_it_should() -> None:
    """The rule itself, on the cases it is for (so a broken rule cannot pass everything)."""
    shown = [
        'el.msg.textContent = "Not found.";',
        'el.x.textContent = ok ? t("con.a") : "fallback words";',
        'say(`Deleted ${n} comments`, "ok");',
        'li.append(node("span", "tag perm", "permanent"));',
        'li.append(button("Approve", "small", go));',
        'await act("DELETE", "/pin", undefined, "Unpinned.");',
        'b.setAttribute("aria-label", `unblock ${w}`);',
        'input.placeholder = "default";',
        'make("input", { id: "x", placeholder: "title of the broadcast" });',
        'reject(new Error("The gateway did not answer."));',
    ]
    for line in shown:
        assert visible_literals(line), line
    hidden = [
        'el.msg.textContent = t("con.err_404");',
        'li.append(node("span", "tag perm", t("con.ban_permanent")));',
        'el.msg.className = "msg bad";',
        'await act("DELETE", "/pin", undefined, t("con.unpinned_msg"));',
        "x.textContent = `${a} · ${b}`;",
        'node("span", "muted small-text", n);',
        '// say("a comment")',
        'b.setAttribute("aria-pressed", "true");',
        'q.append("uid", u);',
        'act("POST", "/x", body, how === "approve" ? t("con.a") : t("con.b"));',
    ]
    for line in hidden:
        assert not visible_literals(line), line
