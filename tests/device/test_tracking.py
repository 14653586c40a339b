import numpy as np

from device.config import SortingConfig
from device.sorting.decision import UNCERTAIN, decide
from device.sorting.tracking import Detection, Tracker

LABELS = ("2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C")


def onehot(i, p=0.9):
    v = np.full(9, (1 - p) / 8)
    v[i] = p
    return v


def test_items_keep_their_track_while_the_belt_moves_and_stops():
    tr = Tracker(confirm_frames=2, drop_frames=3)
    items_u = [-100.0, -40.0, 30.0]  # belt coordinates; x = u + belt travel
    for belt in [0, 10, 20, 20, 20, 35, 50]:  # the belt stops for three frames
        tr.update([Detection(u + np.random.default_rng(int(belt)).normal(0, 1), 160, onehot(2)) for u in items_u],
                  belt, belt / 1000)
    assert len(tr.tracks) == 3
    assert all(t.hits == 7 for t in tr.tracks.values())


def test_track_dropped_after_misses_and_counted_if_undecided():
    tr = Tracker(confirm_frames=1, drop_frames=2)
    tr.update([Detection(0, 160, onehot(0))], 0, 0)
    assert len(tr.update([], 10, 0.1)) == 0
    dropped = tr.update([], 20, 0.2)
    assert [t.id for t in dropped] == [1]
    assert tr.dropped_undecided == 1


def test_slipping_item_is_followed():
    tr = Tracker(confirm_frames=1, drop_frames=2)
    for k in range(20):  # moves at 80% of the belt speed: u falls 2 mm per 10 mm of belt
        belt = 10.0 * k
        tr.update([Detection(-2.0 * k, 160, onehot(1))], belt, k / 30)
    assert len(tr.tracks) == 1
    assert next(iter(tr.tracks.values())).drift < -0.1


def test_decision_averages_frames_and_respects_the_floor():
    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0, 160, onehot(3, 0.9))], 0, 0)
    tr.update([Detection(0, 160, onehot(3, 0.5))], 1, 0.1)
    t = next(iter(tr.tracks.values()))
    cfg = SortingConfig()
    d = decide(t, LABELS, cfg)
    assert (d.grade, d.gate, d.frames) == ("S", 3, 2)
    assert abs(d.confidence - 0.7) < 1e-6
    assert decide(t, LABELS, SortingConfig(confidence_floor=0.8)).grade == UNCERTAIN


def test_an_item_never_graded_is_uncertain_and_goes_to_the_default_bin():
    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0, 160, None)], 0, 0)
    d = decide(next(iter(tr.tracks.values())), LABELS, SortingConfig())
    assert (d.grade, d.gate) == (UNCERTAIN, None)


def test_grade_c_has_no_gate():
    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0, 160, onehot(8))], 0, 0)
    assert decide(next(iter(tr.tracks.values())), LABELS, SortingConfig()).gate is None


def test_any_view_grade_wins_when_one_view_sees_a_defect():
    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0, 160, onehot(2, 0.9), view=0)], 0, 0, views=3)
    tr.update([Detection(0, 160, onehot(2, 0.9), view=1)], 0, 0, views=3)
    tr.update([Detection(0, 160, onehot(8, 0.8), view=2)], 0, 0, views=3)  # only view 2 sees the rot
    t = next(iter(tr.tracks.values()))
    assert decide(t, LABELS, SortingConfig()).grade == "C"
    assert decide(t, LABELS, SortingConfig(any_view_grades=[])).grade == "M"


def test_a_track_that_was_ever_ambiguous_goes_to_the_default_bin():
    from device.sorting.decision import AMBIGUOUS

    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0, 160, onehot(2))], 0, 0)
    tr.update([Detection(0, 160, onehot(2), ambiguous=True)], 1, 0.03)
    d = decide(next(iter(tr.tracks.values())), LABELS, SortingConfig())
    assert (d.grade, d.gate) == (AMBIGUOUS, None)


