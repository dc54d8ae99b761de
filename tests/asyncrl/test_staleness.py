"""Bounded staleness as pure functions: which groups may be trained, when a prompt may start, and
the batch statistics, on hand-built version tags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from prorl.asyncrl.staleness import may_dispatch, oldest_version, split_fresh, staleness_metrics
from prorl.rollout.base import Completion


def group(*versions: list[int]) -> SimpleNamespace:
    return SimpleNamespace(completions=[Completion([1] * len(v), False, [0.0] * len(v), list(v)) for v in versions])


def test_oldest_version_is_the_oldest_token_of_any_sample():
    assert oldest_version(group([4, 4, 5], [5, 5]).completions) == 4
    assert oldest_version(group([7]).completions) == 7


@pytest.mark.parametrize("k, fresh_ids", [(0, [0]), (1, [0, 1, 3]), (2, [0, 1, 2, 3])])
def test_split_fresh_drops_every_group_with_a_token_older_than_k(k, fresh_ids):
    groups = [group([5, 5]), group([4, 5], [5]), group([3, 4, 5]), group([4], [4])]
    fresh, stale = split_fresh(groups, version=5, max_staleness=k)
    assert [groups.index(g) for g in fresh] == fresh_ids
    assert len(fresh) + len(stale) == len(groups)
    assert all(5 - oldest_version(g.completions) > k for g in stale)


def test_may_dispatch_fills_one_batch_on_policy_and_k_more_ahead():
    # K = 0: only while the trainer waits for the current batch, and only up to one batch
    assert may_dispatch(queued_ahead=0, batch_groups=4, steps_ahead=0, max_staleness=0)
    assert may_dispatch(queued_ahead=3.5, batch_groups=4, steps_ahead=0, max_staleness=0)
    assert not may_dispatch(queued_ahead=4, batch_groups=4, steps_ahead=0, max_staleness=0)
    assert not may_dispatch(queued_ahead=0, batch_groups=4, steps_ahead=1, max_staleness=0)  # during the update
    # K = 2: up to three batches while waiting, two during the update
    assert may_dispatch(queued_ahead=11, batch_groups=4, steps_ahead=0, max_staleness=2)
    assert not may_dispatch(queued_ahead=12, batch_groups=4, steps_ahead=0, max_staleness=2)
    assert may_dispatch(queued_ahead=7, batch_groups=4, steps_ahead=1, max_staleness=2)
    assert not may_dispatch(queued_ahead=8, batch_groups=4, steps_ahead=1, max_staleness=2)


def test_staleness_metrics_by_hand():
    # trained at version 6: samples from versions 6 (0 old tokens), 5-6 (2 of 4 old), 4 (3 of 3 old)
    m = staleness_metrics([group([6, 6], [5, 5, 6, 6]), group([4, 4, 4])], version=6)
    assert m["async/staleness_mean"] == pytest.approx((0 + 1 + 2) / 3)
    assert m["async/staleness_max"] == 2
    assert m["async/stale_token_fraction"] == pytest.approx(5 / 9)
    assert m["async/mixed_version_samples"] == 1
