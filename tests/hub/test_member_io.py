"""Members from and to Excel: every row checked first, a per-row report, nothing written on errors."""

from __future__ import annotations

import io
from datetime import date, datetime

import openpyxl
import pytest
from sqlalchemy import func, select

from hub import cli, member_io, points
from hub.db import Database, migrate
from hub.loyalty_rules import PointsRules, save_setting
from hub.member_io import BadMemberFile, RowError, export_members, import_members
from hub.member_search import MemberQuery
from hub.members import Member, MemberFields, create_member
from hub.stores import add_store


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


def xlsx(rows: list[list]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


HEADER = ["手机号", "姓名", "性别", "生日", "门店", "接收短信", "备注"]
GOOD = [
    ["13800000001", "张三", "男", "1990-05-01", "shop-1", "是", "vip"],
    [13800000002, "李四", "女", datetime(1985, 12, 31), "shop-2", "", None],
    ["+86 139 0000 0003", "Wang Fang", "female", "1992/3/4", None, "no", None],
    ["13900000004", "", "", "1970年1月2日", "shop-1", "1", None],
    ["13900000005", "赵六", "M", 19991231, None, None, None],
]


async def _members(db) -> dict[str, Member]:
    async with db.session() as session:
        return {m.phone: m for m in (await session.scalars(select(Member))).all()}


async def test_a_good_file_imports_every_row(db):
    seen = []
    report = await import_members(
        db, xlsx([HEADER, *GOOD, [None, None]]), default_store="shop-1", progress=lambda *a: seen.append(a)
    )
    assert report.errors == []
    assert (report.rows, report.valid, report.imported, report.skipped, report.written) == (5, 5, 5, 0, True)
    assert report.ignored_columns == ["备注"]
    assert seen[0] == ("checking", 0, 0)
    assert seen[-1] == ("importing", 5, 5)
    members = await _members(db)
    assert sorted(members) == ["13800000001", "13800000002", "13900000003", "13900000004", "13900000005"]
    one, two, three = members["13800000001"], members["13800000002"], members["13900000003"]
    assert (one.name, one.gender, one.birthday, one.source_store, one.consent_sms) == (
        "张三",
        "male",
        date(1990, 5, 1),
        "shop-1",
        True,
    )
    assert (two.gender, two.birthday, two.source_store, two.consent_sms) == (
        "female",
        date(1985, 12, 31),
        "shop-2",
        False,
    )
    assert (three.name, three.birthday, three.source_store, three.channel) == (
        "Wang Fang",
        date(1992, 3, 4),
        "shop-1",
        "import",
    )
    assert members["13900000004"].birthday == date(1970, 1, 2)
    assert members["13900000005"].birthday == date(1999, 12, 31)


async def test_bad_rows_are_reported_per_row_and_nothing_is_written(db):
    async with db.session() as session, session.begin():
        await create_member(session, MemberFields("13700000000", channel="till"))
    rows = [
        HEADER,
        ["13800000001", "张三", "男", "1990-05-01", "shop-1", "是", None],  # good
        ["12345", "坏号码", "男", None, None, None, None],  # row 3
        ["13800000003", "名" * 65, "机器人", "1990-13-01", "nowhere", "也许", None],  # row 4
        ["138 0000 0001", "重复", None, None, None, None, None],  # row 5: same as row 2
        ["13700000000", "老会员", None, None, None, None, None],  # row 6: already a member
        ["13800000007", None, None, "2999-01-01", None, None, None],  # row 7
    ]
    report = await import_members(db, xlsx(rows))
    assert not report.written
    assert (report.rows, report.valid, report.imported, report.skipped) == (6, 1, 0, 6)
    assert report.errors == [
        RowError(
            3, "手机号", "'12345' is not a mainland China mobile number (11 digits starting with 13-19)"
        ),
        RowError(4, "姓名", "a name has at most 64 characters, this one has 65"),
        RowError(4, "性别", "gender '机器人' is not one of 男, 女, male, female or unknown (blank)"),
        RowError(4, "接收短信", "'也许' is not 是/否 (yes/no)"),
        RowError(4, "生日", "'1990-13-01' is not a date like 1990-05-01, 1990/5/1 or 1990年5月1日"),
        RowError(4, "门店", "no store 'nowhere'"),
        RowError(5, "手机号", "13800000001 is also on row 2"),
        RowError(6, "手机号", "13700000000 is already a member"),
        RowError(7, "生日", "birthday 2999-01-01 is in the future"),
    ]
    assert list(await _members(db)) == ["13700000000"]


async def test_skip_invalid_imports_the_good_rows_and_reports_the_rest(db):
    rows = [HEADER, GOOD[0], ["12345", "x", None, None, None, None, None], GOOD[1]]
    report = await import_members(db, xlsx(rows), skip_invalid=True)
    assert (report.imported, report.skipped, report.written) == (2, 1, True)
    assert [(e.row, e.column) for e in report.errors] == [(3, "手机号")]
    assert sorted(await _members(db)) == ["13800000001", "13800000002"]


async def test_scope_limits_the_stores_a_file_may_name(db):
    rows = [HEADER, GOOD[0], GOOD[1], ["13900000009", None, None, None, None, None, None]]
    report = await import_members(db, xlsx(rows), scope=frozenset({"shop-1"}))
    assert [(e.row, e.message) for e in report.errors] == [
        (3, "store 'shop-2' is outside your stores"),
        (4, "give the store; your account may import for shop-1"),
    ]
    assert await _members(db) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a spreadsheet", "not a readable .xlsx"),
        (xlsx([["姓名", "生日"], ["张三", None]]), "no phone column"),
        (xlsx([]), "the sheet is empty"),
    ],
)
async def test_unusable_files_are_refused(db, data, message):
    with pytest.raises(BadMemberFile, match=message):
        await import_members(db, data)


