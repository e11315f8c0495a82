"""The catalog's category tree: a category is named by its path, "饮料/碳酸饮料"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from hub.catalog import CatalogError, category_path
from hub.catalog_tables import CatalogCategory, CatalogProduct
from hub.db import AsyncSession
from hub.errors import NotFound

__all__ = ["add_category", "delete_category", "list_categories"]


async def add_category(session: AsyncSession, path: str) -> tuple[CatalogCategory, bool]:
    """The category at `path`, created with any missing parents; and whether it was new."""
    path = category_path(path)
    names = path.split("/")
    parent: CatalogCategory | None = None
    created = False
    for depth in range(1, len(names) + 1):
        sub = "/".join(names[:depth])
        row = await session.scalar(select(CatalogCategory).where(CatalogCategory.path == sub))
        if row is None:
            row = CatalogCategory(
                parent_id=parent.id if parent else None,
                name=names[depth - 1],
                path=sub,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            await session.flush()
            created = True
        parent = row
    assert parent is not None  # noqa: S101 - a path has at least one name
    return parent, created


async def list_categories(session: AsyncSession) -> list[dict[str, Any]]:
    """Every category with its direct product count, parents before children."""
    counts = dict(
        (
            await session.execute(
                select(CatalogProduct.category_id, func.count()).group_by(CatalogProduct.category_id)
            )
        ).all()
    )
    rows = (await session.scalars(select(CatalogCategory).order_by(CatalogCategory.path))).all()
    return [
        {
            "id": r.id,
            "path": r.path,
            "name": r.name,
            "parent_id": r.parent_id,
            "products": counts.get(r.id, 0),
        }
        for r in rows
    ]


async def delete_category(session: AsyncSession, path: str) -> None:
    """Remove an empty category (no products, no children)."""
    row = await session.scalar(select(CatalogCategory).where(CatalogCategory.path == category_path(path)))
    if row is None:
        raise NotFound(f"no category {path!r}")
    if await session.scalar(select(CatalogCategory.id).where(CatalogCategory.parent_id == row.id).limit(1)):
        raise CatalogError(f"category {row.path!r} has sub-categories; remove or move them first")
    if await session.scalar(select(CatalogProduct.sku).where(CatalogProduct.category_id == row.id).limit(1)):
        raise CatalogError(f"category {row.path!r} still has products; move them to another category first")
    await session.delete(row)
