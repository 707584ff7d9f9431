"""``download-models`` against the fake hub again, this time with the huggingface_hub the
gpu extra pins (< 1.0, what the image runs): that version takes an interrupted download
for a whole snapshot unless the hub is asked."""

import pytest

from ..test_download_models import (  # noqa: F401  (collected here too)
    hub,
    test_a_download_cut_short_is_completed_not_taken_for_whole,
    test_a_download_cut_short_is_not_taken_for_whole_when_the_hub_is_gone,
    test_a_first_download_from_the_hub_is_usable_offline,
)

pytestmark = pytest.mark.gpu


def test_this_tier_runs_the_pinned_hub():
    import huggingface_hub

    assert int(huggingface_hub.__version__.split(".")[0]) < 1
