"""Rewrite hardcoded keys in Python source to read the environment, with libcst.

Handled shapes (formatting and comments elsewhere are kept byte for byte)::

    openai.api_key = "sk-…"                     -> openai.api_key = os.environ["OPENAI_API_KEY"]
    OpenAI(api_key="sk-…")                      -> OpenAI(api_key=os.environ["OPENAI_API_KEY"])
    os.environ.get("NAME", "sk-…")  / getenv    -> os.environ["NAME"]
    {"api_key": "sk-…"}                         -> {"api_key": os.environ["OPENAI_API_KEY"]}
    OPENAI_API_KEY = "sk-…"                     -> OPENAI_API_KEY = os.environ["OPENAI_API_KEY"]

and ``import os`` is added when missing. A key split over string literals joined with ``+`` or
implicitly (``("sk-proj-…" "…")``) is handled the same way when the whole expression evaluates
to exactly the key: the expression is replaced. A key inside a larger string or a longer
concatenation, an f-string, a bytes literal or a comment is reported as *unfixable* with its
line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

#: (value, name hint or None) -> environment variable name to use
Namer = Callable[[str, str | None], str]

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


@dataclass
class PyRewrite:
    """The outcome for one file: new source, what moved where, what could not be moved."""

    code: str = field(repr=False)  # may still hold keys it could not rewrite
    replaced: list[tuple[int, str]] = field(default_factory=list)  # (line, env name)
    unfixable: list[tuple[int, str]] = field(default_factory=list)  # (line, why)

    @property
    def changed(self) -> bool:
        """True when at least one literal was rewritten."""
        return bool(self.replaced)


def _env_lookup(name: str) -> cst.Subscript:
    expr = cst.parse_expression(f'os.environ["{name}"]')
    assert isinstance(expr, cst.Subscript)
    return expr


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def _str_value(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _key_value(node: cst.BaseExpression) -> str | None:
    """The value of a str literal or of a concatenation of str literals."""
    joined = _joined_value(node)
    return joined[0] if joined is not None else None


def _joined_value(node: cst.BaseExpression) -> tuple[str, cst.SimpleString] | None:
    """The value of a pure str-literal expression joined with ``+`` or implicitly, and its
    first non-empty literal; ``None`` for anything else (a name, a call, an f-string, bytes)."""
    if isinstance(node, cst.SimpleString):
        value = _str_value(node)
        return (value, node) if value is not None else None
    plus = isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)
    if not (plus or isinstance(node, cst.ConcatenatedString)):
        return None
    assert isinstance(node, (cst.BinaryOperation, cst.ConcatenatedString))
    left, right = _joined_value(node.left), _joined_value(node.right)
    if left is None or right is None:
        return None
    return left[0] + right[0], (left[1] if left[0] or not right[0] else right[1])


class _Rewriter(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, keys: set[str], namer: Namer) -> None:
        super().__init__()
        self.keys = keys
        self.namer = namer
        self.result = PyRewrite(code="")
        self._hints: dict[int, str] = {}
        self._skip: set[int] = set()
        self._getenv: dict[int, str] = {}
        self._joined: dict[int, tuple[str, int]] = {}  # expression -> (key, line of its start)

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _contains_key(self, text: str) -> bool:
        return any(k in text for k in self.keys)

    def _hint(self, value: cst.BaseExpression, name: str) -> None:
        # a variable or dict key becomes the env var name only when it is specific
        # (OPENAI_API_KEY, OPENAI_ORG_KEY, KEYGUARD_KEY); "KEY" or "api_key" get the default
        if _ENV_NAME.match(name) and ("OPENAI" in name or "KEYGUARD" in name):
            self._hints[id(value)] = name

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                self._hint(node.value, target.target.value)
            elif (
                isinstance(target.target, cst.Subscript)
                and _dotted(target.target.value) == "os.environ"
                and _key_value(node.value) in self.keys
            ):
                self._skip.add(id(node.value))
                self.result.unfixable.append(
                    (
                        self._line(node),
                        "sets os.environ to a literal key: delete this line and load .env instead "
                        "(python-dotenv's load_dotenv() or `keyguard run -- python …`)",
                    )
                )

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None and isinstance(node.target, cst.Name):
            self._hint(node.value, node.target.value)

    def visit_DictElement(self, node: cst.DictElement) -> None:
        key = _str_value(node.key)
        if key is not None:
            self._hint(node.value, key)

    def visit_Call(self, node: cst.Call) -> None:
        func = _dotted(node.func)
        if (
            func in ("os.environ.get", "os.getenv", "os.environ.setdefault", "getenv")
            and len(node.args) == 2
        ):
            name, default = _str_value(node.args[0].value), node.args[1].value
            if name and _ENV_NAME.match(name) and _key_value(default) in self.keys:
                self._skip.add(id(default))
                self._getenv[id(node)] = name

    def _visit_joined(self, node: cst.BaseExpression, what: str) -> bool:
        """A concatenation of str literals: replaced whole when it is exactly a key, reported
        when it holds one among other text; its parts are not visited either way."""
        if id(node) in self._skip:  # handled by its parent (os.environ[...] = / getenv default)
            return False
        joined = _joined_value(node)
        if joined is None:  # a name, a call, an f-string or bytes among the parts: look inside
            if isinstance(node, cst.ConcatenatedString):
                for part in (node.left, node.right):  # a literal here cannot become a Subscript
                    if isinstance(part, cst.SimpleString) and self._contains_key(part.value):
                        self._skip.add(id(part))
                        self.result.unfixable.append((self._line(part), f"key in an {what}"))
            return True
        value, first = joined
        if value in self.keys:
            self._joined[id(node)] = (value, self._line(first))
        elif self._contains_key(value):
            self.result.unfixable.append((self._line(first), f"key inside a longer {what}"))
        return False

    def visit_ConcatenatedString(self, node: cst.ConcatenatedString) -> bool:
        return self._visit_joined(node, "implicit string concatenation: rewrite by hand")

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> bool:
        return self._visit_joined(node, "string concatenation: rewrite by hand")

    def _leave_joined(
        self, original_node: cst.BaseExpression, updated_node: cst.BaseExpression
    ) -> cst.BaseExpression:
        joined = self._joined.get(id(original_node))
        if joined is None:
            return updated_node
        value, line = joined
        chosen = self.namer(value, self._hints.get(id(original_node)))
        self.result.replaced.append((line, chosen))
        return _env_lookup(chosen)

    def leave_ConcatenatedString(
        self, original_node: cst.ConcatenatedString, updated_node: cst.ConcatenatedString
    ) -> cst.BaseExpression:
        return self._leave_joined(original_node, updated_node)

    def leave_BinaryOperation(
        self, original_node: cst.BinaryOperation, updated_node: cst.BinaryOperation
    ) -> cst.BaseExpression:
        return self._leave_joined(original_node, updated_node)

    def visit_FormattedStringText(self, node: cst.FormattedStringText) -> None:
        if self._contains_key(node.value):
            self.result.unfixable.append(
                (self._line(node), "key inside an f-string: interpolate os.environ[...] instead")
            )

    def visit_Comment(self, node: cst.Comment) -> None:
        if self._contains_key(node.value):
            self.result.unfixable.append((self._line(node), "key in a comment: delete it"))

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = self._getenv.get(id(original_node))
        if name is None:
            return updated_node
        default = _key_value(original_node.args[1].value)
        assert default is not None
        chosen = self.namer(default, name)
        self.result.replaced.append((self._line(original_node), chosen))
        return _env_lookup(chosen)

    def leave_SimpleString(
        self, original_node: cst.SimpleString, updated_node: cst.SimpleString
    ) -> cst.BaseExpression:
        if id(original_node) in self._skip or not self._contains_key(original_node.value):
            return updated_node
        value = original_node.evaluated_value
        line = self._line(original_node)
        if not isinstance(value, str):
            self.result.unfixable.append((line, "key in a bytes literal: rewrite by hand"))
            return updated_node
        if value not in self.keys:
            self.result.unfixable.append(
                (line, "key inside a longer string: build the string from os.environ[...] by hand")
            )
            return updated_node
        chosen = self.namer(value, self._hints.get(id(original_node)))
        self.result.replaced.append((line, chosen))
        return _env_lookup(chosen)


def _has_import_os(module: cst.Module) -> bool:
    for stmt in module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Import) and any(
                    _dotted(a.name).split(".")[0] == "os" and a.asname is None for a in small.names
                ):
                    return True
    return False


def _add_import_os(module: cst.Module) -> cst.Module:
    body = list(module.body)
    index = 0
    for i, stmt in enumerate(body):
        if not isinstance(stmt, cst.SimpleStatementLine):
            break
        first = stmt.body[0]
        is_doc = (
            i == 0 and isinstance(first, cst.Expr) and isinstance(first.value, cst.SimpleString)
        )
        is_future = (
            isinstance(first, cst.ImportFrom)
            and _dotted(first.module or cst.Name("x")) == "__future__"
        )
        if is_doc or is_future:
            index = i + 1
            continue
        break
    new = cst.parse_statement("import os\n")
    assert isinstance(new, cst.SimpleStatementLine)
    if index < len(body) and isinstance(body[index], cst.SimpleStatementLine):
        following = body[index]
        assert isinstance(following, cst.SimpleStatementLine)
        if isinstance(following.body[0], (cst.Import, cst.ImportFrom)):
            # join the existing import block: take over its leading blank lines/comments
            new = new.with_changes(leading_lines=following.leading_lines)
            body[index] = following.with_changes(leading_lines=())
    elif index > 0:
        new = new.with_changes(leading_lines=(cst.EmptyLine(),))
    body.insert(index, new)
    return module.with_changes(body=body)


def rewrite_python(source: str, keys: set[str], namer: Namer) -> PyRewrite:
    """Rewrite every literal in ``source`` equal to one of ``keys``; never raises on keys.

    Raises ``libcst.ParserSyntaxError`` if ``source`` is not valid Python.
    """
    module = cst.parse_module(source)
    wrapper = MetadataWrapper(module)
    rewriter = _Rewriter(keys, namer)
    new_module = wrapper.visit(rewriter)
    result = rewriter.result
    if result.changed and not _has_import_os(new_module):
        new_module = _add_import_os(new_module)
    result.code = new_module.code if result.changed else source
    return result
