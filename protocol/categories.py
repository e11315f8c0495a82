"""Category paths: head office files products under paths such as `现制饮品/咖啡`.

A rule or a kitchen station that names a category means that category and everything under
it, and may name it by its full path, by an ancestor's path, or by its own last part (what
stores configured before head office had a tree). `category_keys` lists every name a
product's category answers to, so a lookup is one dict access per key.
"""

from __future__ import annotations

__all__ = ["category_keys"]


def category_keys(path: str) -> list[str]:
    """`"现制饮品/咖啡"` → `["现制饮品/咖啡", "现制饮品", "咖啡"]`; `""` → `[]`."""
    if not path:
        return []
    parts = path.split("/")
    keys = ["/".join(parts[:end]) for end in range(len(parts), 0, -1)]
    if len(parts) > 1:
        keys.append(parts[-1])
    return keys
