"""bertgeom.report."""
