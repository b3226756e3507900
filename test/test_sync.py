"""The approximate-time and latest policies against hand-made stamp sequences (no ROS needed)."""

from __future__ import annotations

import random

import pytest

from mmdrfuse_ros.nodes.sync import ApproximateTimePolicy, LatestPolicy, validate_sync_params

MS = 1_000_000  # nanoseconds


def run(events: list[tuple[int, int]], queue_size: int = 10, slop: float = 0.02, n: int = 2):
    """Feed (input index, stamp ns) events; messages are (index, stamp) tuples. Returns sets."""
    policy = ApproximateTimePolicy(n, queue_size, slop)
    seen: list[tuple] = []
    policy.register_callback(lambda *msgs: seen.append(msgs))
    returned = [policy.add(i, t, (i, t)) for i, t in events]
    assert [r for r in returned if r is not None] == seen  # return value == callback
    return seen, policy


def stamps(sets: list[tuple]) -> list[tuple[int, ...]]:
    return [tuple(msg[1] for msg in s) for s in sets]


def test_identical_stamps_pair_once_in_input_order():
    events = []
    for k in range(5):
        events += [(0, k * 100 * MS), (1, k * 100 * MS)]
    sets, policy = run(events)
    assert stamps(sets) == [(k * 100 * MS,) * 2 for k in range(5)]
    assert all(s[0][0] == 0 and s[1][0] == 1 for s in sets)  # ordered by input, not arrival
    assert policy.queued() == [0, 0]


def test_thermal_9hz_rgb_30hz_each_thermal_gets_its_nearest_rgb():
    # thermal (input 0) every 1/9 s, RGB (input 1) every 1/30 s, arriving in stamp order
    thermal = [round(k * 1e9 / 9) for k in range(18)]
    rgb = [round(k * 1e9 / 30) for k in range(60)]
    events = sorted([(0, t) for t in thermal] + [(1, t) for t in rgb], key=lambda e: (e[1], e[0]))
    sets, _ = run(events, queue_size=10, slop=0.02)
    got = stamps(sets)
    # expected: the nearest RGB within slop (strictly less than 20 ms away)
    expected = []
    for t in thermal:
        nearest = min(rgb, key=lambda r: abs(r - t))
        if abs(nearest - t) < 20 * MS:
            expected.append((t, nearest))
    assert got == expected
    assert len(got) == 18  # every thermal frame is within 1/60 s of an RGB frame
    assert len({s[1] for s in got}) == len(got)  # no RGB frame used twice


def test_sets_never_span_slop_or_more():
    sets, _ = run([(0, 0), (1, 20 * MS)], slop=0.02)
    assert sets == []  # exactly slop apart: no pair
    sets, _ = run([(0, 0), (1, 20 * MS - 1)], slop=0.02)
    assert stamps(sets) == [(0, 20 * MS - 1)]
    sets, _ = run([(1, 50 * MS), (0, 0), (0, 100 * MS)], slop=0.02)
    assert sets == []  # 50 ms from both


def test_each_message_is_used_at_most_once():
    # two thermal frames near one RGB frame: the second finds nothing left
    sets, policy = run([(1, 10 * MS), (0, 5 * MS), (0, 15 * MS)], slop=0.02)
    assert stamps(sets) == [(5 * MS, 10 * MS)]
    assert policy.queued() == [1, 0]
    # a later RGB frame then pairs with the waiting thermal frame
    sets2 = policy.add(1, 20 * MS, (1, 20 * MS))
    assert sets2 is not None and (sets2[0][1], sets2[1][1]) == (15 * MS, 20 * MS)


def test_nearest_candidate_wins_and_older_unmatched_stay_queued():
    sets, policy = run([(1, 0), (1, 10 * MS), (0, 8 * MS)], slop=0.02)
    assert stamps(sets) == [(8 * MS, 10 * MS)]
    assert policy.queued() == [0, 1]  # RGB at 0 stays until evicted, as message_filters does


def test_queue_size_evicts_oldest_stamp_and_counts_it():
    events = [(1, k * 33 * MS) for k in range(5)]  # 5 RGB, queue of 3
    sets, policy = run(events, queue_size=3)
    assert sets == [] and policy.queued() == [0, 3]
    assert policy.evicted == [0, 2]
    # a thermal frame matching an evicted RGB stamp finds nothing
    assert policy.add(0, 0, (0, 0)) is None
    # one matching a kept RGB stamp pairs
    got = policy.add(0, 132 * MS, (0, 132 * MS))
    assert got is not None and got[1][1] == 132 * MS