async def test_export_then_import_round_trips(db, tmp_path):
    await import_members(db, xlsx([HEADER, *GOOD]), default_store="shop-1")
    data = await export_members(db, MemberQuery())
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:7] == ("手机号", "姓名", "性别", "生日", "门店", "接收营销", "接收短信")
    assert len(rows) == 6
    by_phone = {r[0]: r for r in rows[1:]}
    assert by_phone["13800000001"][1:7] == ("张三", "男", datetime(1990, 5, 1), "shop-1", "否", "是")
    only = await export_members(db, MemberQuery(phone="0002"))
    assert len(list(openpyxl.load_workbook(io.BytesIO(only)).worksheets[0].iter_rows())) == 2
    # the export reads back: every phone is already a member now
    report = await import_members(db, data)
    assert {e.message for e in report.errors} == {f"{p} is already a member" for p in by_phone}
    assert set(report.ignored_columns) == {"会员ID", "注册渠道", "注册时间(UTC)", "合并到"}


def test_cli_import_shows_progress_on_stderr_and_refuses_bad_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STORELINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("STORELINK_STATE_DIR", str(tmp_path))
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(xlsx([["手机号", "姓名"], ["13800000001", "张三"], ["123", "坏"]]))
    with pytest.raises(SystemExit) as exited:
        cli.main(["members", "import", str(bad)])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert "row 3, 手机号: '123' is not a mainland China mobile number" in out
    assert "nothing was imported" in err
    good = tmp_path / "good.xlsx"
    good.write_bytes(xlsx([["phone", "name"], *[[f"1380000{i:04d}", f"m{i}"] for i in range(250)]]))
    cli.main(["members", "import", str(good)])
    out, err = capsys.readouterr()
    assert "250 rows: 250 imported, 0 skipped, 0 errors" in out
    assert "importing [" in err
    assert err.rstrip().endswith("250/250")
    cli.main(["members", "export", str(tmp_path / "out.xlsx"), "--phone", "0249"])
    rows = list(openpyxl.load_workbook(tmp_path / "out.xlsx").worksheets[0].iter_rows(values_only=True))
    assert [r[:2] for r in rows[1:]] == [("13800000249", "m249")]


async def test_import_writes_all_rows_in_one_count(db):
    report = await import_members(db, xlsx([["手机号"], *[[f"1390000{i:04d}"] for i in range(120)]]))
    assert report.imported == 120
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Member)) == 120


async def test_imported_customers_get_no_welcome_points_unless_asked(db):
    async with db.session() as session, session.begin():
        await save_setting(session, "points", PointsRules(registration_points=50), "test")
    await import_members(db, xlsx([["手机号"], ["13800000001"]]))
    await import_members(db, xlsx([["手机号"], ["13800000002"]]), welcome=True)
    members = await _members(db)
    async with db.session() as session:
        assert await points.balance_of(session, members["13800000001"].id) == 0
        assert await points.balance_of(session, members["13800000002"].id) == 50


@pytest.mark.parametrize("skip_invalid", [False, True])
async def test_a_till_registering_a_phone_during_the_import(db, monkeypatch, skip_invalid):
    checked = member_io._check

    async def check_then_a_till_registers(*args, **kwargs):
        fresh = await checked(*args, **kwargs)
        async with db.session() as session, session.begin():
            await create_member(session, MemberFields("13800000600", channel="till"))
        return fresh

    monkeypatch.setattr(member_io, "_check", check_then_a_till_registers)
    rows = [["手机号"], *[[f"1380000{i:04d}"] for i in range(1, 701)]]  # two chunks of the write
    report = await import_members(db, xlsx(rows), skip_invalid=skip_invalid)
    assert [(e.row, e.message) for e in report.errors] == [
        (601, "phone 13800000600 already belongs to a member")
    ]
    async with db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Member))
    if skip_invalid:
        assert (report.imported, report.skipped, report.written, count) == (699, 1, True, 700)
    else:
        assert (report.imported, report.skipped, report.written, count) == (0, 700, False, 1)
