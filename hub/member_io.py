"""Members to and from Excel (.xlsx, openpyxl): import checks every row before writing any.

Import reads the first sheet; row 1 names the columns (Chinese or English, any order):
手机号/phone (required), 姓名/name, 性别/gender, 生日/birthday, 门店/store,
接收营销/consent_marketing, 接收短信/consent_sms. Every row is checked first; duplicates
inside the file and phones that are already members are errors too. With any error
nothing is written, unless `skip_invalid` is set: then the good rows are imported and
the bad ones reported. All rows are written in one transaction.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import openpyxl
from sqlalchemy import select

from hub.db import AsyncSession, Database
from hub.member_search import MemberQuery, search_statement
from hub.members import (
    Gender,
    InvalidMember,
    Member,
    MemberExists,
    MemberFields,
    add_members,
    check_birthday,
    check_name,
    create_member,
    normalize_phone,
    parse_gender,
)
from hub.models import Store
from hub.sheets import RowError, blank_row, cell_text, read_xlsx

__all__ = [
    "MAX_ROWS",
    "BadMemberFile",
    "ImportReport",
    "Progress",
    "RowError",
    "export_members",
    "import_members",
]

MAX_ROWS = 200_000
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_CHUNK = 500
_COLUMNS = {
    "phone": ("手机号", "手机", "手机号码", "电话", "phone", "mobile"),
    "name": ("姓名", "名字", "name"),
    "gender": ("性别", "gender"),
    "birthday": ("生日", "出生日期", "birthday"),
    "source_store": ("门店", "注册门店", "store", "source_store"),
    "consent_marketing": ("接收营销", "营销同意", "consent_marketing"),
    "consent_sms": ("接收短信", "短信同意", "consent_sms"),
}
_HEADER_KEYS = {word.casefold(): key for key, words in _COLUMNS.items() for word in words}
_EXPORT_HEADERS = [
    "手机号",
    "姓名",
    "性别",
    "生日",
    "门店",
    "接收营销",
    "接收短信",
    "会员ID",
    "注册渠道",
    "注册时间(UTC)",
    "合并到",
]
_GENDER_OUT = {Gender.MALE.value: "男", Gender.FEMALE.value: "女", Gender.UNKNOWN.value: ""}
_YES = {"是", "y", "yes", "true", "1", "同意", "√", "✓"}
_NO = {"否", "n", "no", "false", "0", "不同意", "", "×"}
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日", "%Y年%m月%d")
_EXCEL_EPOCH = date(1899, 12, 30)

# (phase, done, total): phase is "checking" or "importing"
Progress = Callable[[str, int, int], None]


class _Abort(Exception):
    """Leaves the import's transaction so that it rolls back."""


class BadMemberFile(ValueError):
    """The upload is not a readable .xlsx, or has no phone column."""


@dataclass
class ImportReport:
    """What an import found and did; `written` is False when nothing was imported."""

    rows: int = 0
    valid: int = 0
    imported: int = 0
    skipped: int = 0
    written: bool = False
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and the CLI."""
        return asdict(self)


def _birthday(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = int(value)
        if 10_000_000 <= number <= 99_999_999:  # 19900501 typed as a number
            day = datetime.strptime(str(number), "%Y%m%d").date()
        elif 1 <= number < 100_000:  # an Excel date serial in a cell not formatted as a date
            day = _EXCEL_EPOCH + timedelta(days=number)
        else:
            raise InvalidMember(f"{value!r} is not a date")
    else:
        raw = str(value).strip()
        for fmt in _DATE_FORMATS:
            try:
                day = datetime.strptime(raw, fmt).date()
                break
            except ValueError:
                continue
        else:
            raise InvalidMember(f"{raw!r} is not a date like 1990-05-01, 1990/5/1 or 1990年5月1日")
    return check_birthday(day)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = cell_text(value).casefold()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise InvalidMember(f"{value!r} is not 是/否 (yes/no)")


def _read_sheet(data: bytes) -> list[Sequence[Any]]:
    """The first sheet's rows as values (blocking: call in a thread)."""
    return read_xlsx(data, max_rows=MAX_ROWS, what="members", error=BadMemberFile)


@dataclass(frozen=True)
class _Good:
    row: int
    fields: MemberFields


class _Checker:
    """Turns sheet rows into member fields, collecting every row's errors."""

    def __init__(
        self, header: Sequence[Any], stores: set[str], scope: frozenset[str] | None, default: str | None
    ):
        self.columns: dict[str, int] = {}
        self.titles: dict[str, str] = {}
        self.ignored: list[str] = []
        for index, title in enumerate(header):
            text = cell_text(title)
            key = _HEADER_KEYS.get(text.casefold())
            if key is None or key in self.columns:
                if text:
                    self.ignored.append(text)
                continue
            self.columns[key], self.titles[key] = index, text
        if "phone" not in self.columns:
            raise BadMemberFile("row 1 has no phone column; name it 手机号 or phone")
        self.stores, self.scope, self.default = stores, scope, default
        self.errors: list[RowError] = []

    def _cell(self, row: Sequence[Any], key: str) -> Any:
        index = self.columns.get(key)
        return row[index] if index is not None and index < len(row) else None

    def check(self, number: int, row: Sequence[Any]) -> _Good | None:
        before = len(self.errors)
        values: dict[str, Any] = {}
        parsers: dict[str, Callable[[Any], Any]] = {
            "phone": lambda v: normalize_phone(cell_text(v)),
            "name": lambda v: check_name(cell_text(v)),
            "gender": lambda v: parse_gender(cell_text(v)),
            "birthday": _birthday,
            "source_store": self._store,
            "consent_marketing": _flag,
            "consent_sms": _flag,
        }
        for key, parse in parsers.items():
            if key not in self.columns and key != "source_store":
                continue
            try:
                values[key] = parse(self._cell(row, key))
            except (InvalidMember, ValueError) as err:
                self.errors.append(RowError(number, self.titles.get(key, key), str(err)))
        if len(self.errors) > before:
            return None
        return _Good(
            number,
            MemberFields(
                values["phone"],
                channel="import",
                name=values.get("name", ""),
                gender=values.get("gender", Gender.UNKNOWN),
                birthday=values.get("birthday"),
                source_store=values["source_store"],
                consent_marketing=values.get("consent_marketing", False),
                consent_sms=values.get("consent_sms", False),
            ),
        )

    def _store(self, value: Any) -> str | None:
        store = cell_text(value) or self.default
        if store is None:
            if self.scope is not None:
                raise InvalidMember(
                    f"give the store; your account may import for {', '.join(sorted(self.scope))}"
                )
            return None
        if store not in self.stores:
            raise InvalidMember(f"no store {store!r}")
        if self.scope is not None and store not in self.scope:
            raise InvalidMember(f"store {store!r} is outside your stores")
        return store


