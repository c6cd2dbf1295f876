"""The trace replay of the scaling model on hand-made traces with known answers."""
from __future__ import annotations

import math

import pytest

from layerparallel.scaling import Interconnect, replay

MS = 1_000_000  # nanoseconds


def test_one_process_is_the_sum_of_its_spans():
    r = replay([[("end", 2 * MS)]], Interconnect(1e-6, 1e9))
    assert r["wall"] == pytest.approx(2e-3)
    assert r["compute"] == [pytest.approx(2e-3)]


def test_pipeline_waits_for_the_message():
    net = Interconnect(1e-5, 1e8)
    t0 = [("send", 1 * MS, 1, 7, 1000, 0), ("wait", 0, 0), ("end", 0)]
    t1 = [("recv", 0, 0, 7, 1000, 0), ("wait", 0, 0), ("end", 2 * MS)]
    r = replay([t0, t1], net)
    assert r["wall"] == pytest.approx(1e-3 + 1e-5 + 1000 / 1e8 + 2e-3)
    assert r["finish"][0] == pytest.approx(1e-3)
    assert r["messages"] == 1 and r["bytes"] == 1000


def test_communication_hidden_behind_compute():
    net = Interconnect(1e-5, 1e8)
    t0 = [("send", 1 * MS, 1, 7, 1000, 0), ("end", 0)]
    t1 = [("recv", 0, 0, 7, 1000, 0), ("wait", 5 * MS, 0), ("end", 1 * MS)]
    assert replay([t0, t1], net)["wall"] == pytest.approx(6e-3)


def test_messages_match_in_order_per_source_and_tag():
    net = Interconnect(0.0, 1e12)
    # Rank 0 sends twice on the same tag at 1 ms and 4 ms; rank 1 waits on the second
    # receive first, which must match the second send.
    t0 = [("send", 1 * MS, 1, 3, 8, 0), ("send", 3 * MS, 1, 3, 8, 1), ("end", 0)]
    t1 = [("recv", 0, 0, 3, 8, 0), ("recv", 0, 0, 3, 8, 1), ("wait", 0, 1), ("wait", 0, 0), ("end", 0)]
    r = replay([t0, t1], net)
    assert r["finish"][1] == pytest.approx(4e-3 + 8e-12, rel=1e-12)


def test_allreduce_releases_everyone_after_the_last_arrival():
    net = Interconnect(1e-6, 1e9)
    traces = [[("allreduce", k * MS, 8), ("end", 0)] for k in (1, 3, 2, 1)]
    r = replay(traces, net)
    cost = 2 * math.ceil(math.log2(4)) * (1e-6 + 8 / 1e9)
    assert r["finish"] == [pytest.approx(3e-3 + cost)] * 4


def test_unmatched_receive_and_mismatched_collectives_are_errors():
    net = Interconnect(1e-6, 1e9)
    with pytest.raises(ValueError, match="blocked forever"):
        replay([[("recv", 0, 1, 0, 8, 0), ("wait", 0, 0), ("end", 0)], [("end", 0)]], net)
    with pytest.raises(ValueError, match="calls bcast"):
        replay([[("allreduce", 0, 8), ("end", 0)], [("bcast", 0, 8, 0), ("end", 0)]], net)
    with pytest.raises(ValueError, match="bandwidth"):
        Interconnect(1e-6, 0.0)
