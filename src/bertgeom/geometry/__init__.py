"""bertgeom.geometry."""
