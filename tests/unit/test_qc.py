"""Per-genome spike QC (bertgeom.genome.qc): each rule on edited reference genomes.

Every genome is the reference with one edit, so the rule under test is the only one that can
fire; reasons are compared in full, so a reason citing the wrong limit fails.
"""

from __future__ import annotations

import random

import pytest

from bertgeom.genome.process import SpikeProcessor, SpikeResult
from bertgeom.genome.qc import QcThresholds, assess
from bertgeom.resources import reference_genome, spike_coordinates

REF = reference_genome()
S0 = spike_coordinates().start - 1  # 0-based genome position of the first spike base
#: Codons without a stop, for in-frame insertions that add no premature stop codon.
CODONS = ("GCT", "GGA", "AAC", "CCG", "TTC", "CAG", "ATG", "GTC", "AGC", "TGG")


@pytest.fixture(scope="module")
def processor() -> SpikeProcessor:
    """One processor for the module: building minimap2's indexes is the slow part."""
    return SpikeProcessor()


def codons(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(CODONS) for _ in range(n))


def deleted(at: int, length: int) -> str:
    """The reference without ``length`` bases from spike base ``at`` (0-based)."""
    return REF[: S0 + at] + REF[S0 + at + length :]


def inserted(at: int, bases: str) -> str:
    """The reference with ``bases`` inserted before spike base ``at`` (0-based)."""
    return REF[: S0 + at] + bases + REF[S0 + at :]


def with_codes(n: int, code: str = "S") -> str:
    """The reference with ``n`` spike bases replaced by an ambiguity code, 50 nt apart (S = C/G
    never makes a stop codon)."""
    g = list(REF)
    for i in range(n):
        g[S0 + 300 + 50 * i] = code
    return "".join(g)


def qc(processor: SpikeProcessor, genome: str) -> SpikeResult:
    return processor.process("g", genome)


def test_the_reference_is_good(processor):
    result = qc(processor, REF)
    assert (result.qc.status, result.qc.reasons) == ("good", ())
    assert (result.qc.spike_length, result.qc.inserted, result.qc.deleted) == (3822, 0, 0)


# --- spike length and indels --------------------------------------------------------------------


def test_a_real_sized_deletion_stays_good(processor):  # Lambda's is 21 nt
    result = qc(processor, deleted(1500, 30))
    assert (result.qc.status, result.qc.reasons) == ("good", ())
    assert (result.qc.deleted, result.qc.spike_length) == (30, 3792)


def test_a_large_deletion_is_mediocre(processor):
    result = qc(processor, deleted(1500, 90))
    assert result.qc.status == "mediocre"
    assert result.qc.reasons == ("large deletion: 90 nt deleted from the spike > 60",)


def test_a_large_insertion_is_mediocre(processor):
    result = qc(processor, inserted(1500, codons(24)))
    assert result.qc.status == "mediocre"
    assert result.qc.reasons == ("large insertion: 72 nt inserted in the spike > 60",)
    assert result.qc.spike_length == 3894


@pytest.mark.parametrize(
    ("genome", "reasons"),
    [
        (
            deleted(1000, 1500),
            (
                "spike length 2322 nt outside 3700-3900",
                "large deletion: 1500 nt deleted from the spike > 60",
            ),
        ),
        (
            deleted(1000, 300),
            (
                "spike length 3522 nt outside 3700-3900",
                "large deletion: 300 nt deleted from the spike > 60",
            ),
        ),
        (
            inserted(1500, codons(100)),
            (
                "spike length 4122 nt outside 3700-3900",
                "large insertion: 300 nt inserted in the spike > 60",
            ),
        ),
    ],
    ids=["del1500", "del300", "ins300"],
)
def test_a_spike_of_the_wrong_length_is_bad(processor, genome, reasons):
    result = qc(processor, genome)
    assert (result.qc.status, result.qc.reasons) == ("bad", reasons)


def test_indel_and_length_limits_are_configurable(processor):
    big = qc(processor, deleted(1000, 300))
    loose = QcThresholds(max_indel_good=300, min_spike_length=3500)
    again = assess(big.spike, big.calls, loose, genome_length=len(REF) - 300)
    assert (again.status, again.reasons) == ("good", ())
    small = qc(processor, deleted(1500, 30))
    again = assess(small.spike, small.calls, QcThresholds(max_indel_good=20))
    assert again.reasons == ("large deletion: 30 nt deleted from the spike > 20",)
    again = assess(small.spike, small.calls, QcThresholds(min_spike_length=3800))
    assert again.reasons == ("spike length 3792 nt outside 3800-3900",)


