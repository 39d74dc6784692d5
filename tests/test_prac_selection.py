"""PrAC pieces: forgetting counts, prune disagreement, the union and thresholds, index files."""

import json

import pytest
import torch
from safetensors.torch import save_file

from prac_plugin import PracError
from prac_plugin.strategies.prac.forgetting import ForgettingTracker
from prac_plugin.index_files.format import PracIndex
from prac_plugin.strategies.prac.disagreement import predictions
from prac_plugin.index_files.format import compare, describe, labels_sha256, resolve_path


def feed(tracker, sequence):
    """Feed per-epoch correctness: ``sequence[e][i]`` is True when example i is right in epoch e."""
    targets = torch.zeros(len(sequence[0]), dtype=torch.long)
    for epoch in sequence:
        logits = torch.tensor([[1.0, 0.0] if ok else [0.0, 1.0] for ok in epoch])  # class 0 right
        positions = torch.arange(len(epoch))
        order = torch.randperm(len(epoch))  # batches arrive shuffled
        for chunk in order.split(2):
            tracker.update(logits[chunk], targets[chunk], positions[chunk])
        tracker.end_epoch()


def test_forgetting_counts_on_a_hand_made_sequence():
    T, F = True, False
    sequence = [  # columns: stable, learned-then-forgotten twice, never learned, late learner, flip-flop-first-wrong
        [T, T, F, F, F],
        [T, F, F, F, F],
        [T, T, F, F, T],
        [T, F, F, F, T],
        [T, T, F, T, F],
    ]
    tracker = ForgettingTracker(6)  # example 5 never presented
    feed_positions = [row + [None] for row in sequence]
    targets = torch.zeros(5, dtype=torch.long)
    for epoch in feed_positions:
        logits = torch.tensor([[1.0, 0.0] if ok else [0.0, 1.0] for ok in epoch[:5]])
        tracker.update(logits, targets, torch.arange(5))
        tracker.end_epoch()
    assert tracker.forgetting.tolist() == [0, 2, 0, 0, 1, 0]
    assert tracker.never_learned.tolist() == [False, False, True, False, False, False]
    scores = tracker.forgetting_scores()
    assert scores[:5].tolist() == [0.0, 2.0, float("inf"), 0.0, 1.0] and torch.isnan(scores[5])
    assert tracker.critical(0).tolist() == [False, True, True, False, True, False]
    assert tracker.critical(1).tolist() == [False, True, True, False, False, False]  # E_F = 1
    assert tracker.critical(5).tolist() == [False, False, True, False, False, False]  # never learned stays critical
    assert tracker.presentations.tolist() == [5, 5, 5, 5, 5, 0]


def test_forgetting_with_shuffled_batches_and_soft_targets():
    T, F = True, False
    tracker = ForgettingTracker(4)
    feed(tracker, [[T, T, F, T], [F, T, T, T], [T, F, T, T]])
    assert tracker.forgetting.tolist() == [1, 1, 0, 0]
    soft = ForgettingTracker(2)  # mixup-style soft targets count against the dominant class
    soft.update(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.7, 0.3], [0.4, 0.6]]), torch.tensor([0, 1]))
    assert soft.critical().tolist() == [False, True]  # queries fold the pending epoch
    assert soft.last_correct.tolist() == [True, False]


def test_a_partial_epoch_only_moves_the_examples_it_presented():
    tracker = ForgettingTracker(3)
    right, wrong = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    tracker.update(right.repeat(3, 1), torch.zeros(3, dtype=torch.long), torch.arange(3))  # epoch 1: all right
    tracker.end_epoch()
    tracker.update(right, torch.tensor([0]), torch.tensor([0]))  # epoch 2 covers example 0 only
    tracker.end_epoch()
    tracker.update(wrong, torch.tensor([0]), torch.tensor([1]))  # a level ending mid-epoch: example 1, wrong
    assert tracker.forgetting_scores().tolist() == [0.0, 1.0, 0.0]
    assert tracker.presentations.tolist() == [2, 2, 1] and tracker.last_correct.tolist() == [True, False, True]


def test_tracker_state_round_trip():
    tracker = ForgettingTracker(3)
    feed(tracker, [[True, True, False], [False, True, False]])
    again = ForgettingTracker(3)
    again.load_state_dict(tracker.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), tracker.state_dict().values()))
    with pytest.raises(ValueError, match="shape"):
        ForgettingTracker(4).load_state_dict(tracker.state_dict())


class FixedSource:
    """A BatchSource stand-in over fixed feature vectors."""

    def __init__(self, x):
        self.x, self.device, self.world_size = x, torch.device("cpu"), 1
        self.split = list(range(len(x)))

    def batches(self, positions, batch_size, training=False, generator=None, start_batch=0, shard=True):
        for chunk in positions.split(batch_size):
            yield self.x[chunk], None, chunk


