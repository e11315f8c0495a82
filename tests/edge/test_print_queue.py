"""Print jobs through a simulated network printer over real TCP: offline, paper out, crash."""

from __future__ import annotations

import asyncio

import pytest

from drivers import Cut, NetworkPrinter, PrinterProfile, Text, encode
from drivers.sim import SimNetworkPrinter
from edge.journal import Journal
from edge.print_queue import PrintWorker, enqueue, recent_jobs

PROFILE = PrinterProfile(name="前台", paper_mm=58)


def _render(conn, kind: str, ref: str | None) -> bytes:
    if kind == "broken":
        raise ValueError("no such order")
    return encode([Text(f"小票 {ref}"), Cut()], PROFILE)


@pytest.fixture
async def journal(tmp_path):
    async with Journal(tmp_path / "journal.sqlite3") as journal:
        yield journal


async def _queue(journal: Journal, *refs: str, kind: str = "receipt") -> None:
    def work(conn):
        for ref in refs:
            enqueue(conn, "p1", kind, ref)

    await journal.transaction(work)


async def _states(journal: Journal) -> dict[str, str]:
    jobs = await journal.read(lambda conn: recent_jobs(conn, "p1", 100))
    return {job.ref or "": job.state for job in jobs}


def _worker(journal: Journal, sim: SimNetworkPrinter) -> PrintWorker:
    printer = NetworkPrinter("p1", PROFILE, "127.0.0.1", sim.port, connect_timeout=0.5)
    return PrintWorker(journal, "p1", printer, _render)


async def test_jobs_print_in_order_exactly_once(journal):
    async with SimNetworkPrinter() as sim, _worker(journal, sim) as worker:
        await _queue(journal, "0001", "0002")
        worker.notify()
        await sim.wait_for(lambda p: len(p.jobs) >= 2, within=5)
        await asyncio.sleep(0.3)
        assert [job[0] for job in sim.jobs] == ["小票 0001", "小票 0002"]
        assert len(sim.jobs) == 2
        assert await _states(journal) == {"0001": "done", "0002": "done"}
        assert worker.health == "ok"


async def test_offline_printer_prints_once_when_it_comes_back(journal):
    async with SimNetworkPrinter(offline=True) as sim, _worker(journal, sim) as worker:
        await _queue(journal, "0003")
        worker.notify()
        async with asyncio.timeout(5):
            while "offline" not in worker.health:
                await asyncio.sleep(0.05)
        assert await _states(journal) == {"0003": "queued"}
        await sim.set_offline(False)
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        await asyncio.sleep(0.3)
        assert [job[0] for job in sim.jobs] == ["小票 0003"]
        assert await _states(journal) == {"0003": "done"}


async def test_paper_out_waits_and_says_why(journal):
    async with SimNetworkPrinter(paper_out=True) as sim, _worker(journal, sim) as worker:
        await _queue(journal, "0004")
        worker.notify()
        async with asyncio.timeout(5):
            while "no paper" not in worker.health:
                await asyncio.sleep(0.05)
        assert sim.jobs == []
        sim.paper_out = False
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        assert [job[0] for job in sim.jobs] == ["小票 0004"]


async def test_a_job_mid_print_at_a_crash_is_not_printed_again(journal):
    await _queue(journal, "0005", "0006")
    await journal.transaction(
        lambda conn: conn.execute("UPDATE print_jobs SET state = 'printing' WHERE ref = '0005'")
    )
    async with SimNetworkPrinter() as sim, _worker(journal, sim):
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=5)
        await asyncio.sleep(0.3)
        assert [job[0] for job in sim.jobs] == ["小票 0006"]
    assert await _states(journal) == {"0005": "unknown", "0006": "done"}


async def test_a_job_that_cannot_be_laid_out_fails_and_does_not_block_the_queue(journal):
    await _queue(journal, "x", kind="broken")
    await _queue(journal, "0007")
    async with SimNetworkPrinter() as sim, _worker(journal, sim):
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=5)
    jobs = await journal.read(lambda conn: recent_jobs(conn, "p1"))
    failed = next(job for job in jobs if job.kind == "broken")
    assert failed.state == "failed"
    assert "no such order" in (failed.error or "")


async def test_a_drawer_kick_that_waited_too_long_is_dropped_not_fired_late(journal):
    def old_kick(conn):
        enqueue(conn, "p1", "drawer", "late")
        conn.execute("UPDATE print_jobs SET created_at = '2020-01-01T00:00:00+00:00' WHERE ref = 'late'")
        enqueue(conn, "p1", "receipt", "0001")

    await journal.transaction(old_kick)
    async with SimNetworkPrinter() as sim, _worker(journal, sim):
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=5)
        await asyncio.sleep(0.3)
        assert [job[0] for job in sim.jobs] == ["小票 0001"]
    jobs = await journal.read(lambda conn: recent_jobs(conn, "p1", 10))
    late = next(job for job in jobs if job.ref == "late")
    assert late.state == "failed"
    assert "not opened" in (late.error or "")
