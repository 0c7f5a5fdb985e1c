"""bertgeom.pipeline."""
