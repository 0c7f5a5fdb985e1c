"""The spectra measure: the class-stratified subset (first correct genomes in stream order,
whatever the batch size), the merge of consecutive parts (the rule replayed over their logs:
the same subset and values as one stream, whatever the cuts), state round trips, options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bertgeom.geometry.measures.spectra as spectra_measure
from bertgeom.errors import ConfigError
from bertgeom.geometry.capture import Capture
from bertgeom.geometry.measures.base import BatchInfo, Genomes, options_from
from bertgeom.geometry.measures.spectra import (
    LOOK,
    SPECTRA_POINTS,
    Spectra,
    SpectraOptions,
    replay,
)
from bertgeom.geometry.spectra import spectrum
from bertgeom.geometry.stream import LayerView, run_info

N = 24  # genomes captured once for every test


def _tiny_bert():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation="eager",
    )
    return transformers.BertModel(cfg).eval()


@pytest.fixture(scope="module")
def captured():
    """(model, per genome: mask row, per layer the LayerTensors of that genome alone)."""
    model = _tiny_bert()
    g = torch.Generator().manual_seed(1)
    pos = 10
    ids = torch.randint(5, 50, (N, pos), generator=g)
    mask = torch.ones_like(ids)
    for i in range(N):
        mask[i, pos - (i % 4) :] = 0  # four lengths
    ids[mask == 0] = 0
    seen: dict[int, object] = {}
    points = frozenset({"A", "Z", "C", "O", "U", "F", "Y"})
    with Capture(model, seen.__setitem__, points), torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    layers = [seen[i] for i in sorted(seen)]
    return model, mask.bool(), layers


def _slice(t, rows):
    return type(t)(**{k: None if v is None else v[rows] for k, v in vars(t).items()})


def stream(captured, buckets, cuts, n_classes=2, genomes=4, compat=False, lo=0):
    """A Spectra measure fed genomes lo .. lo + len(buckets) in batches ending at ``cuts``."""
    model, mask, layers = captured
    info = run_info(model, [f"c{i}" for i in range(n_classes)])
    m = Spectra(info, SpectraOptions(genomes=genomes, compat=compat))
    buckets = torch.as_tensor(buckets)
    edges = [0, *cuts, len(buckets)]
    with torch.inference_mode():
        for a, b in itertools.pairwise(edges):
            if a == b:
                continue
            rows = slice(lo + a, lo + b)
            batch = BatchInfo(mask=mask[rows], labels=buckets[a:b] % n_classes,
                              keep_maps=torch.zeros(b - a, dtype=torch.bool), start=a)  # fmt: skip
            m.begin_batch(batch)
            for i, t in enumerate(layers):
                m.update(i, LayerView(i, _slice(t, rows), batch, info), batch)
            batch.buckets = buckets[a:b]
            again = m.revisit(batch)  # the driver's second look, here the same tensors
            if again is not None:
                sub = BatchInfo(mask=mask[rows][again], labels=batch.labels[again],
                                keep_maps=batch.keep_maps[again], start=a)  # fmt: skip
                for i, t in enumerate(layers):
                    view = LayerView(i, _slice(_slice(t, rows), again), sub, info)
                    m.update_revisit(i, view, again)
            m.end_batch(batch)
    return m


def _same(a: Spectra, b: Spectra) -> None:
    ba, va = a.subset()
    bb, vb = b.subset()
    assert ba.tolist() == bb.tolist()
    assert va.keys() == vb.keys()
    for p in va:
        np.testing.assert_array_equal(va[p], vb[p])
    assert np.array_equal(a._counts, b._counts)
    sa, sb = a.extra_state(), b.extra_state()
    assert np.array_equal(sa["log_buckets"], sb["log_buckets"])
    assert np.array_equal(sa["log_chosen"], sb["log_chosen"])


def test_replay_is_the_documented_rule():
    # quota 2 per class: class 0 sees wrong, right, right -> closed (2 right); class 1 wrong x3
    considered, chosen, counts = replay(np.array([2, 0, 3, 0, 3, 0, 3, 1]), 2, 2)
    assert chosen.tolist() == [True, True, True, True, True, False, False, True]
    assert considered.tolist() == [True, True, True, True, True, False, True, True]
    assert counts.tolist() == [[2, 1], [1, 2], [3, 4]]
    # a class never right is looked at LOOK x quota times, then closed
    considered, chosen, _ = replay(np.full(20, 2), 2, 1)
    assert considered.sum() == LOOK and chosen.sum() == 1


def test_subset_is_the_first_correct_genomes_whatever_the_batch_size(captured):
    buckets = [2, 0, 1, 0, 0, 3, 1, 1]  # class 0: wrong, right, right, right; class 1: ...
    runs = [stream(captured, buckets, list(range(bs, 8, bs))) for bs in (1, 3, 8)]
    for m in runs:
        assert m.subset()[0].tolist() == [2, 0, 1, 0, 3, 1]
        assert m._counts[:2].tolist() == [[2, 2], [1, 1]]
    for m in runs[1:]:
        _same(m, runs[0])
    genomes = Genomes(np.arange(8).astype(str), np.array(buckets) % 2, np.ones(8, bool), False)
    correct = runs[0].finish(genomes)["spectra"]
    every = runs[0].finish(Genomes(genomes.ids, genomes.labels, genomes.included, True))
    assert correct.groupby("class").n.first().to_dict() == {"c0": 2, "c1": 2}
    assert every["spectra"].groupby("class").n.first().to_dict() == {"c0": 3, "c1": 3}
    assert set(correct.point) == set(SPECTRA_POINTS)
    assert "histogram_entropy_compat" not in correct.columns  # compat off by default


@pytest.mark.parametrize("hold", [1 << 28, 0])
def test_values_are_the_spectra_of_the_chosen_genomes(captured, hold, monkeypatch):
    """Held candidates (decided at end_batch), sure ones (decomposed during the forward pass)
    and those beyond the hold budget (seen again if chosen) all get the spectra of their own
    matrices."""
    monkeypatch.setattr(spectra_measure, "HOLD_BYTES", hold)
    _model, mask, layers = captured
    # quota 2; batches [0 2] (class 0: both sure), [2 0 1] (class 0: two held; class 1: one
    # sure), [3 0 1] (class 0 closed; class 1: two held)
    buckets = [0, 2, 2, 0, 1, 3, 0, 1]
    m = stream(captured, buckets, [2, 5], compat=True)
    chosen_rows = [0, 1, 2, 3, 4, 5, 7]  # class 0: right, wrong, wrong, right; class 1 ...
    assert m.subset()[0].tolist() == [buckets[i] for i in chosen_rows]
    _, values = m.subset()
    rows = torch.tensor(chosen_rows)
    for layer, t in enumerate(layers):
        s = spectrum(t.A[rows], mask[rows], square=True)
        np.testing.assert_allclose(values["A"][:, layer, :, 0], s.effective_rank.double())
        y = spectrum(t.Y[rows].unsqueeze(1), mask[rows])
        np.testing.assert_allclose(values["Y"][:, layer, :, 2], y.numerical_rank.double())
    assert np.isfinite(values["A"][..., 5]).all() and np.isnan(values["Z"][..., 5]).all()


@pytest.mark.parametrize("hold", [1 << 28, 0])
def test_a_class_never_right_stops_offering_candidates(captured, hold, monkeypatch):
    monkeypatch.setattr(spectra_measure, "HOLD_BYTES", hold)  # 0: a second look if chosen
    m = stream(captured, [2] * 12, [4, 8], genomes=2)  # quota 1 per class
    assert m._counts[2].tolist() == [LOOK, 0]
    assert m.subset()[0].tolist() == [2]  # one misclassified kept
    assert len(m.extra_state()["log_buckets"]) == LOOK
    _, values = m.subset()
    assert all(len(v) == 1 and np.isfinite(v[..., :4]).all() for v in values.values())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_merge_of_parts_equals_one_stream(captured, data):
    """2-4 consecutive parts, each streamed from an empty state in its own batches, merged in
    order (left fold and right fold): the same subset, values and log as one stream."""
    n = data.draw(st.integers(4, N), label="genomes")
    n_classes = data.draw(st.integers(1, 3), label="classes")
    buckets = data.draw(
        st.lists(st.integers(0, 2 * n_classes - 1), min_size=n, max_size=n), label="buckets"
    )
    genomes = data.draw(st.integers(0, 8), label="quota total")
    batch_cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=6), label="batches"))
    n_parts = data.draw(st.integers(2, min(4, len(batch_cuts) + 3)), label="parts")
    part_cuts = sorted(
        data.draw(
            st.sets(
                st.sampled_from([0, *batch_cuts, n]), min_size=n_parts - 1, max_size=n_parts - 1
            ),
            label="part cuts",
        )
    )
    kw = dict(n_classes=n_classes, genomes=genomes)
    whole = stream(captured, buckets, batch_cuts, **kw)
    edges = [0, *part_cuts, n]
    parts = []
    for a, b in itertools.pairwise(edges):
        inner = [c - a for c in batch_cuts if a < c < b]
        parts.append(stream(captured, buckets[a:b], inner, lo=a, **kw))
    left = parts[0]
    for p in parts[1:]:
        left.merge(p)
    _same(left, whole)
    fresh = []  # fresh copies of the parts for the other bracketing
    for a, b in itertools.pairwise(edges):
        inner = [c - a for c in batch_cuts if a < c < b]
        fresh.append(stream(captured, buckets[a:b], inner, lo=a, **kw))
    right = fresh[-1]
    for p in reversed(fresh[:-1]):
        p.merge(right)
        right = p
    _same(right, whole)


def test_state_round_trip_and_empty_identity(captured):
    buckets = [0, 2, 1, 0, 3, 1, 0, 0]
    whole = stream(captured, buckets, [3, 5])
    again = stream(captured, [], [])
    again.load_state_dict(whole.state_dict())
    _same(again, whole)
    empty = stream(captured, [], [])
    empty.merge(whole)
    _same(empty, whole)
    whole.merge(stream(captured, [], []))
    _same(whole, empty)
    tampered = whole.state_dict()
    log = tampered["__extra__"]["log_chosen"]["__ndarray__"]
    log[0] = not bool(log[0])
    with pytest.raises(ValueError, match="subset rule"):
        stream(captured, [], []).load_state_dict(tampered)


def test_merge_needs_the_values_of_every_genome_it_chooses(captured):
    later = stream(captured, [], [], genomes=2)
    later._set(np.array([2, 2]), np.array([False, False]), {})  # not a stream's log
    with pytest.raises(ValueError, match="neither part chose"):
        stream(captured, [], [], genomes=2).merge(later)
    a = stream(captured, [0, 0, 0, 0], [], genomes=2)
    with pytest.raises(ValueError, match="cannot merge quotas"):
        a.merge(stream(captured, [0], [], genomes=8))


def test_options_are_validated():
    with pytest.raises(ConfigError, match="genomes must be >= 0"):
        options_from(SpectraOptions, {"genomes": -1}, "config: [analyze.spectra]")
    with pytest.raises(ConfigError, match="must be an integer"):
        options_from(SpectraOptions, {"genomes": "many"}, "config: [analyze.spectra]")
    assert options_from(SpectraOptions, {"compat": "true"}, "x").compat is True


def _varied_classifier():
    """The tiny classifier of ``tiny_stream`` whose prediction is its first k-mer id mod 3 (the
    random one predicts one class for every genome: no choice would wait for a prediction)."""
    import transformers

    from tests.unit import tiny_stream as ts

    class Varied(transformers.BertForSequenceClassification):
        def forward(self, **kw):
            out = super().forward(**kw)
            out.logits = torch.nn.functional.one_hot(kw["input_ids"][:, 1] % 3, 3).float()
            return out

    base = ts.tiny_classifier()
    model = Varied(base.config).eval()
    model.load_state_dict(base.state_dict())
    return model


def _stream_spectra(model, hold, monkeypatch, extra=(), fail_at=None):
    """Spectra (quota 1 per class) and ``extra`` measures streamed through the driver in
    batches of 4 with ``HOLD_BYTES = hold``; counts the second-look layers per batch."""
    from tests.unit import tiny_stream as ts

    monkeypatch.setattr(spectra_measure, "HOLD_BYTES", hold)
    ids, labels = ts.genomes()
    keep = np.zeros(len(labels), bool)
    info = ts.info(model)
    spectra = Spectra(info, SpectraOptions(genomes=3))
    others = [make(info) for make in extra]
    s = ts.Stream(model, [spectra, *others], info, to_class=np.arange(3))
    seen: list[int] = []
    original = spectra.update_revisit

    def counted(layer, view, rows):
        if fail_at is not None and len(seen) == fail_at:
            raise KeyboardInterrupt
        seen.append(int(rows.numel()))
        original(layer, view, rows)

    spectra.update_revisit = counted
    with s, torch.inference_mode():
        for a in range(0, len(ids), ts.BATCH):
            args = (
                ts.batch_inputs(ids[a : a + ts.BATCH]),
                torch.as_tensor(labels[a : a + ts.BATCH]),
            )
            try:
                s.batch(*args, torch.as_tensor(keep[a : a + ts.BATCH]))
            except KeyboardInterrupt:  # an interrupted second look: drop the batch, redo it
                assert s.abort()
                fail_at = None
                seen.append(-1)  # the interruption happened
                s.batch(*args, torch.as_tensor(keep[a : a + ts.BATCH]))
    return spectra, others, seen


def test_second_look_decomposes_only_the_chosen_genomes(monkeypatch):
    """Through the stream driver with no hold budget: the candidates whose choice waits for
    the predictions are seen again in a second forward pass over just the chosen ones, so the
    SVDs are spent on the subset alone; subset and values are those of holding them, and a
    measure streamed beside spectra does not see the second pass."""
    from bertgeom.geometry.measures.cone import Cone

    model = _varied_classifier()
    calls: list[int] = []

    def counted(m, *args, **kw):
        if kw.get("square"):
            calls.append(int(m.shape[0]))
        return spectrum(m, *args, **kw)

    monkeypatch.setattr(spectra_measure, "spectrum", counted)
    held, (cone_held,), looks_held = _stream_spectra(model, 1 << 28, monkeypatch, [Cone])
    calls.clear()
    again, (cone_again,), looks = _stream_spectra(model, 0, monkeypatch, [Cone])
    assert not looks_held and looks  # held: no second look; no budget: second looks
    n_layers = 2
    chosen = len(again.subset()[0])
    considered = len(again.extra_state()["log_buckets"])
    assert 0 < chosen < considered  # some candidates were not chosen
    assert sum(calls) == n_layers * chosen  # and got no SVD
    assert again.subset()[0].tolist() == held.subset()[0].tolist()
    _, va = again.subset()
    _, vh = held.subset()
    for p in va:  # the second pass over fewer rows: the same tensors on the CPU
        np.testing.assert_array_equal(va[p], vh[p])
    for k, v in cone_held.state_dict().items():
        if isinstance(v, dict):
            for name, t in v.items():
                if isinstance(t, torch.Tensor):
                    torch.testing.assert_close(cone_again.state_dict()[k][name], t)


def test_an_interrupted_second_look_leaves_the_finished_batches(monkeypatch):
    """A signal inside the second pass: ``Stream.abort`` drops the batch (the state is that of
    the finished batches) and the batch streamed again gives the uninterrupted result."""
    model = _varied_classifier()
    whole, _, looks = _stream_spectra(model, 0, monkeypatch)
    redone, _, redone_looks = _stream_spectra(model, 0, monkeypatch, fail_at=1)
    assert looks and -1 in redone_looks
    _same(redone, whole)


@pytest.mark.parametrize("cuts", [[4], [4, 8], [8]])
def test_parts_with_second_looks_merge_into_one_stream(monkeypatch, cuts):
    """Through the driver, no hold budget: parts cut at batch boundaries (each from an empty
    state, so with other second looks than the whole stream's) merge into the whole stream's
    subset and values (bitwise on the CPU)."""
    from tests.unit import tiny_stream as ts

    monkeypatch.setattr(spectra_measure, "HOLD_BYTES", 0)
    model = _varied_classifier()
    ids, labels = ts.genomes()
    keep = np.zeros(len(labels), bool)
    info = ts.info(model)

    def make():
        return Spectra(info, SpectraOptions(genomes=3))

    looks: list[int] = []
    original = Spectra.update_revisit

    def counted(self, layer, view, rows):
        looks.append(layer)
        original(self, layer, view, rows)

    monkeypatch.setattr(Spectra, "update_revisit", counted)
    whole, _ = ts.streamed(model, make, ids, labels, keep)
    assert looks  # the whole stream took second looks
    merged, _ = ts.streamed(model, make, ids, labels, keep, cuts=cuts)
    _same(merged, whole)
