"""The shared checks of settings: TypeError for a wrong type, ValueError for a bad value, one message pattern."""

from __future__ import annotations

import pytest

from lightning_matting.validators import check_choice, check_int


def test_check_int_gives_back_good_values_and_names_bad_ones():
    assert check_int("batch_size", 3, minimum=1) == 3
    assert check_int("offset", -4) == -4
    with pytest.raises(ValueError, match=r"^invalid batch_size \(0\): expected an int >= 1$"):
        check_int("batch_size", 0, minimum=1)
    with pytest.raises(TypeError, match=r"^invalid batch_size \(True\): expected an int >= 1$"):
        check_int("batch_size", True, minimum=1)
    with pytest.raises(TypeError, match=r"^invalid offset \('4'\): expected an int$"):
        check_int("offset", "4")


def test_check_choice_names_the_choices():
    assert check_choice("layout", "compare", ("outputs", "compare")) == "compare"
    with pytest.raises(
        ValueError, match=r"^invalid layout \('grid'\): expected one of 'outputs', 'compare'$"
    ):
        check_choice("layout", "grid", ("outputs", "compare"))
