"""YAML loading that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class Located:
    """A loaded YAML document plus the line (1-based) of every key/item path."""

    def __init__(self, data: Any, lines: dict[Path, int]) -> None:
        self.data = data
        self.lines = lines

    def line_of(self, path: Path) -> int:
        """The line of ``path`` or of its closest ancestor."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p, 1)


#: what one policy file may hold: a policy is a few hundred values; these bounds stop alias bombs ("billion
#: laughs"), recursive anchors and absurd nesting with a clear error, long before memory or the stack suffer
MAX_TEXT = 1024 * 1024
MAX_VALUES = 100_000
MAX_DEPTH = 64
MERGE_TAG = "tag:yaml.org,2002:merge"


def load_located(text: str, source: str) -> Located:
    if len(text) > MAX_TEXT:
        raise YamlError(source, 1, f"the file is larger than {MAX_TEXT // 1024} KiB; a policy is far smaller")
    nul = text.find("\0")
    if nul >= 0:
        raise YamlError(source, text.count("\n", 0, nul) + 1, "a NUL byte is not allowed in a policy")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(source, line, f"invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:  # the reader's errors (control characters) carry no mark
        raise YamlError(source, 1, f"invalid YAML: {e}") from None
    except RecursionError:  # the composer recurses once per level: '[[[[…' thousands deep
        raise YamlError(source, 1, f"values nested more than {MAX_DEPTH} levels deep") from None
    lines: dict[Path, int] = {}
    if node is None:
        return Located(None, lines)
    data = _Converter(source, lines).convert(node, (), 0)
    return Located(data, lines)


class _Converter:
    """Node graph -> Python values, counting every value produced (an alias is expanded where it is used, so
    a few lines of anchors can stand for billions of values) and the nesting depth (a recursive anchor nests
    without end)."""

    def __init__(self, source: str, lines: dict[Path, int]) -> None:
        self.source, self.lines, self.values = source, lines, 0

    def error(self, node: yaml.Node, message: str) -> YamlError:
        return YamlError(self.source, node.start_mark.line + 1, message)

    def convert(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.error(node, f"the document expands to more than {MAX_VALUES:,} values (aliases repeated "
                                   "inside aliases?); a policy is far smaller")
        if depth > MAX_DEPTH:
            raise self.error(node, f"values nested more than {MAX_DEPTH} levels deep (an anchor used inside "
                                   "itself?)")
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, (*path, i), depth + 1) for i, v in enumerate(node.value)]
        try:
            return yaml.SafeLoader("").construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise self.error(node, str(getattr(e, "problem", None) or e)) from None
        except (ValueError, OverflowError) as e:  # e.g. a timestamp like 2026-02-30
            raise self.error(node, f"invalid value {node.value!r} ({e})") from None

    def mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        out: dict = {}
        merged: dict = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag == MERGE_TAG:  # '<<: *defaults' or '<<: [*a, *b]'
                sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                for m in sources:
                    if not isinstance(m, yaml.MappingNode):
                        raise self.error(k, "a merge key ('<<') takes a mapping or a list of mappings")
                    for mk, mv in self.mapping(m, path, depth + 1).items():
                        merged.setdefault(mk, mv)  # the first mapping listed wins, as YAML specifies
                continue
            try:
                key = yaml.SafeLoader(" ").construct_object(k) if isinstance(k, yaml.ScalarNode) else None
            except (yaml.YAMLError, ValueError, OverflowError):
                key = None
            if not isinstance(key, str):
                raise self.error(k, "keys must be plain strings")
            if key in out:
                raise self.error(k, f"duplicate key {key!r}")
            self.lines[(*path, key)] = k.start_mark.line + 1
            out[key] = self.convert(v, (*path, key), depth + 1)
            self.lines[(*path, key)] = k.start_mark.line + 1
        for mk, mv in merged.items():  # keys written in the mapping itself override merged ones
            out.setdefault(mk, mv)
        return out


class YamlError(Exception):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message
