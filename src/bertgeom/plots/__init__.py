"""bertgeom.plots."""
