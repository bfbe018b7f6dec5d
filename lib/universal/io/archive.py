"""A folder as a zip archive streamed in chunks: whatever the folder's size, memory holds one chunk."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


class _Chunks:
    """A write-only, unseekable file whose bytes are collected until taken."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:  # zipfile asks where it is; there is no seeking back
        return self.written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_chunks(folder: str | Path, prefix: str = "") -> Iterator[bytes]:
    """The files below ``folder`` as a zip archive (deflated, names relative to ``folder`` under
    ``prefix``), chunk by chunk."""
    folder, sink = Path(folder), _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as source, archive.open(f"{prefix}{path.relative_to(folder)}", "w") as entry:
                while block := source.read(CHUNK):
                    entry.write(block)
                    if len(sink.parts) > 8:
                        yield sink.take()
            yield sink.take()
    yield sink.take()