def test_an_uncertain_position_is_kept_apart_until_a_trusted_one_clears_it():
    """A frame placed through a broken clock mapping: its positions mark the tracks uncertain (the sorter does not
    decide on them) and give no slip baseline; the next trusted detection clears the mark."""
    tr = Tracker(confirm_frames=2, drop_frames=4)
    items_u = [-124.0, -62.0, 0.0]
    tr.update([Detection(u, 160, onehot(2)) for u in items_u], 0.0, 0.0)
    ids = {round(t.u_mm): t.id for t in tr.tracks.values()}
    tr.update([Detection(u - 10.0, 160, onehot(2), uncertainty_mm=30.0) for u in items_u], 10.0, 0.033)
    assert len(tr.tracks) == 3 and all(t.uncertainty_mm == 30.0 for t in tr.tracks.values())
    tr.update([Detection(u, 160, onehot(2)) for u in items_u], 120.0, 0.066)
    assert {round(t.u_mm): t.id for t in tr.tracks.values()} == ids
    # the slip baseline is the first trusted view: 120 mm of belt with no drift, not 10 mm "lost" in the jump
    assert all(t.hits == 3 and t.uncertainty_mm == 0.0 and t.drift == 0.0 for t in tr.tracks.values())


def test_matching_does_not_widen_for_uncertain_positions():
    """A 50 mm placement error must not let a track take its neighbour's detection: the track splits instead."""
    tr = Tracker(confirm_frames=2, drop_frames=4)
    tr.update([Detection(0.0, 160, onehot(2), uncertainty_mm=50.0)], 0.0, 0.0)
    tr.update([Detection(-45.0, 160, onehot(2))], 10.0, 0.033)
    assert len(tr.tracks) == 2


def test_a_track_split_by_a_misplaced_detection_is_merged_once_both_stand_on_the_same_spot():
    tr = Tracker(confirm_frames=2, drop_frames=4)
    tr.update([Detection(0.0, 160, onehot(2))], 0, 0.0)
    tr.update([Detection(0.5, 160, onehot(2))], 10, 0.033)
    # a frame placed through a wrong clock mapping: the item seems 60 mm away and starts a track of its own
    tr.update([Detection(60.0, 161, onehot(2, 0.8))], 20, 0.066)
    assert len(tr.tracks) == 2
    first, ghost = sorted(tr.tracks.values(), key=lambda t: t.id)
    ghost.u_mm = 0.8  # the link put the mapping right; the sorter re-placed the track
    assert tr.merge_coincident(20) == 1 and list(tr.tracks) == [first.id]
    assert (first.prob_frames, first.hits, tr.merged) == (3, 3, 1)
    assert first.last_capture_ts == 0.066 and first.u_mm == 0.8  # the newer position


def test_touching_items_and_uncertain_positions_are_not_merged():
    tr = Tracker(confirm_frames=1)
    # two items side by side, touching: 22 mm between centres (the thinnest items are 20 mm across)
    tr.update([Detection(0.0, 160, onehot(2)), Detection(22.0, 160, onehot(3))], 0, 0.0)
    assert tr.merge_coincident(0) == 0 and len(tr.tracks) == 2
    # one item seen twice through a broken clock mapping: its position proves nothing until trusted again
    tr.update([Detection(0.0, 160, onehot(2)), Detection(22.0, 160, onehot(3)),
               Detection(5.0, 160, onehot(2), uncertainty_mm=80.0)], 0, 0.033)
    assert tr.merge_coincident(0) == 0 and len(tr.tracks) == 3


def test_a_decided_track_absorbs_its_undecided_twin_and_two_decided_ones_stay():
    tr = Tracker(confirm_frames=1)
    tr.update([Detection(0.0, 160, onehot(2))], 0, 0.0)
    tr.update([Detection(0.0, 160, onehot(2)), Detection(40.0, 160, onehot(2))], 0, 0.033)
    _a, b = sorted(tr.tracks.values(), key=lambda t: t.id)
    b.decided = True
    b.u_mm = 3.0
    assert tr.merge_coincident(0) == 1 and list(tr.tracks) == [b.id]  # the decided one keeps its ejection
    c = next(t for t in tr.tracks.values())
    tr.update([Detection(3.0, 160, onehot(2)), Detection(50.0, 160, onehot(2))], 0, 0.066)
    d = next(t for t in tr.tracks.values() if t.id != c.id)
    d.decided, d.u_mm = True, 4.0
    assert tr.merge_coincident(0) == 0 and len(tr.tracks) == 2