def test_prune_disagreement_on_two_fixed_models():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 1.0], [0.2, -3.0]])
    dense = torch.nn.Linear(2, 2, bias=False)
    sparse = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # predicts argmax of (x0, x1)
        sparse.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # second row pruned: class 1 only when x0 < 0 (ties go to 0)
    source = FixedSource(x)
    dense_preds = predictions(dense, source, batch_size=2)
    assert dense_preds.tolist() == [0, 1, 0, 1, 0]
    disagree = predictions(sparse, source, 2) != dense_preds
    assert disagree.tolist() == [False, True, False, True, False]


def make_index(rows, num_rows=10, labels=None):
    labels = labels if labels is not None else torch.arange(num_rows) % 3
    meta = {"dataset": "toy", "split": "train", "num_rows": str(num_rows), "labels_sha256": labels_sha256(labels),
            "features_sha256": "abc", "class_names": json.dumps(["a", "b", "c"])}
    rows = torch.tensor(rows)
    in_range = rows.clamp(max=num_rows - 1)
    return PracIndex(rows, meta, {"labels": labels[in_range], "forgetting": torch.arange(len(rows)).float()}), labels


def signature(labels, num_rows=None, features="abc"):
    return {"dataset": "toy", "split": "train", "num_rows": str(num_rows or len(labels)),
            "labels_sha256": labels_sha256(labels), "features_sha256": features}


def test_index_file_round_trip(tmp_path):
    index, labels = make_index([7, 1, 4])
    path = index.save(tmp_path / "set.prac.safetensors")
    loaded = PracIndex.load(path)
    assert loaded.rows.tolist() == [1, 4, 7]  # sorted, statistics reordered alike
    assert loaded.statistics["forgetting"].tolist() == [1.0, 2.0, 0.0]
    assert loaded.metadata["size"] == "3" and loaded.metadata["format"] == "prac-index"
    loaded.check_dataset(signature(labels))
    info = describe(loaded)
    assert info["size"] == 3 and info["fraction"] == pytest.approx(0.3) and info["class_counts"] == {1: 3}


def test_index_validation_failures(tmp_path):
    index, labels = make_index([1, 4, 7])
    with pytest.raises(PracError, match=r"num_rows \(row count\) is 10 in the file, 11"):
        index.check_dataset(signature(torch.arange(11) % 3))
    shuffled = labels.flip(0)
    with pytest.raises(PracError, match=r"labels_sha256 \(label hash\)"):
        index.check_dataset(signature(shuffled))
    with pytest.raises(PracError, match="features_sha256"):
        index.check_dataset(signature(labels, features="other"))
    bad, _ = make_index([1, 12])
    with pytest.raises(PracError, match="row 12 outside 0..9"):
        bad.check_dataset(signature(labels))
    with pytest.raises(PracError, match="2 of its 3 rows are not in the training split"):
        index.positions_in(torch.tensor([0, 1, 2, 3, 5, 6]))
    assert index.positions_in(torch.tensor([0, 1, 4, 5, 7, 9])).tolist() == [1, 2, 4]
    with pytest.raises(PracError, match="should end with .prac.safetensors"):
        index.save(tmp_path / "set.safetensors")
    with pytest.raises(PracError, match="empty"):
        PracIndex(torch.tensor([], dtype=torch.long), {}).save(tmp_path / "e.prac.safetensors")
    with pytest.raises(PracError, match="duplicates"):
        PracIndex(torch.tensor([3, 1, 3]), {})


def test_corrupt_truncated_foreign_and_missing_files(tmp_path):
    index, _ = make_index([1, 4, 7])
    path = index.save(tmp_path / "set.prac.safetensors")
    truncated = tmp_path / "trunc.prac.safetensors"
    truncated.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(PracError, match="corrupt"):
        PracIndex.load(truncated)
    foreign = tmp_path / "weights.safetensors"
    save_file({"rows": torch.arange(3)}, str(foreign))
    with pytest.raises(PracError, match="is not a PrAC index file"):
        PracIndex.load(foreign)
    with pytest.raises(PracError, match="does not exist"):
        PracIndex.load(tmp_path / "missing.prac.safetensors")
    short = tmp_path / "short.prac.safetensors"  # rows cut but metadata intact
    save_file({"rows": torch.arange(2)}, str(short), metadata={"format": "prac-index", "format_version": "1", "size": "3"})
    with pytest.raises(PracError, match="truncated: 2 rows, metadata says 3"):
        PracIndex.load(short)


