"""The projector in its own process: fed over a pipe by the sequencer's listener, the
child's tables match the engine and the events exactly (the same checks as the in-process
projector's), also after the child is killed mid-stream, after its pipe was full, and at
stop. On SQLite and PostgreSQL (``database_url``)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from mercato.store import create_engine, projector_process
from mercato.store.projector import ProjectionError
from mercato.store.projector_process import LOCK_FILE, ProjectorProcess
from store.test_projector import Driver, check_projection, committed_seq, scenario


async def started(url: str, driver: Driver, **options: int) -> ProjectorProcess:
    projector = ProjectorProcess(url, **options)
    driver.sequencer.listeners.append(projector.on_batch)
    await projector.start(driver.sequencer.data_dir, driver.sequencer.last_seq)
    return projector


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.02)


def test_the_child_projects_what_the_sequencer_applies(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> tuple[Driver, ProjectorProcess]:
        driver = Driver(tmp_path)
        projector = await started(migrated, driver)
        try:
            await driver.steps(scenario(3, 900))
            last = driver.sequencer.last_seq
            assert await projector.wait_for(last, timeout=60)
            assert projector.cursor == last and projector.lag(last) == 0
            assert not await projector.wait_for(last + 1, timeout=0.2)  # never applied
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return driver, projector

    driver, projector = asyncio.run(scenario_())
    assert projector.restarts == 0 and projector.left_to_journal == 0
    check_projection(migrated, driver.run)


def test_a_killed_child_is_replaced_and_nothing_is_projected_twice(
    migrated: str, tmp_path: Path
) -> None:
    """SIGKILL the child mid-stream; batches applied while none runs are left to the
    journal; its successor catches up from the cursor it finds, exactly once."""
    steps = scenario(4, 1500, chunk=20)

    async def scenario_() -> tuple[Driver, ProjectorProcess]:
        driver = Driver(tmp_path, snapshot_every=200)
        projector = await started(migrated, driver)
        try:
            await driver.steps(steps[:40])
            first = projector.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await driver.steps(steps[40:60])  # the child is gone or going meanwhile
            await until(lambda: projector.restarts == 1 and projector.pid != first)
            await driver.steps(steps[60:])
            assert await projector.wait_for(driver.sequencer.last_seq, timeout=60)
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return driver, projector

    driver, projector = asyncio.run(scenario_())
    assert projector.cursor == driver.run.last_seq
    check_projection(migrated, driver.run)


def test_a_full_pipe_leaves_batches_to_the_journal(migrated: str, tmp_path: Path) -> None:
    """The child stopped (SIGSTOP) fills its pipe; later batches are not sent but left to
    the journal, and once it runs again it reads them from there, though no batch follows
    them."""

    async def scenario_() -> tuple[Driver, ProjectorProcess]:
        driver = Driver(tmp_path)
        projector = await started(migrated, driver, max_backlog_bytes=50_000)
        try:
            child = projector.pid
            assert child is not None
            os.kill(child, signal.SIGSTOP)
            try:
                await driver.steps(scenario(5, 2500))
            finally:
                os.kill(child, signal.SIGCONT)
            last = driver.sequencer.last_seq
            assert projector.left_to_journal == last  # the last batches were not sent
            assert await projector.wait_for(last, timeout=60)
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return driver, projector

    driver, projector = asyncio.run(scenario_())
    assert projector.restarts == 0
    check_projection(migrated, driver.run)


def test_stop_projects_what_was_sent_then_the_child_exits(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> tuple[Driver, ProjectorProcess, int]:
        driver = Driver(tmp_path)
        projector = await started(migrated, driver)
        try:
            for commands in scenario(6, 600):
                driver.step(commands)  # no await: all of it is still to project at stop
            assert projector.cursor < driver.sequencer.last_seq
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return driver, projector, await committed_seq(migrated)

    driver, projector, committed = asyncio.run(scenario_())
    assert projector.cursor == committed == driver.run.last_seq
    assert projector.pid is not None and projector.restarts == 0
    check_projection(migrated, driver.run)


def test_start_fails_with_the_reason_when_the_child_cannot_project(tmp_path: Path) -> None:
    """A database without the projection's tables: the child exits before it has caught
    up, and start says so instead of waiting."""

    async def scenario_() -> None:
        driver = Driver(tmp_path)
        try:
            empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite'}"
            with pytest.raises(ProjectionError, match="exited with status 1 before catching up"):
                await started(empty, driver)
        finally:
            driver.close()

    asyncio.run(scenario_())


def hold_projector_lock(data_dir: Path) -> int:
    """Take the lock a running child holds, as a predecessor still writing would."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_child_starts_only_once_its_predecessor_has_exited(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> Driver:
        driver = Driver(tmp_path)
        predecessor = hold_projector_lock(tmp_path)
        projector = ProjectorProcess(migrated)
        driver.sequencer.listeners.append(projector.on_batch)
        try:
            starting = asyncio.create_task(projector.start(tmp_path, 0))
            await driver.steps(scenario(7, 300))
            await asyncio.sleep(0.5)
            assert not starting.done() and projector.cursor == 0
            os.close(predecessor)
            await asyncio.wait_for(starting, 30)
            assert await projector.wait_for(driver.sequencer.last_seq, timeout=60)
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return driver

    check_projection(migrated, asyncio.run(scenario_()).run)