def _belt_of_items(pitch=62.5, n=5):
    return [-150.0 + pitch * k for k in range(n)]


def test_a_frame_placed_with_a_wrong_encoder_count_is_placed_by_its_items():
    """A clock jump not yet seen moves every item of a frame by the same distance. At 40 mm, more than half the
    62.5 mm pitch, nearest-neighbour matching gave each detection to its neighbour's track; the common shift
    puts each back on its own."""
    tr = Tracker(confirm_frames=1, drop_frames=3)
    items = _belt_of_items()
    rng = np.random.default_rng(3)
    for k in range(3):
        tr.update([Detection(u + rng.normal(0, 1), 160, onehot(i)) for i, u in enumerate(items)], 10.0 * k, k / 30)
    ids = {round(t.u_mm / 62.5): t.id for t in tr.tracks.values()}
    belt_read = 30.0 + 40.0  # the belt really moved 10 mm; the count, through the old mapping, says 50
    dets = [Detection(u + 30.0 - belt_read + rng.normal(0, 1), 160, onehot(i)) for i, u in enumerate(items)]
    shift = tr.frame_shift(dets, belt_read)
    assert abs(shift - 40.0) < 3.0
    for d in dets:
        d.u_mm += shift
    tr.update(dets, belt_read - shift, 3 / 30)
    assert len(tr.tracks) == 5
    assert {round(t.u_mm / 62.5): t.id for t in tr.tracks.values()} == ids  # each track kept its own item
    assert all(t.hits == 4 and int(np.argmax(t.mean_probs())) == i
               for i, t in enumerate(sorted(tr.tracks.values(), key=lambda t: t.u_mm)))


def test_without_the_shift_the_tracks_take_their_neighbours_items():
    """The failure the shift prevents, shown on the same frame matched as it comes."""
    tr = Tracker(confirm_frames=1, drop_frames=3)
    items = _belt_of_items()
    for k in range(3):
        tr.update([Detection(u, 160, onehot(i)) for i, u in enumerate(items)], 10.0 * k, k / 30)
    tr.update([Detection(u - 40.0, 160, onehot(i)) for i, u in enumerate(items)], 70.0, 3 / 30)
    # track k followed item k (ids from 1); what its fourth frame added is another item's
    swapped = [t for t in tr.tracks.values()
               if t.hits == 4 and int(np.argmax(t.prob_sum - 3 * onehot(t.id - 1))) != t.id - 1]
    assert len(swapped) >= 3


def test_a_frame_that_matches_is_not_shifted():
    tr = Tracker(confirm_frames=1, drop_frames=3)
    items = _belt_of_items()
    rng = np.random.default_rng(5)
    for k in range(3):
        tr.update([Detection(u + rng.normal(0, 1.5), 160, onehot(1)) for u in items], 10.0 * k, k / 30)
    assert tr.frame_shift([Detection(u + rng.normal(0, 1.5), 160, onehot(1)) for u in items], 30.0) == 0.0
    # one item slips 30 mm behind its track: that is the item, not the count
    dets = [Detection(u, 160, onehot(1)) for u in items]
    dets[2].u_mm -= 30.0
    assert tr.frame_shift(dets, 30.0) == 0.0
    # evenly spaced items a whole pitch off match no more tracks than in place: not moved
    assert tr.frame_shift([Detection(u + 62.5, 160, onehot(1)) for u in items], 30.0) == 0.0
    # a few mm off together (the clock mapping's wobble) is the tracks' to follow, and a pitch plus those
    # few mm, which fits all but one, does not win either
    assert tr.frame_shift([Detection(u - 9.0, 160, onehot(1)) for u in items], 30.0) == 0.0


def test_edge_slivers_and_touching_items_do_not_vote():
    tr = Tracker(confirm_frames=1, drop_frames=3)
    items = _belt_of_items(n=3)
    for k in range(3):
        tr.update([Detection(u, 160, onehot(1)) for u in items], 10.0 * k, k / 30)
    dets = [Detection(items[0] - 40, 160, None), Detection(items[1] - 40, 160, onehot(1), ambiguous=True),
            Detection(items[2] - 40, 160, onehot(1))]
    assert tr.frame_shift(dets, 30.0) == 0.0  # one whole, unambiguous view: a slip or a jump, it cannot tell
