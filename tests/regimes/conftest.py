"""Fixtures of the conversion-regime tests: the MiniLM WordPiece tokenizer and tiny model folders."""

import pytest

from regime_support import minilm_tokenizer, tiny_bert, tiny_llama


@pytest.fixture(scope="session")
def wordpiece():
    return minilm_tokenizer()


@pytest.fixture(scope="session")
def decoder_wordpiece():
    return minilm_tokenizer(decoder=True)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, wordpiece):
    """A folder like the MiniLM one: an encoder without a task head (run.py adds one with num_labels) + tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tiny_bert(len(wordpiece)).bert.save_pretrained(folder)
    wordpiece.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, decoder_wordpiece):
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama(decoder_wordpiece).save_pretrained(folder)
    decoder_wordpiece.save_pretrained(folder)
    return folder