async def _check(
    db: Database, data: bytes, scope: frozenset[str] | None, default: str | None, report: ImportReport
) -> list[_Good]:
    rows = await asyncio.to_thread(_read_sheet, data)
    if not rows:
        raise BadMemberFile("the sheet is empty; row 1 must name the columns (手机号, 姓名, …)")
    async with db.session() as session:
        stores = set((await session.scalars(select(Store.id))).all())
    checker = _Checker(rows[0], stores, scope, default)
    report.ignored_columns = checker.ignored
    good: list[_Good] = []
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if blank_row(row):
            continue
        report.rows += 1
        item = checker.check(number, row)
        if item is None:
            continue
        phone = item.fields.phone
        if phone in first_row:
            checker.errors.append(
                RowError(number, checker.titles["phone"], f"{phone} is also on row {first_row[phone]}")
            )
            continue
        first_row[phone] = number
        good.append(item)
    async with db.session() as session:
        taken: set[str | None] = set()
        for start in range(0, len(good), _CHUNK):
            phones = [g.fields.phone for g in good[start : start + _CHUNK]]
            taken.update((await session.scalars(select(Member.phone).where(Member.phone.in_(phones)))).all())
    fresh = []
    for item in good:
        if item.fields.phone in taken:
            checker.errors.append(
                RowError(item.row, checker.titles["phone"], f"{item.fields.phone} is already a member")
            )
        else:
            fresh.append(item)
    report.errors = sorted(checker.errors, key=lambda e: (e.row, e.column))
    report.valid = len(fresh)
    return fresh


async def _row_by_row(
    session: AsyncSession, chunk: list[_Good], report: ImportReport, *, skip_invalid: bool, welcome: bool
) -> None:
    for item in chunk:
        try:
            await create_member(session, item.fields, welcome=welcome)
        except MemberExists as err:
            report.errors.append(RowError(item.row, "phone", str(err)))
            if not skip_invalid:
                raise _Abort from err
            report.skipped += 1
            continue
        report.imported += 1


async def import_members(
    db: Database,
    data: bytes,
    *,
    skip_invalid: bool = False,
    default_store: str | None = None,
    scope: frozenset[str] | None = None,
    welcome: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Check every row of an .xlsx, then create the members in one transaction (or none).

    `scope` limits the stores rows may name (a store-scoped user); `default_store` is the
    source store of rows without one. Imported members are existing customers: no
    registration points or welcome gifts unless `welcome`. `BadMemberFile` if the file
    itself is unusable.
    """
    report = ImportReport()
    if progress is not None:
        progress("checking", 0, 0)
    fresh = await _check(db, data, scope, default_store, report)
    report.skipped = report.rows - len(fresh)
    if (report.errors and not skip_invalid) or not fresh:
        report.skipped = report.rows
        return report
    try:
        async with db.session() as session, session.begin():
            for start in range(0, len(fresh), _CHUNK):
                chunk = fresh[start : start + _CHUNK]
                try:
                    await add_members(session, [item.fields for item in chunk], welcome=welcome)
                    report.imported += len(chunk)
                except MemberExists:  # a till registered one of these since the check: find which
                    await _row_by_row(session, chunk, report, skip_invalid=skip_invalid, welcome=welcome)
                if progress is not None:
                    progress("importing", start + len(chunk), len(fresh))
    except _Abort:  # the transaction is rolled back: nothing of this file is written
        report.imported, report.skipped = 0, report.rows
        return report
    report.written = report.imported > 0
    return report


def _export_row(member: Member) -> list[Any]:
    return [
        member.phone or "",  # a merged member has none; its row says where it went
        member.name,
        _GENDER_OUT.get(member.gender, ""),
        member.birthday,
        member.source_store or "",
        "是" if member.consent_marketing else "否",
        "是" if member.consent_sms else "否",
        member.id,
        member.channel,
        member.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        member.merged_into or "",
    ]


def _append(sheet: Any, rows: Iterable[list[Any]]) -> None:
    for row in rows:
        sheet.append(row)


async def export_members(db: Database, query: MemberQuery) -> bytes:
    """The members a search finds (all of them, not one page) as an .xlsx file."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("会员")
    sheet.append(_EXPORT_HEADERS)
    async with db.session() as session:
        statement = await search_statement(session, query)
        result = await session.stream_scalars(statement.execution_options(yield_per=_CHUNK))
        async for members in result.partitions():
            await asyncio.to_thread(_append, sheet, [_export_row(m) for m in members])
    out = io.BytesIO()
    await asyncio.to_thread(book.save, out)
    return out.getvalue()
