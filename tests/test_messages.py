"""The words of error messages: a bad option value names its kind with the right article."""

from __future__ import annotations

import pytest

from harness import binding
from harness.errors import ConfError


def test_bad_int_option_says_an_int() -> None:
    with pytest.raises(ConfError) as info:
        binding.Pool("daemon_interval_ms:abc")
    text = str(info.value)
    assert "an int from" in text and "a int" not in text, text


def test_bad_size_option_says_a_size() -> None:
    with pytest.raises(ConfError) as info:
        binding.Pool("backup:lots")
    assert "a size from" in str(info.value)