def test_late_message_older_than_full_queue_is_dropped_at_once():
    policy = ApproximateTimePolicy(2, 2, 0.02)
    policy.add(0, 100 * MS, "t100")
    policy.add(0, 200 * MS, "t200")
    policy.add(1, 5 * MS, "r5")  # other input: fine
    assert policy.add(0, 0, "t0") is None  # would pair with r5, but is evicted on arrival
    assert policy.evicted == [1, 0] and policy.queued() == [2, 1]


def test_duplicate_stamp_replaces_and_is_counted():
    policy = ApproximateTimePolicy(2, 10, 0.02)
    policy.add(0, 0, "first")
    policy.add(0, 0, "second")
    assert policy.replaced == [1, 0]
    assert policy.add(1, 0, "rgb") == ("second", "rgb")


def test_three_inputs_need_all_within_slop():
    sets, _ = run([(0, 0), (1, 15 * MS), (2, 30 * MS)], n=3, slop=0.02)
    assert sets == []  # 30 ms span
    sets, _ = run([(0, 0), (1, 15 * MS), (2, 5 * MS)], n=3, slop=0.02)
    assert stamps(sets) == [(0, 15 * MS, 5 * MS)]


def test_bursts_and_gaps():
    # RGB burst of 5 frames 1 ms apart, a 1 s gap, then thermal frames
    events = [(1, 1000 * MS + k * MS) for k in range(5)]
    events += [(0, 500 * MS), (0, 1002 * MS), (0, 1003 * MS), (0, 2000 * MS)]
    sets, policy = run(events, slop=0.02)
    assert stamps(sets) == [(1002 * MS, 1002 * MS), (1003 * MS, 1003 * MS)]
    assert policy.queued() == [2, 3]


def test_random_sequences_keep_the_invariants():
    rng = random.Random(5)
    for _ in range(50):
        events = [(rng.randrange(2), rng.randrange(0, 300) * MS) for _ in range(60)]
        sets, _ = run(events, queue_size=rng.randint(1, 6), slop=rng.choice([0.005, 0.02]))
        ids = [id(m) for s in sets for m in s]
        assert len(ids) == len(set(ids))  # at most once
        for s in sets:
            assert abs(s[0][1] - s[1][1]) < 20 * MS  # never across the largest slop
            assert s[0][0] == 0 and s[1][0] == 1


def test_same_result_as_message_filters_where_installed():
    message_filters = pytest.importorskip("message_filters")
    from rclpy.time import Time

    class Header:
        def __init__(self, ns: int):
            self.stamp = Time(nanoseconds=ns)

    class Msg:
        def __init__(self, i: int, ns: int):
            self.header, self.key = Header(ns), (i, ns)

    rng = random.Random(7)
    for _ in range(30):
        events = [(rng.randrange(2), rng.randrange(0, 200) * MS) for _ in range(40)]
        queue, slop = rng.randint(1, 5), 0.02
        inputs = [message_filters.SimpleFilter() for _ in range(2)]
        theirs: list = []
        sync = message_filters.ApproximateTimeSynchronizer(inputs, queue, slop)
        sync.registerCallback(lambda *m, out=theirs: out.append(tuple(x.key for x in m)))
        for i, t in events:
            inputs[i].signalMessage(Msg(i, t))
        ours, _ = run(events, queue_size=queue, slop=slop)
        assert [tuple(m for m in s) for s in ours] == theirs


@pytest.mark.parametrize(("queue_size", "slop"), [(0, 0.1), (5, 0.0), (5, -1.0)])
def test_bad_parameters_are_refused(queue_size, slop):
    with pytest.raises(ValueError, match=r"queue_size|slop"):
        validate_sync_params(queue_size, slop)
    with pytest.raises(ValueError):
        ApproximateTimePolicy(2, queue_size, slop)


# --------------------------------------------------------------------------- latest policy
THERMAL, RGB = 0, 1


def run_latest(events: list[tuple[int, int]], queue_size: int = 10, slop: float = 0.05):
    """Feed (index, stamp) events to a LatestPolicy whose primary input is RGB (the last)."""
    policy = LatestPolicy(2, queue_size, slop)
    seen: list[tuple] = []
    policy.register_callback(lambda *msgs: seen.append(msgs))
    returned = [policy.add(i, t, (i, t)) for i, t in events]
    assert [r for r in returned if r is not None] == seen
    return seen, policy, returned


