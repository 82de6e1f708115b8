"""Which `hf://` shards a run splits (`shard.hubsplit.hub_kept_whole`): only with more workers than `hf://` shards,
and a shard an earlier run split keeps its tasks whatever the worker count."""

from __future__ import annotations

import pytest
from fakehub import FakeHub, hub_env, make_shards  # noqa: F401  (fixture)

from dalle3_etl.shard.convert import source_fingerprint
from dalle3_etl.shard.hubsplit import hub_kept_whole
from dalle3_etl.sources.resolve import resolve_inputs
from dalle3_etl.store.layout import Layout
from dalle3_etl.store.tasks import write_plan


@pytest.fixture
def sources(hub_env, tmp_path):  # noqa: F811
    with FakeHub(make_shards(2)) as hub:
        hub_env.point_to(hub)
        yield resolve_inputs([hub.uri("data/*.tar")])


def test_hub_shards_are_split_only_with_more_workers_than_hub_shards(sources, tmp_path):
    layout = Layout(tmp_path / "out")
    ids = {s.shard_id for s in sources}
    assert hub_kept_whole(layout, sources, workers=3) == set()
    assert hub_kept_whole(layout, sources, workers=2) == ids
    assert hub_kept_whole(layout, sources[:1], workers=2) == set()
    write_plan(layout, sources[0].shard_id, source_fingerprint(sources[0]), (10_240,))
    assert hub_kept_whole(layout, sources, workers=1) == {sources[1].shard_id}  # its recorded tasks are kept