def test_hf_paths_go_through_the_hub_file_system(tmp_path, monkeypatch):
    index, _ = make_index([2, 3])
    local = index.save(tmp_path / "hub.prac.safetensors")
    fetched = []

    class FakeFS:
        def get_file(self, remote, destination):
            fetched.append(remote)
            destination_path = destination
            import shutil

            shutil.copy(local, destination_path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfFileSystem", FakeFS)
    monkeypatch.setenv("PRAC_CACHE", str(tmp_path / "cache"))
    loaded = PracIndex.load("hf://datasets/someone/cifar10-prac/resnet20.prac.safetensors")
    assert fetched == ["hf://datasets/someone/cifar10-prac/resnet20.prac.safetensors"] and loaded.rows.tolist() == [2, 3]

    class OfflineFS:
        def get_file(self, remote, destination):
            raise ConnectionError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "HfFileSystem", OfflineFS)
    with pytest.raises(PracError, match="could not be fetched from the Hub: offline mode is enabled"):
        resolve_path("hf://datasets/someone/x/y.prac.safetensors")


def test_compare_overlap_jaccard_and_classes():
    a, _ = make_index([0, 1, 2, 3])
    b, _ = make_index([2, 3, 4, 5, 6, 9])
    result = compare(a, b)
    assert (result["overlap"], result["only_a"], result["only_b"]) == (2, 2, 4)
    assert result["jaccard"] == pytest.approx(2 / 8)
    assert result["per_class"]["a"] == {"a": 2, "b": 3, "both": 1}  # label 0 = rows divisible by 3: [0, 3] vs [3, 6, 9]
    assert result["same_dataset"] is True


def test_early_bird_stops_after_a_window_of_stable_masks(tiny_net):
    from prac_plugin.strategies.prac.early_bird import EarlyBird

    bird = EarlyBird(fraction=0.2, eps=0.08, window=3, ignore=["fc"])
    assert [bird(epoch, tiny_net) for epoch in range(1, 5)] == [False, False, False, True]  # 3 zero distances
    assert bird.distances == [0.0, 0.0, 0.0]
    moving = EarlyBird(fraction=0.2, eps=0.08, window=3, ignore=["fc"])
    for epoch in range(1, 8):
        with torch.no_grad():
            tiny_net.fc1.weight.copy_(torch.randn_like(tiny_net.fc1.weight))  # a new mask every epoch
        assert moving(epoch, tiny_net) is False
    assert min(moving.distances) > 0.08


def test_per_process_trackers_combine_to_the_single_process_statistics():
    """Each example is presented on one process per epoch; max-combining the epoch buffers is exact."""
    generator = torch.Generator().manual_seed(0)
    n, epochs = 40, 6
    single, rank0, rank1 = ForgettingTracker(n), ForgettingTracker(n), ForgettingTracker(n)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        logits = torch.randn(n, 3, generator=generator)
        targets = torch.randint(0, 3, (n,), generator=generator)
        for chunk in order.split(8):  # a global batch of 8, split over two processes as BatchSource does
            single.update(logits[chunk], targets[chunk], chunk)
            rank0.update(logits[chunk[0::2]], targets[chunk[0::2]], chunk[0::2])
            rank1.update(logits[chunk[1::2]], targets[chunk[1::2]], chunk[1::2])
        both = torch.maximum(rank0._epoch, rank1._epoch)  # what all_reduce(MAX) returns on every process
        single.end_epoch()
        rank0.end_epoch(lambda buffer: both.clone())
        rank1.end_epoch(lambda buffer: both.clone())
    for tracker in (rank0, rank1):
        assert torch.equal(tracker.forgetting, single.forgetting) and torch.equal(tracker.critical(), single.critical())
        assert torch.equal(tracker.presentations, torch.full((n,), epochs, dtype=torch.int32))
    assert int(single.forgetting.sum()) > 0  # the sequence did contain forgetting events


def test_early_bird_distance_counts_changed_decisions_among_the_remaining_weights():
    """At density 0.1 (100 of 1,000 weights left), masks whose remaining weights differ in 10 decisions are 0.1
    apart, not 0.01: a distance over all weights would be density times too small and stop far too early."""
    from prac_plugin.strategies.prac.early_bird import EarlyBird, mask_distance

    previous = torch.zeros(1000, dtype=torch.bool)
    previous[:80] = True  # of the 100 remaining weights (positions 0..99), 80 would be kept
    current = previous.clone()
    current[75:80] = False  # 5 kept ones now pruned ...
    current[80:85] = True  # ... and 5 pruned ones now kept: 10 decisions changed
    assert mask_distance(previous, current, remaining=100) == 0.1

    layer = torch.nn.Linear(100, 10, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        alive = layer.weight.view(-1)[:100]
        alive.copy_(torch.arange(1, 101, dtype=torch.float32))  # magnitudes 1..100: the 20 smallest are pruned
    bird = EarlyBird(fraction=0.2, eps=0.08, window=1)
    assert bird(1, layer) is False
    with torch.no_grad():
        alive[:5] += 100.0  # five of the pruned smallest now the largest: five kept ones (21..25) pruned instead
    bird(2, layer)
    assert bird.distances == [0.1]
