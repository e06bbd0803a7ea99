"""Text is cleaned as open_clip cleans it before tokenising (ftfy, HTML entities twice, white space)."""

from __future__ import annotations

import numpy as np
import pytest

from clipface.models.tokenizer import clean_text

#: What open_clip's ``basic_clean`` + ``whitespace_clean`` make of real people's names as they are often typed.
CASES = [
    ("Sin\u00e9ad O\u2019Connor", "Sin\u00e9ad O'Connor"),  # typographic apostrophe
    ("\uff21\uff4e\uff4e\uff41 \uff2c\uff45\uff45", "Anna Lee"),  # full-width letters
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # unescaped twice, as open_clip does
    ("\ufb01sh \ufb02ow", "fish flow"),  # ligatures
    ("  a\tphoto \n of  Colin   Powell. ", "a photo of Colin Powell."),
    ("Beyonc\u00c3\u00a9", "Beyonc\u00e9"),  # UTF-8 read as Latin-1 (mojibake)
]


@pytest.mark.parametrize(("typed", "clean"), CASES)
def test_clean_text_as_open_clip(typed: str, clean: str) -> None:
    assert clean_text(typed) == clean


def test_a_name_embeds_the_same_however_it_was_typed(tiny) -> None:
    """The encoder cleans before tokenising: each typed form gets its clean form's embedding; other text does not."""
    typed, clean = zip(*CASES)
    a, b = tiny.encode_text(list(typed)), tiny.encode_text(list(clean))
    assert np.allclose(a, b, atol=1e-6)
    other = tiny.encode_text(["Tony Blair"])
    assert not np.allclose(other, b[:1], atol=1e-3)
