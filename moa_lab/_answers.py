"""Reading a final answer out of a model's reply: a number, a choice letter, a short text. Used to score
questions with one right answer (:mod:`moa_lab.evaluate`) and by ``combine="vote"`` to count agreeing answers.

Replies of the kind the pack's Coder models write are read too: a ``\boxed{N}`` (LaTeX) is the answer it states,
and a number is looked for in the prose before the code; a reply whose only numbers are in a Python block is
answered by what that block prints, computed by :func:`python_result` (arithmetic only: it runs nothing).
"""

from __future__ import annotations

import ast
import math
import operator
import re

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def number(text: str) -> str | None:
    """A number written as text, normalised: thousands commas, a ``$`` and a final period dropped, trailing zeros
    too (``"1,000"``, ``"$1000.00"`` and ``"1000."`` are ``"1000"``; ``"5.50"`` is ``"5.5"``); None if not one.
    The one normalisation of both sides of a comparison: a model's answer and a benchmark's reference."""
    cleaned = text.strip().replace(",", "").replace("$", "").strip()
    cleaned = cleaned[:-1] if cleaned.endswith(".") else cleaned
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", cleaned, re.I):
        return None
    value = float(cleaned)
    if not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() else repr(value)


_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_CODE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LATEX = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}|\\[,;!: ]|\\\$|\$")


def boxed(reply: str) -> str | None:
    """What the last ``\\boxed{...}`` of a reply holds, its LaTeX text commands and ``$`` taken out; None if none."""
    found = _BOXED.findall(reply)
    return _LATEX.sub(lambda m: m.group(1) or "", found[-1]).strip() if found else None


def code_blocks(reply: str) -> tuple[str, list[tuple[str, str]]]:
    """The reply's prose (its fenced code blocks taken out) and its blocks, each as ``(language, code)``; a block
    that is not closed runs to the end of the reply (an answer cut by max_tokens)."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _CODE.finditer(reply)]
    return _CODE.sub("\n", reply), blocks


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CALLS = {"abs": abs, "round": round, "int": int, "float": float, "min": min, "max": max, "sum": sum}


def python_result(code: str) -> str | None:
    """The number a small Python block prints last (or its last expression's value, else its last assignment's),
    normalised, computed without running it: only numbers, names it assigned, + - * / // % ** (small powers),
    parentheses, lists, and abs/round/int/float/min/max/sum are understood. None for anything else (a loop, an
    import, a function, a string): such code is not evaluated."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    names: dict[str, object] = {}

    def value(node: ast.AST) -> object:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand  # type: ignore[operator]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:  # type: ignore[arg-type]
                raise ValueError("too large a power")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            if node.keywords:
                raise ValueError("keywords")
            return _CALLS[node.func.id](*(value(a) for a in node.args))  # type: ignore[operator]
        raise ValueError(f"not understood: {type(node).__name__}")

    last = None
    try:
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
                result = value(statement.value)
                for target in statement.targets:
                    names[target.id] = result  # type: ignore[attr-defined]
                last = result
            elif isinstance(statement, ast.AugAssign) and isinstance(statement.target, ast.Name):
                if type(statement.op) not in _OPS or statement.target.id not in names:
                    return None
                names[statement.target.id] = last = _OPS[type(statement.op)](
                    names[statement.target.id], value(statement.value)
                )
            elif isinstance(statement, ast.Expr):
                call = statement.value
                printed = isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"
                if printed and isinstance(call, ast.Call):
                    shown = [
                        value(a) for a in call.args if not isinstance(a, ast.Constant) or a.value.__class__ is not str
                    ]
                    last = shown[-1] if shown else last
                else:
                    last = value(call)
            else:
                return None
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, ArithmeticError):
        return None
    if isinstance(last, bool) or not isinstance(last, (int, float)) or not math.isfinite(last):
        return None
    return number(repr(last))


def extract_number(reply: str) -> str | None:
    """The answer of a numeric question, normalised; None when the reply holds no number. The first rule that
    finds one: the last ``\\boxed{...}`` holding a number; the **last** number of the prose (as GSM8K scorers do:
    "17 + 25 = 42" gives 42; code blocks are not prose); what the reply's last Python block prints
    (:func:`python_result`); the last number anywhere."""
    box = boxed(reply)
    if box is not None and _NUMBER.search(box):
        return number(_NUMBER.findall(box)[-1])
    prose, blocks = code_blocks(reply)
    found = _NUMBER.findall(prose)
    if found:
        return number(found[-1])
    for _, code in reversed(blocks):
        result = python_result(code)
        if result is not None:
            return result
    found = _NUMBER.findall(reply)
    return number(found[-1]) if found else None


