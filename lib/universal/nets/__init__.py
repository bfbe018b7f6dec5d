"""The networks: one registry record per backbone (:mod:`universal.nets.registry`), the
:class:`~universal.nets.model.UniversalModel` (backbone, text-driven class heads), CLIP text
embeddings, checkpoints (released and own format), and the compiled runtime."""
