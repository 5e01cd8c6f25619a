"""rbdlib.text (the corpus, its vocabulary, split and windows) and models.CharTransformer (shapes, causality, size)."""

import gzip
import hashlib

import pytest
import torch

from rbdlib import text
from rbdlib.data import DatasetFormatError, DatasetNotFoundError
from rbdlib.models import CharTransformer, count_parameters

SENTENCES = ("The hacker wrote a kludge at three in the morning. ", "A crufty program is hard to read! ",
             "Who said: foo, bar and baz? ")
JARGON_SHA256 = "40dfb4b98191a670a09a183d5798d50f243d23fdbd1495dcc0aca2ce5895ba97"


def sample_text(n: int = 300) -> str:
    return "".join(SENTENCES[(i * 7) % 3] for i in range(n))


@pytest.fixture
def no_system_corpus(monkeypatch, tmp_path):
    """Only the folders a test names are searched: no $RBDLIB_DATA, an empty cache, no Debian package."""
    monkeypatch.delenv("RBDLIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(text, "SYSTEM_DIR", str(tmp_path / "no-package"))


# ------------------------------------------------------------------------------------------- reading and finding
def test_plain_and_gzip_files_read_alike(tmp_path):
    body = sample_text() + "naïve café ✓\n"
    (tmp_path / "a.txt").write_text(body, encoding="utf-8")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write(body)
    assert text.read_text(tmp_path / "a.txt") == text.read_text(tmp_path / "a.txt.gz") == body


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        text.read_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="not UTF-8 text: byte 3"):
        text.read_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="holds no text"):
        text.read_text(tmp_path / "empty.txt")
    (tmp_path / "broken.txt.gz").write_bytes(gzip.compress(b"hello world" * 100)[:40])
    with pytest.raises(DatasetFormatError, match="not a readable gzip file"):
        text.read_text(tmp_path / "broken.txt.gz")
    (tmp_path / "big.txt").write_text("x" * 1001)
    with pytest.raises(DatasetFormatError, match="more than max_bytes=1,000"):
        text.read_text(tmp_path / "big.txt", max_bytes=1000)


def test_a_gzip_that_unpacks_past_the_limit_is_refused_without_unpacking_it(tmp_path):
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(gzip.compress(b"a" * 10_000_000))   # 10 kB that unpack to 10 MB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DatasetFormatError, match="unpacks to more than max_bytes=100,000"):
        text.read_text(bomb, max_bytes=100_000)


def test_the_corpus_is_found_in_root_then_rbdlib_data_then_the_package(tmp_path, monkeypatch, no_system_corpus):
    with pytest.raises(DatasetNotFoundError) as error:
        text.find_corpus()
    assert "apt-get install jargon-text" in str(error.value) and "public domain" in str(error.value)
    assert str(tmp_path / "no-package") in str(error.value)
    system = tmp_path / "no-package"
    system.mkdir()
    (system / "jargon.txt.gz").write_bytes(gzip.compress(sample_text().encode()))
    assert text.find_corpus() == system / "jargon.txt.gz"
    (tmp_path / "data" / "jargon").mkdir(parents=True)
    (tmp_path / "data" / "jargon" / "jargon.txt").write_text(sample_text(10))
    monkeypatch.setenv("RBDLIB_DATA", str(tmp_path / "data"))
    assert text.find_corpus() == tmp_path / "data" / "jargon" / "jargon.txt"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "jargon.txt").write_text(sample_text(20))
    assert text.find_corpus(root=tmp_path / "mine") == tmp_path / "mine" / "jargon.txt"
    corpus = text.load_corpus(root=tmp_path / "mine")
    assert corpus.name == "jargon" and len(corpus.train) + len(corpus.val) == len(sample_text(20))


# ------------------------------------------------------------------------------------------- vocabulary and split
def test_vocabulary_round_trips_and_names_what_it_lacks():
    vocab = text.Vocabulary.of(sample_text())
    assert vocab.chars == "".join(sorted(set(sample_text())))
    assert vocab.decode(vocab.encode(sample_text())) == sample_text()
    with pytest.raises(ValueError, match="'#' are not in the vocabulary"):
        vocab.encode("foo#")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([0, vocab.size])


def test_the_split_is_deterministic_contiguous_and_complete(tmp_path):
    body = sample_text()
    (tmp_path / "t.txt").write_text(body)
    a, b = text.load_corpus(tmp_path / "t.txt"), text.load_corpus(tmp_path / "t.txt")
    assert a.train.equal(b.train) and a.val.equal(b.val)
    assert len(a.val) == round(0.1 * len(body)) and len(a.train) + len(a.val) == len(body)
    assert a.vocab.decode(a.val) in body   # one contiguous block of the text
    other = text.load_corpus(tmp_path / "t.txt", split_seed=1)
    assert not other.val.equal(a.val)
    assert a.describe() == dict(corpus="t.txt", sha256=hashlib.sha256(body.encode()).hexdigest(), chars=len(body),
                                vocab=a.vocab.size, val_fraction=0.1, split_seed=0)


def test_bad_split_arguments_are_refused():
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        text.from_text("abc" * 10, val_fraction=1.0)
    with pytest.raises(ValueError, match="split_seed must be a non-negative int"):
        text.from_text("abc" * 10, split_seed=-1)
    with pytest.raises(ValueError, match="too short"):
        text.from_text("ab", val_fraction=0.5)
    with pytest.raises(ValueError, match="non-empty str"):
        text.from_text("")


