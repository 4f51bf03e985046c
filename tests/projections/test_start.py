"""A version built from a place in the log (an incremental fix), not from its start."""

from __future__ import annotations

import pytest

from eventstore import ConfigurationError
from eventstore.errors import InvalidArgumentError
from eventstore.subscriptions import AsyncSubscriptionStore
from projections import AsyncProjectionManager
from tests.projections.app import Tally, TallyV2, read_model, replay
from tests.projections.support import REGISTRY, append_ticks, query, running


def replay_after(url: str, position: int) -> dict[str, tuple[int, int, int]]:
    rows = query(
        url,
        "SELECT stream_id, version, data FROM eventstore.events "
        "WHERE global_position > %s ORDER BY stream_id, version",
        (position,),
    )
    return replay(rows)  # type: ignore[arg-type]


async def token_now(url: str) -> str:
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        token = None
        async for page in store.read_all(batch_size=7):
            token = page.token
    assert token is not None
    return token


async def test_a_version_built_from_a_read_all_token_holds_only_what_follows_it(
    url: str,
) -> None:
    before = append_ticks(url, streams=3, per_stream=4, prefix="old")
    token = await token_now(url)
    append_ticks(url, streams=2, per_stream=3, prefix="new")
    append_ticks(url, streams=1, per_stream=2, prefix="old", start=4)  # old-0 goes on
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)
        await manager.prepare(TallyV2(), start=token)
        await manager.prepare(TallyV2(), start=0)  # ignored: it has its checkpoints
    async with running(url, Tally(), TallyV2(), auto_switch=False) as manager:
        await manager.wait_until_caught_up(TallyV2, version=2, timeout=20)
        last = append_ticks(url, streams=1, per_stream=1, prefix="later")
        await manager.wait_for(Tally, last, timeout=20)
        await manager.wait_until_caught_up(TallyV2, version=2, timeout=20)
    built = read_model(url, "read_models.tally_v2")
    assert built == replay_after(url, before.positions[-1])
    assert set(built) == {"new-0", "new-1", "old-0", "later-0"}
    assert built["old-0"][:2] == (2, 6)  # versions 5 and 6 only


async def test_a_version_built_from_a_global_position_holds_the_events_above_it(
    url: str,
) -> None:
    append_ticks(url, streams=2, per_stream=3, prefix="old")
    middle = append_ticks(url, streams=1, per_stream=2, prefix="mid")
    append_ticks(url, streams=2, per_stream=2, prefix="new")
    position = middle.positions[0]  # mid-0@1: from mid-0@2 on
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)
        with pytest.raises(ConfigurationError, match="global position"):
            await manager.prepare(TallyV2(), start=-1)
        with pytest.raises(InvalidArgumentError, match="not a read_all token"):
            await manager.prepare(TallyV2(), start="nonsense")
        await manager.prepare(TallyV2(), start=position)
    async with running(url, Tally(), TallyV2()) as manager:  # auto switch
        await manager.wait_until_caught_up(TallyV2, version=2, timeout=20)
        await eventually_live(manager)
    assert read_model(url) == replay_after(url, position)  # the view: version 2
    assert read_model(url)["mid-0"][:2] == (1, 2)


async def eventually_live(manager: AsyncProjectionManager) -> None:
    switched = await manager.switch("tally", 2, timeout=20)  # or the daemon did already
    assert switched.status == "live"
