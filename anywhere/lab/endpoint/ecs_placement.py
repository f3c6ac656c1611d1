"""The ECS cluster query language, as used by placement constraints and instance filters.

Grammar (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/cluster-query-language.html):
``subject operator [argument]`` joined with ``and``/``&&``, ``or``/``||``, ``not``/``!`` and
parentheses; ``not`` binds tighter than ``and``, which binds tighter than ``or``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SUBJECTS = frozenset(
    {
        "agentConnected",
        "agentVersion",
        "ec2InstanceId",
        "ec2InstanceType",
        "registeredAt",
        "runningTasksCount",
    }
)
_OPERATORS = {
    "==": "==",
    "equals": "==",
    "!=": "!=",
    "not_equals": "!=",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "=~": "=~",
    "matches": "=~",
    "!~": "!~",
    "not_matches": "!~",
    "exists": "exists",
    "not_exists": "!exists",
    "in": "in",
    "not_in": "!in",
}
_UNARY = frozenset({"exists", "!exists"})
_LISTS = frozenset({"in", "!in"})
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<punct>[()\[\],])
    | (?P<op>==|!=|>=|<=|=~|!~|&&|\|\||>|<|!)
    | (?P<quoted>'[^']*'|"[^"]*")
    | (?P<word>[^\s()\[\],=!<>~&|'"]+)
    )""",
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """The expression does not parse; the message names the offending part."""


@dataclass(frozen=True)
class Token:
    kind: str  # punct | op | quoted | word
    text: str


@dataclass(frozen=True)
class Comparison:
    subject: str  # "attribute:NAME" or one of SUBJECTS
    operator: str  # canonical: == != > >= < <= =~ !~ exists !exists in !in
    values: tuple[str, ...]


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


Expr = Comparison | Not | And | Or


@dataclass(frozen=True)
class Facts:
    """What an expression can see of one container instance."""

    attributes: Mapping[str, str | None]
    properties: Mapping[str, str]  # subject name -> value, e.g. "ec2InstanceId" -> "mi-…"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected character at {pos}: {stripped[pos : pos + 10]!r}")
        kind = match.lastgroup or "word"
        tokens.append(Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def peek(self) -> Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self._pos += 1
        return token

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token is not None and token.kind != "quoted" and token.text.lower() in texts

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise ExpressionError(f"expected {text!r}, found {token.text!r}")

    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.take().text!r}")
        return expr

    def or_expr(self) -> Expr:
        expr = self.and_expr()
        while self.at("or", "||"):
            self.take()
            expr = Or(expr, self.and_expr())
        return expr

    def and_expr(self) -> Expr:
        expr = self.unary()
        while self.at("and", "&&"):
            self.take()
            expr = And(expr, self.unary())
        return expr

    def unary(self) -> Expr:
        if self.at("not", "!"):
            self.take()
            return Not(self.unary())
        if self.at("("):
            self.take()
            expr = self.or_expr()
            self.expect(")")
            return expr
        return self.comparison()

    def comparison(self) -> Comparison:
        subject = self.subject()
        operator = self.operator()
        if operator in _UNARY:
            return Comparison(subject, operator, ())
        if operator in _LISTS:
            return Comparison(subject, operator, self.value_list())
        return Comparison(subject, operator, (self.value(),))

    def subject(self) -> str:
        token = self.take()
        if token.kind != "word":
            raise ExpressionError(f"expected a subject, found {token.text!r}")
        if token.text.startswith("attribute:") and len(token.text) > len("attribute:"):
            return token.text
        if token.text in SUBJECTS:
            return token.text
        raise ExpressionError(f"unknown subject {token.text!r}")

    def operator(self) -> str:
        token = self.take()
        text = token.text.lower()
        if text == "!" and self.at("exists", "in"):
            text = "not_" + self.take().text.lower()
        canonical = _OPERATORS.get(text)
        if canonical is None or token.kind == "quoted":
            raise ExpressionError(f"unknown operator {token.text!r}")
        return canonical

    def value(self) -> str:
        token = self.take()
        if token.kind == "quoted":
            return token.text[1:-1]
        if token.kind != "word":
            raise ExpressionError(f"expected a value, found {token.text!r}")
        return token.text

    def value_list(self) -> tuple[str, ...]:
        self.expect("[")
        values = [self.value()]
        while self.at(","):
            self.take()
            values.append(self.value())
        self.expect("]")
        return tuple(values)


def parse(text: str) -> Expr:
    """Parse one expression; raises ExpressionError when it is not valid."""
    tokens = tokenize(text)
    if not tokens:
        raise ExpressionError("empty expression")
    return _Parser(tokens).parse()


def _ordered(left: str, right: str, compare: Callable[[float, float], bool]) -> bool:
    try:
        return compare(float(left), float(right))
    except ValueError:
        # Not numbers: order as strings (agentVersion, registeredAt).
        return compare(float((left > right) - (left < right)), 0.0)


def _compare(actual: str | None, present: bool, node: Comparison) -> bool:
    op = node.operator
    if op in _UNARY:
        return present == (op == "exists")
    if op in _LISTS:
        return present and ((actual in node.values) == (op == "in"))
    expected = node.values[0]
    if op in ("==", "!="):
        return (present and actual == expected) == (op == "==")
    if op in ("=~", "!~"):
        matched = present and re.fullmatch(expected, actual or "") is not None
        return matched == (op == "=~")
    if not present or actual is None:
        return False
    checks: dict[str, Callable[[float, float], bool]] = {
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    return _ordered(actual, expected, checks[op])


def evaluate(expr: Expr, facts: Facts) -> bool:
    """True when the instance described by `facts` satisfies `expr`."""
    if isinstance(expr, Not):
        return not evaluate(expr.operand, facts)
    if isinstance(expr, And):
        return evaluate(expr.left, facts) and evaluate(expr.right, facts)
    if isinstance(expr, Or):
        return evaluate(expr.left, facts) or evaluate(expr.right, facts)
    if expr.subject.startswith("attribute:"):
        name = expr.subject[len("attribute:") :]
        present = name in facts.attributes
        return _compare(facts.attributes.get(name), present, expr)
    value = facts.properties.get(expr.subject)
    return _compare(value, value is not None, expr)


def matches(text: str, facts: Facts) -> bool:
    return evaluate(parse(text), facts)
