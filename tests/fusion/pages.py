"""Checks of the HTML pages vafusion writes (run reports, comparison pages): well-formed, offline, real PNGs."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}


class Parsed(HTMLParser):
    """Collects <img src> and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_page(path: Path, name: str = "report.html") -> Parsed:
    """Parse the report, check it is self-contained, and check every figure it shows."""
    assert path.name == name and path.is_file()
    source = path.read_text(encoding="utf-8")
    assert "http://" not in source and "https://" not in source  # nothing fetched from a network
    assert "<script" not in source.lower()
    page = Parsed()
    page.feed(source)
    page.close()
    assert page.stack == [], f"unclosed elements {page.stack}"
    for src in page.images:
        assert not Path(src).is_absolute()
        image = path.parent / src
        assert image.is_file(), src
        assert image.read_bytes()[:8] == PNG_SIGNATURE, src
        with Image.open(image) as im:
            im.verify()
        with Image.open(image) as im:
            width, height = im.size
        assert 300 <= width <= 2000 and 200 <= height <= 3000, (src, im.size)
    return page
