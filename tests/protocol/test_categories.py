"""Category paths: every name a product's category answers to (rules and kitchen stations)."""

from __future__ import annotations

import pytest

from protocol.categories import category_keys


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("", []),
        ("烘焙", ["烘焙"]),
        ("现制饮品/咖啡", ["现制饮品/咖啡", "现制饮品", "咖啡"]),
        ("a/b/c", ["a/b/c", "a/b", "a", "c"]),
    ],
)
def test_a_category_answers_to_its_path_its_ancestors_and_its_own_name(path, keys):
    assert category_keys(path) == keys


def test_a_prefix_without_the_separator_is_not_an_ancestor():
    assert "鲜食" not in category_keys("鲜食品")