def test_latest_pairs_each_rgb_at_once_with_the_newest_thermal_within_slop():
    # thermal 9 Hz, RGB 30 Hz, arriving in stamp order
    thermal = [round(k * 1e9 / 9) for k in range(18)]
    rgb = [round(k * 1e9 / 30) for k in range(60)]
    events = sorted([(THERMAL, t) for t in thermal] + [(RGB, t) for t in rgb],
                    key=lambda e: (e[1], e[0]))  # fmt: skip
    sets, _, returned = run_latest(events, slop=0.05)
    for (index, stamp), got in zip(events, returned, strict=True):
        if index == THERMAL:
            continue
        arrived = [t for i, t in events[: events.index((index, stamp)) + 1] if i == THERMAL]
        near = [t for t in arrived if abs(t - stamp) < 50 * MS]
        if near:  # emitted on the RGB frame's own arrival, with the newest thermal within slop
            assert got == ((THERMAL, max(near)), (RGB, stamp))
        else:
            assert got is None
    assert len({s[1] for s in sets}) == len(sets)  # each RGB frame at most once
    assert len(sets) > len(thermal)  # a thermal frame serves several RGB frames


def test_latest_does_not_wait_for_a_nearer_thermal_frame_still_on_its_way():
    # the thermal camera delivers later than the RGB one (as in the synthetic bag)
    events = [(THERMAL, 0), (RGB, 21 * MS), (THERMAL, 33 * MS), (RGB, 54 * MS)]
    _, _, returned = run_latest(events, slop=0.05)
    assert returned[1] == ((THERMAL, 0), (RGB, 21 * MS))  # at once, with the older one
    assert returned[2] is None  # the nearer thermal frame, once here, re-emits nothing
    assert returned[3] == ((THERMAL, 33 * MS), (RGB, 54 * MS))
    # approximate time, for comparison, waits and pairs by nearness
    approx, _ = run(events, slop=0.05)
    assert stamps(approx) == [(0, 21 * MS), (33 * MS, 54 * MS)]


def test_latest_rgb_waits_for_a_thermal_partner_and_stale_ones_are_dropped():
    _, policy, returned = run_latest(
        [(RGB, 0), (RGB, 33 * MS), (RGB, 66 * MS), (THERMAL, 60 * MS)], slop=0.05
    )
    # nothing to pair with yet; the thermal frame completes the newest waiting RGB frame
    assert returned[:3] == [None, None, None]
    assert returned[3] == ((THERMAL, 60 * MS), (RGB, 66 * MS))
    assert policy.queued() == [1, 0]  # the older RGB frames were stale: dropped
    assert policy.evicted == [0, 2]
    # outside slop: no pair
    assert policy.add(RGB, 200 * MS, (RGB, 200 * MS)) is None


def test_latest_uses_the_newest_stamp_not_the_last_arrival_and_respects_slop():
    _, _, returned = run_latest(
        [(THERMAL, 40 * MS), (THERMAL, 20 * MS), (RGB, 30 * MS), (RGB, 90 * MS)], slop=0.05
    )
    assert returned[2] == ((THERMAL, 40 * MS), (RGB, 30 * MS))
    assert returned[3] is None  # 50 ms from the newest thermal frame: not strictly within slop


def test_latest_random_sequences_keep_the_invariants():
    rng = random.Random(11)
    for _ in range(50):
        events = [(rng.randrange(2), rng.randrange(0, 300) * MS) for _ in range(60)]
        sets, policy, _ = run_latest(events, queue_size=rng.randint(1, 6),
                                     slop=rng.choice([0.005, 0.02]))  # fmt: skip
        rgb_ids = [id(s[1]) for s in sets]
        assert len(rgb_ids) == len(set(rgb_ids))  # each RGB message at most once
        for s in sets:
            assert abs(s[0][1] - s[1][1]) < 20 * MS
            assert s[0][0] == THERMAL and s[1][0] == RGB
        assert all(q <= policy.queue_size for q in policy.queued())


def test_bad_sync_policy_is_refused():
    with pytest.raises(ValueError, match="sync_policy"):
        validate_sync_params(5, 0.05, "nearest")
    with pytest.raises(ValueError):
        LatestPolicy(2, 0, 0.05)