# ------------------------------------------------------------------------------------------- windows
def test_windows_are_a_pure_function_of_seed_and_step():
    corpus = text.from_text(sample_text())
    x, y = text.windows(corpus.train, 8, 32, seed=3, step=5)
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    again = text.windows(corpus.train, 8, 32, seed=3, step=5)
    assert x.equal(again[0]) and y.equal(again[1])
    assert not x.equal(text.windows(corpus.train, 8, 32, seed=3, step=6)[0])
    assert not x.equal(text.windows(corpus.train, 8, 32, seed=4, step=5)[0])
    assert x[:, 1:].equal(y[:, :-1])
    assert all(corpus.vocab.decode(torch.cat([row, target[-1:]])) in corpus.vocab.decode(corpus.train)
               for row, target in zip(x, y))


def test_every_offset_can_be_drawn_and_none_past_the_end():
    tokens = torch.arange(20)
    starts = torch.cat([text.windows(tokens, 64, 4, seed=0, step=s)[0][:, 0] for s in range(20)])
    assert set(starts.tolist()) == set(range(16))   # 20 tokens: windows of 4 and their targets start at 0..15


def test_eval_windows_cover_the_split_evenly_and_stop_at_its_end():
    x, y = text.eval_windows(torch.arange(1000), context=10, count=5)
    assert x[:, 0].tolist() == [0, 247, 494, 742, 989] and y[-1, -1].item() == 999
    assert len(text.eval_windows(torch.arange(30), context=10, count=100)[0]) == 2   # at most (n - 1) // context


def test_bad_window_arguments_are_refused():
    tokens = torch.arange(10)
    with pytest.raises(ValueError, match="cannot hold one window of context 10"):
        text.windows(tokens, 1, 10, seed=0, step=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        text.windows(tokens, 0, 4, seed=0, step=0)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        text.windows(tokens, 1, 4, seed=0, step=-1)
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        text.windows(tokens.float(), 1, 4, seed=0, step=0)


def test_the_jargon_file_when_installed():
    try:
        path = text.find_corpus()
    except DatasetNotFoundError:
        pytest.skip("the Jargon File is not installed (apt-get install jargon-text; CI installs it)")
    corpus = text.load_corpus()
    assert corpus.source_path == str(path) and corpus.sha256 == JARGON_SHA256
    assert (len(corpus.train), len(corpus.val), corpus.vocab.size) == (1_456_881, 161_876, 155)
    assert "hacker" in corpus.vocab.decode(corpus.val[:20_000])


# ------------------------------------------------------------------------------------------- the model
def test_char_transformer_shapes_and_size():
    model = CharTransformer(vocab=155, seed=0)
    assert count_parameters(model) == 829_568
    # embeddings (155 + 128) x 128, 4 blocks of 2 LayerNorms, qkv, projection and MLP, a final LayerNorm; no head
    block = 2 * 2 * 128 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128)
    assert count_parameters(model) == (155 + 128) * 128 + 4 * block + 2 * 128
    assert model(torch.zeros(3, 128, dtype=torch.long)).shape == (3, 128, 155)
    assert model(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 155)
    small = CharTransformer(vocab=20, context=16, width=32, layers=2, heads=4)
    assert 0.5e6 <= count_parameters(model) <= 2e6 and count_parameters(small) < count_parameters(model)


def test_the_head_is_the_token_embedding():
    model = CharTransformer(vocab=30, context=8, width=16, layers=1, heads=2, seed=0)
    x = torch.randint(0, 30, (2, 8), generator=torch.Generator().manual_seed(0))
    h = model.ln(model.blocks[0](model.embed(x) + model.position.weight[:8]))
    assert torch.allclose(model(x), h @ model.embed.weight.T)
    assert not any(p.shape == (30, 16) for name, p in model.named_parameters() if not name.startswith("embed"))


def test_changing_a_later_token_never_changes_earlier_logits():
    model = CharTransformer(vocab=50, context=64, width=32, layers=2, heads=4, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50, (3, 64), generator=gen)
    for j in (1, 17, 40, 63):
        changed = x.clone()
        changed[:, j:] = (changed[:, j:] + 1 + torch.randint(0, 48, (3, 64 - j), generator=gen)) % 50
        before, after = model(x), model(changed)
        assert before[:, :j].equal(after[:, :j]), j                 # bit for bit: nothing flows backwards
        assert not torch.allclose(before[:, j], after[:, j]), j     # and the changed position does see it


def test_initialisation_is_seeded_and_gpt2_like():
    a, b = CharTransformer(40, seed=3), CharTransformer(40, seed=3)
    assert all(p.equal(q) for p, q in zip(a.parameters(), b.parameters()))
    assert not a.embed.weight.equal(CharTransformer(40, seed=4).embed.weight)
    assert abs(a.embed.weight.std().item() - 0.02) < 0.002
    assert abs(a.blocks[0].proj.weight.std().item() - 0.02 / 8 ** 0.5) < 0.001   # residual writes: / sqrt(2 layers)
    assert a.blocks[0].qkv.bias.abs().sum() == 0


def test_bad_model_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="width 30 must be a multiple of heads 4"):
        CharTransformer(10, width=30, heads=4)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        CharTransformer(10, layers=0)
    model = CharTransformer(10, context=8, width=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="t <= context 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
