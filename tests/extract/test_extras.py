"""A family whose package is missing says, in one line, which vafusion extra installs it."""

from __future__ import annotations

import sys

import pytest

from vafusion.errors import VafusionError
from vafusion.extract.options import ExtractOptions


@pytest.mark.parametrize(
    ("module", "entry", "extra"),
    [("timm", "timm:resnet18", "timm"), ("transformers", "hf:openai/whisper-base", "hf"), ("silero_vad", "vad", "vad")],
)
def test_a_missing_package_names_its_extra(module, entry, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed
    with pytest.raises(VafusionError) as caught:
        ExtractOptions(features=(entry,), weights={entry: "random"} if extra == "timm" else {})
    message = str(caught.value)
    assert "\n" not in message and f"pip install 'vafusion[{extra}]'" in message and message.startswith(entry)
