"""reports/index.html read back for tests: its elements' URL attributes, headings, images and the pair
browser's JSON (stdlib html.parser: what a browser would fetch is in these attributes)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

URL_ATTRIBUTES = ("src", "href", "srcset", "action", "poster", "data", "formaction")


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        """(tag, attribute, value) of every attribute that makes a browser load something."""
        self.headings: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self.pair_data: dict = {}
        self.csp: str | None = None
        self._heading: list[str] | None = None
        self._json: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.urls += [(tag, k, v or "") for k, v in attrs if k in URL_ATTRIBUTES]
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a.get("content")
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = []
        if tag == "script" and a.get("id") == "pair-data":
            self._json = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        if tag == "script" and self._json is not None:
            self.pair_data = json.loads("".join(self._json))
            self._json = None

    def handle_data(self, data):
        for buf in (self._heading, self._json):
            if buf is not None:
                buf.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def local(url: str) -> bool:
    """A URL the page may use from disk: an in-page fragment or inline data."""
    return url.startswith(("#", "data:"))
