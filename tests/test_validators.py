"""The shared checks of settings: TypeError for a wrong type, ValueError for a bad value, one message pattern."""

from __future__ import annotations

import pytest

from lightning_matting.validators import check_choice, check_int, check_number, check_size


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


def test_check_number_gives_back_floats_within_the_bounds_and_names_bad_ones():
    assert check_number("shadow", 1, minimum=0, maximum=1) == 1.0
    assert check_number("offset", -2.5) == -2.5
    with pytest.raises(ValueError, match=r"^invalid shadow \(1\.5\): expected a number in \[0, 1\]$"):
        check_number("shadow", 1.5, minimum=0, maximum=1)
    with pytest.raises(ValueError, match=r"^invalid learning_rate \(-1\.0\): expected a number >= 0$"):
        check_number("learning_rate", -1.0, minimum=0)
    with pytest.raises(ValueError, match=r"^invalid gain \(nan\): expected a number <= 2$"):
        check_number("gain", float("nan"), maximum=2)
    with pytest.raises(TypeError, match=r"^invalid offset \(False\): expected a number$"):
        check_number("offset", False)
    with pytest.raises(TypeError, match=r"^invalid shadow \('0\.5'\): expected a number in \[0, 1\]$"):
        check_number("shadow", "0.5", minimum=0, maximum=1)


def test_check_number_takes_exclusive_bounds():
    assert check_number("timeout", float("inf"), above=0) == float("inf")
    assert check_number("backbone_scale", 0.5, above=0, maximum=0.5) == 0.5
    for value in (0, -1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"^invalid timeout \({value!r}\): expected a number > 0$"):
            check_number("timeout", value, above=0)
    with pytest.raises(ValueError, match=r"^invalid noise \(1\): expected a number in \[0, 1\)$"):
        check_number("noise", 1, minimum=0, below=1)
    with pytest.raises(ValueError, match=r"^invalid backbone_scale \(0\): expected a number in \(0, 0\.5\]$"):
        check_number("backbone_scale", 0, above=0, maximum=0.5)
    with pytest.raises(TypeError, match=r"^invalid gain \(None\): expected a number < 2$"):
        check_number("gain", None, below=2)


def test_check_size_gives_back_a_pair_and_names_bad_ones():
    assert check_size("resize", [96, 64]) == (96, 64)
    with pytest.raises(
        ValueError, match=r"^invalid resize \(\(96, 0\)\): expected \(width, height\), two ints >= 1$"
    ):
        check_size("resize", (96, 0))
    for value in ((96,), (96, 64.0), (True, 64), "96x64", 96):
        with pytest.raises(
            TypeError, match=r"^invalid train_size \(.*\): expected \(width, height\), two ints >= 1$"
        ):
            check_size("train_size", value)
