"""``universal add-class CHECKPOINT NAME -o OUT``: a new class named by a text prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

from universal.catalog import DEFAULT_KIND, KINDS
from universal.nets.text import read_embedding


def add_parser(commands) -> None:
    add = commands.add_parser(
        "add-class", help="append a class named by a text prompt; writes a new checkpoint"
    )
    add.add_argument("checkpoint", type=Path, help="checkpoint to extend")
    add.add_argument("name", help="display name of the new class, e.g. 'Appendix'")
    add.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (own format)")
    add.add_argument("--prompt", help="text to embed (default: 'A computerized tomography of a NAME')")
    add.add_argument("--embedding", type=Path, help="512-value embedding (.pt or .npy) instead of CLIP")
    add.add_argument("--clip-weights", type=Path, help="CLIP ViT-B-32 weights file (OpenAI ViT-B-32.pt)")
    add.add_argument("--kind", choices=KINDS, default=DEFAULT_KIND)
    add.add_argument("--parent", action="append", default=[], help="parent organ of a lesion (repeatable)")
    add.add_argument("--synonym", action="append", default=[], help="another accepted name (repeatable)")
    add.add_argument("--color", type=int, nargs=3, metavar=("R", "G", "B"), help="display colour, 0-255")
    add.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from universal.nets.checkpoint import load_model, save_model
    from universal.nets.text import TextEncoder

    model = load_model(args.checkpoint)
    embedding = read_embedding(args.embedding) if args.embedding else None
    info = model.add_class(
        args.name,
        args.prompt,
        embedding,
        kind=args.kind,
        parents=args.parent,
        color=tuple(args.color) if args.color else None,
        synonyms=args.synonym,
        text_encoder=TextEncoder(args.clip_weights) if embedding is None else None,
    )
    save_model(model, args.output, provenance={"added_class": info.name})
    print(f"added class {info.id} '{info.name}' (prompt: {info.prompt!r}); wrote {args.output}")
