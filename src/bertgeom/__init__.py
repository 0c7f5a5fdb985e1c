"""bertgeom: SARS-CoV-2 spike variant classification with BERT, and the geometry of BERT."""

__version__ = "0.1.0"

__all__ = ["__version__", "encode", "model_dir"]


def __getattr__(name: str) -> object:
    """Public functions, imported on first use (``import bertgeom`` stays light)."""
    if name == "encode":
        from bertgeom.pipeline.encode import encode

        return encode
    if name == "model_dir":
        from bertgeom.model.shipped import find_model

        return find_model
    raise AttributeError(f"module 'bertgeom' has no attribute {name!r}")
