"""The hub's migrations build the whole schema on an empty database, and running them again
changes nothing (the other tests start from a copy of a database migrated once per session)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from hub.db import Database, migrate


async def test_an_empty_database_migrates_to_the_single_head_and_again_is_a_no_op(empty_database_url):
    database = Database.from_url(empty_database_url)
    try:
        await migrate(database.engine)
        async with database.engine.connect() as conn:
            heads = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        assert heads == ["0022"], "the branches are merged into one head"
        # one table from each branch merged by 0022, and from the first revision
        for table in (
            "stores",
            "catalog_products",
            "purchase_orders",
            "stocktakes",
            "coupon_templates",
            "group_buy_offers",
            "appointments",
            "mall_items",
        ):
            assert table in tables
        await migrate(database.engine)
        async with database.engine.connect() as conn:
            again = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert again == ["0022"]
    finally:
        await database.close()