# --- mixed sites --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "status", "reasons"),
    [
        (3, "good", ()),
        (4, "mediocre", ("4 ambiguous bases > 3",)),
        (10, "mediocre", ("10 ambiguous bases > 3",)),
        (11, "bad", ("11 ambiguous bases > 10",)),
        (60, "bad", ("60 ambiguous bases > 10",)),
    ],
)
def test_mixed_sites_make_a_genome_mediocre_then_bad(processor, n, status, reasons):
    result = qc(processor, with_codes(n))
    assert result.qc.ambiguous_count == n
    assert (result.qc.status, result.qc.reasons) == (status, reasons)


def test_mixed_site_limits_are_configurable(processor):
    result = qc(processor, with_codes(11))
    again = assess(result.spike, result.calls, QcThresholds(max_ambiguous_mediocre=20))
    assert (again.status, again.reasons) == ("mediocre", ("11 ambiguous bases > 3",))


# --- genome length ------------------------------------------------------------------------------


def test_a_long_genome_is_mediocre_and_a_double_one_bad(processor):
    rng = random.Random(1)
    tail = REF + "".join(rng.choice("ACGT") for _ in range(1500))
    result = qc(processor, tail)
    assert (result.qc.status, result.qc.reasons) == (
        "mediocre",
        ("genome length 31403 nt > 31000",),
    )
    result = qc(processor, REF + REF)
    assert (result.qc.status, result.qc.reasons) == ("bad", ("genome length 59806 nt > 45000",))
    assert result.genome_length == 59806


def test_genome_length_limits_are_configurable_and_optional(processor):
    result = qc(processor, REF + REF)
    loose = QcThresholds(max_genome_length_good=60000, max_genome_length_mediocre=60000)
    assert assess(result.spike, result.calls, loose, genome_length=59806).status == "good"
    assert assess(result.spike, result.calls, QcThresholds()).status == "good"  # no length


# --- notes cite the deciding limit and say what happened ----------------------------------------


def test_n_fraction_cites_the_limit_that_decided(processor):
    some = qc(processor, REF[: S0 + 600] + "N" * 80 + REF[S0 + 680 :])
    assert (some.qc.status, some.qc.reasons) == ("mediocre", ("spike N fraction 0.021 > 0.01",))
    many = qc(processor, REF[: S0 + 600] + "N" * 400 + REF[S0 + 1000 :])
    assert (many.qc.status, many.qc.reasons) == ("bad", ("spike N fraction 0.105 > 0.05",))


def test_no_alignment_at_all(processor):
    rng = random.Random(2)
    for genome in ("N" * 29800, "".join(rng.choice("ACGT") for _ in range(30000))):
        result = qc(processor, genome)
        assert result.spike.method == "none"
        assert result.qc.reasons == (
            "no alignment to the reference genome",
            "spike N fraction 1.000 > 0.05",
        )


def test_a_spike_that_does_not_align_is_not_called_no_alignment(processor):
    # an N run 9 nt shorter than the spike: the two flanks align, the spike columns stay unreached
    result = qc(processor, REF[:S0] + "N" * 3813 + REF[S0 + 3822 :])
    assert (result.spike.method, result.qc.status) == ("genome", "bad")
    assert result.qc.reasons == (
        "spike not aligned: the genome aligns to the reference only outside the spike "
        "(align_method genome)",
        "spike N fraction 1.000 > 0.05",
    )


def test_a_genome_without_a_spike_is_no_spike_not_a_giant_frameshift(processor):
    result = qc(processor, REF[:S0] + REF[S0 + 3822 :])
    assert result.qc.status == "bad"
    assert result.qc.reasons == (
        "no spike: 3821 of 3822 spike columns deleted (the genome lacks the S gene, reference "
        "21563-25384)",
    )
    assert result.calls.mutations == () and not result.qc.frameshift


@pytest.mark.parametrize(("start", "length"), [(937, 1000), (2000, 300)])
def test_an_inverted_segment_inside_the_spike_is_bad(processor, start, length):
    from bertgeom.genome.sequence import reverse_complement

    a, b = S0 + start, S0 + start + length
    result = qc(processor, REF[:a] + reverse_complement(REF[a:b]) + REF[b:])
    assert result.qc.status == "bad"
    assert result.qc.reasons == (
        f"inverted segment in the spike: reference {a + 1}-{b} aligns to the opposite strand "
        "(an inversion or a misassembly)",
    )


def test_a_whole_reverse_complemented_genome_is_not_an_inversion(processor):
    from bertgeom.genome.sequence import reverse_complement

    result = qc(processor, reverse_complement(REF))
    assert result.spike.strand == -1 and result.spike.inverted_ranges == ()
    assert result.qc.status == "good"