def test_stop_during_the_start_up_ends_the_start(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> None:
        predecessor = hold_projector_lock(tmp_path)
        projector = ProjectorProcess(migrated)
        try:
            starting = asyncio.create_task(projector.start(tmp_path, 0))
            await asyncio.sleep(0.5)
            await projector.stop(timeout=1)  # the child waits at the lock: killed
            with pytest.raises(ProjectionError, match="stopped before catching up"):
                await asyncio.wait_for(starting, 10)
        finally:
            os.close(predecessor)

    asyncio.run(scenario_())


def test_a_stop_signal_to_the_process_group_leaves_the_stopping_to_the_service(
    migrated: str, tmp_path: Path
) -> None:
    """SIGTERM and SIGINT sent to the whole group (systemd, Ctrl-C) do not end the child:
    the service stops it once the engine is flushed. A stop that comes while a dead child
    waits to be replaced starts no new one."""

    async def scenario_() -> tuple[Driver, ProjectorProcess, float]:
        driver = Driver(tmp_path)
        projector = await started(migrated, driver)
        child = projector.pid
        assert child is not None
        try:
            os.kill(child, signal.SIGTERM)
            os.kill(child, signal.SIGINT)
            await driver.steps(scenario(8, 300))
            assert await projector.wait_for(driver.sequencer.last_seq, timeout=60)
            assert projector.pid == child and projector.restarts == 0
            os.kill(child, signal.SIGKILL)
            await until(lambda: projector.error is not None)  # waiting to replace it
        finally:
            began = asyncio.get_running_loop().time()
            await projector.stop(timeout=30)
            took = asyncio.get_running_loop().time() - began
            driver.close()
        return driver, projector, took

    driver, projector, took = asyncio.run(scenario_())
    assert projector.restarts == 0 and took < 5  # no successor started, none waited for
    check_projection(migrated, driver.run)


def test_successors_that_cannot_catch_up_are_restarted_ever_more_slowly(
    migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database stops accepting the projection (here: its cursor table is gone): each
    successor dies before catching up, and the delay before the next one doubles."""
    monkeypatch.setattr(projector_process, "RESTART_DELAY", 0.1)

    async def scenario_() -> ProjectorProcess:
        driver = Driver(tmp_path)
        projector = await started(migrated, driver)
        try:
            db = create_engine(migrated)
            async with db.begin() as connection:
                await connection.execute(sa.text("DROP TABLE projection_cursor"))
            await db.dispose()
            assert projector.pid is not None
            os.kill(projector.pid, signal.SIGKILL)
            await until(lambda: projector.restarts == 3)
        finally:
            await projector.stop(timeout=30)
            driver.close()
        return projector

    with caplog.at_level(logging.ERROR, logger="mercato.store.projector_process"):
        projector = asyncio.run(scenario_())
    delays = [r.getMessage().rsplit("another in ", 1)[1] for r in caplog.records]
    assert delays[:3] == ["0.1 s", "0.2 s", "0.4 s"]
    assert projector.error is not None and "exited with status 1" in projector.error
