"""bertgeom.model."""
