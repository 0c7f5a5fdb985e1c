"""k-mer tokens: vectorised path == plain path, counts, positions, vocabulary files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.resources import spike_reference
from bertgeom.tokens.kmers import (
    KmerSpec,
    decode_kmer,
    encode_kmer,
    has_unknown,
    kmer_codes,
    kmer_codes_and_unknown,
    kmers_reference,
    token_residues,
)
from bertgeom.tokens.vocab import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    build_vocabulary,
    load_vocabulary,
)

ALPHABET = "ACGTN-RYKacgtn_\x00é"


@settings(max_examples=200, deadline=None)
@given(
    seqs=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=80), min_size=1, max_size=6),
    k=st.integers(1, 21),
    stride=st.integers(1, 13),
    mode=st.sampled_from(["aligned", "raw"]),
)
def test_vectorised_kmers_equal_the_plain_implementation(seqs, k, stride, mode):
    spec = KmerSpec(k=k, stride=stride, mode=mode)
    length = max(len(s) for s in seqs) if mode == "aligned" else None
    codes, unknown = kmer_codes_and_unknown(seqs, spec, length)
    longest = max(len(s) for s in seqs)
    for row, seq in enumerate(seqs):
        # every row is padded to the batch's common length, as the model sees it
        plain = kmers_reference(seq + "N" * (longest - len(seq)), spec)
        assert [decode_kmer(int(c), k) for c in codes[row]] == [
            "".join(ch if ch in "ACGT-" else "N" for ch in km.upper().replace("_", "-"))
            for km in plain
        ]
        expect_unknown = [any(ch not in "ACGT-_" for ch in km.upper()) for km in plain]
        assert unknown[row].tolist() == expect_unknown
    assert (has_unknown(codes, k) == unknown).all()


def test_encode_decode_round_trip():
    for kmer in ("ACGTACGTACGT", "A", "-" * 12, "NNNACGT-ACGTTTTTTTTTT"):
        assert decode_kmer(encode_kmer(kmer), len(kmer)) == kmer


def test_token_count_matches_the_paper():
    spec = KmerSpec()  # k=12, stride 9
    assert spec.n_tokens(3822) == 425  # + [CLS] + [SEP] = 427 positions
    assert KmerSpec(mode="raw").n_tokens(3822) == 425
    codes = kmer_codes([spike_reference()], spec, 3822)
    assert codes.shape == (1, 425)


def test_token_positions_map_to_amino_acids():
    spec = KmerSpec()
    res = token_residues(spec, 425)
    assert res[0].tolist() == [1, 4]  # token 1 covers residues 1..4
    assert (res[1:, 0] - res[:-1, 0] == 3).all()  # 9 nt = 3 residues per step
    assert (res[:, 1] - res[:, 0] == 3).all()  # every token spans 4 residues
    assert res[-1, 1] >= 1274  # the last token reaches the stop codon
    # residue r is covered by the tokens whose range contains it: always 1 or 2 tokens
    cover = np.zeros(1280, dtype=int)
    for a, b in res:
        cover[a : b + 1] += 1
    assert set(cover[1:1275]) <= {1, 2}
    # the aligned k-mer at token t is the reference slice of those residues' codons
    ref = spike_reference()
    t = 100
    assert (
        kmers_reference(ref, spec, 3822)[t] == ref[(res[t, 0] - 1) * 3 : (res[t, 0] - 1) * 3 + 12]
    )


def test_vocabulary_rules_and_files(tmp_path):
    ref = spike_reference()
    alt = "A" if ref[905] != "A" else "C"
    mutant = ref[:905] + alt + ref[906:]  # column 905 is in one k-mer only (900..911)
    spec = KmerSpec()
    vocab = build_vocabulary([[ref, ref, mutant]], spec, min_count=2)
    assert vocab.tokens[:5] == SPECIAL_TOKENS
    ids = vocab.encode([ref, mutant, ref[:1000] + "N" + ref[1001:]])
    assert ids.shape == (3, 427)
    assert (ids[:, 0] == CLS_ID).all() and (ids[:, -1] == SEP_ID).all()
    assert (ids[0, 1:-1] != UNK_ID).all() or (ids[0, 1:-1] == UNK_ID).sum() == 1  # N-padded end
    assert (ids[1] == UNK_ID).sum() == (ids[0] == UNK_ID).sum() + 1  # the rare k-mer
    assert (ids[2] == UNK_ID).sum() == (ids[0] == UNK_ID).sum() + 2  # N is in 2 k-mers
    vocab.save(tmp_path)
    again = load_vocabulary(tmp_path)
    assert again == vocab
    assert (again.encode([mutant]) == ids[1]).all()


def test_raw_mode_pads_short_rows():
    spec = KmerSpec(k=3, stride=3, mode="raw")
    vocab = build_vocabulary([["ACGACGACG", "ACG"]], spec)
    ids = vocab.encode(["ACGACGACG", "ACG"])
    assert ids[1].tolist() == [CLS_ID, ids[0, 1], SEP_ID, PAD_ID, PAD_ID]


def test_hf_tokenizer_reads_the_vocabulary(tmp_path):
    transformers = pytest.importorskip("transformers")
    ref = spike_reference()
    deleted = ref[:202] + "------" + ref[208:]  # k-mers with '-' stay whole
    spec = KmerSpec()
    vocab = build_vocabulary([[ref, deleted]], spec)
    vocab.save(tmp_path)
    import bertgeom.model.hf_tokenizer  # noqa: F401 - registers bertgeom's tokenizer class

    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for seq in (ref, deleted):
        words = kmers_reference(seq, spec, 3822)
        hf = tok(" ".join(words))["input_ids"]
        assert hf == vocab.encode([seq])[0].tolist()


def test_code_table_equals_a_dict_lookup():
    from bertgeom.tokens.vocab import CodeTable

    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 1 << 36, 5000))
    ids = rng.permutation(len(codes)) + 5
    table = CodeTable(codes, ids)
    assert table.max_probe > 0  # the collision path is exercised
    probe = np.concatenate([codes, rng.integers(0, 1 << 36, 5000)]).reshape(100, 100)
    expect = dict(zip(codes.tolist(), ids.tolist(), strict=True))
    got = table.lookup(probe, UNK_ID)
    assert got.shape == probe.shape
    assert got.ravel().tolist() == [expect.get(c, UNK_ID) for c in probe.ravel().tolist()]
    assert (
        CodeTable(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).lookup(probe, UNK_ID)
        == UNK_ID
    ).all()


def test_many_rows_cross_the_block_boundary_and_ties_sort_by_kmer():
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT-N"), 40)) for _ in range(300)]  # > one 128-row block
    spec = KmerSpec(k=5, stride=7)
    codes = kmer_codes(seqs, spec, 40)
    for row in (0, 127, 128, 255, 299):
        assert [decode_kmer(int(c), 5) for c in codes[row]] == kmers_reference(seqs[row], spec, 40)
    assert has_unknown(codes[0, 0], 5).shape == ()  # shapes kept, scalars included
    vocab = build_vocabulary([["TTTGA", "AAACG"]], KmerSpec(k=5, stride=5, mode="raw"))
    assert vocab.kmers == ("AAACG", "TTTGA")  # equal counts: k-mer order