_OPTION = re.compile(r"^\s*\(?([A-J])[).:]\s*(.+?)\s*$", re.M)


def choice_options(prompt: str) -> dict[str, str]:
    """A multiple-choice prompt's options by letter: its ``"B. Paris"``, ``"B) Paris"``, ``"(B) Paris"`` or
    ``"B: Paris"`` lines (the letters in order from A, as :func:`moa_lab.evaluate._formats.read_choice` writes
    them); {} when it has none."""
    options: dict[str, str] = {}
    for letter, text in _OPTION.findall(prompt):
        if len(options) < 10 and letter == "ABCDEFGHIJ"[len(options)]:  # a question's own "A." line is not one
            options[letter] = text
    return options


def extract_choice(reply: str, prompt: str = "") -> str | None:
    """The letter a multiple-choice reply picked. Only the question's own letters count (its options' letters,
    from ``prompt``; A-J when it lists none): "Answer: I think it is B." is B, never I. The first rule that
    matches: the reply is a letter alone (``"B"``, ``"(B)."``, ``"**B**"``); ``"answer is B"`` / ``"Answer: B"``;
    the reply starts with ``"B)"``, ``"B."`` or ``"B:"``; a ``"(B)"`` or ``"B)"`` anywhere; ``"is B."`` closing a
    sentence; else the text of exactly one of the prompt's options appears in the reply ("Paris" for
    ``"B. Paris"``). None when nothing matches (scored as wrong)."""
    options = choice_options(prompt)
    letters = "".join(options) or "ABCDEFGHIJ"
    one = f"[{letters}]"
    rules = (
        rf"^\W*({one})\W*$",
        rf"(?i:answer)\s*(?:is|:)?\s*\W{{0,3}}({one})\b",
        rf"^\W*({one})[).:]",
        rf"\(({one})\)",
        rf"\b({one})\)",
        rf"\b(?i:is|be)\s+\W{{0,2}}({one})\b\W{{0,2}}(?:[.!,;]|$)",
    )
    for rule in rules:
        match = re.search(rule, reply.strip())
        if match:
            return match.group(1)
    named = {letter for letter, text in options.items() if re.search(rf"(?<!\w){re.escape(text)}(?!\w)", reply, re.I)}
    return named.pop() if len(named) == 1 else None


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


_STATED = re.compile(r"(?i:\b(?:the|final|correct)\s+answer\s*(?:is|:|=)|\banswer\s*:)\s*(.+)")
_SHORT_WORDS = 8


def final_answer(reply: str) -> tuple[str, str] | None:
    """The final answer a reply states, as ``(as written, normalised)``; None when it states none. The first
    rule that matches: the last ``\\boxed{X}`` (its number, if it holds one); the last ``"the (final) answer is
    X"`` / ``"Answer: X"`` of the prose (X up to the end of its sentence; longer than 8 words, its first number);
    the prose's last number; what its last Python block prints (when the prose has no number); the whole reply,
    when it is one line of at most 8 words. Normalised: a number as :func:`number` writes it, a letter A-J alone
    (``"(B)."``) upper-case, else :func:`plain` (lower-case, no punctuation), so that ``"42."``, ``"42.0"`` and
    ``"The answer is 42"`` agree."""
    box = boxed(reply)
    if box:  # \boxed{...}: what the reply states as its answer
        letter = re.fullmatch(r"\W*([A-Ja-j])\W*", box)
        numeric = number(_NUMBER.findall(box)[-1]) if _NUMBER.search(box) else None
        normalised = numeric or (letter.group(1).upper() if letter else plain(box))
        if normalised:
            return box, normalised
    prose, blocks = code_blocks(reply)
    text = prose.strip()
    if not _NUMBER.search(text) and not _STATED.search(text):  # the numbers are in the code: what it prints
        computed = next((r for _, code in reversed(blocks) if (r := python_result(code)) is not None), None)
        if computed is not None:
            return computed, computed
        text = reply.strip()
    stated = _STATED.findall(text)
    written = re.split(r"(?<=[^\d])[.!?](?:\s|$)|\n", stated[-1].strip())[0].strip() if stated else ""
    if len(written.split()) > _SHORT_WORDS:  # a clause, not an answer: its first number, if any
        written = (_NUMBER.findall(written) or [""])[0]
    if not written and _NUMBER.search(text):
        written = _NUMBER.findall(text)[-1]
    elif not written and "\n" not in text and len(text.split()) <= _SHORT_WORDS:
        written = text
    written = written.strip().strip("*_`\"'").rstrip(".!?,;:").strip()
    if not written:
        return None
    letter = re.fullmatch(r"\W*([A-Ja-j])\W*", written)
    normalised = number(written) or (letter.group(1).upper() if letter else plain(written))
    return (written, normalised) if normalised else None
