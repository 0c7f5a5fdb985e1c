"""The report: sections built from the saved artefacts of a run directory (never a model run).

``artefacts`` loads the stage folders, ``sections`` lists the sections in order (their builders
live in ``stage_sections``, ``geometry_sections``, ``stream_sections`` and ``methods``),
``findings`` states the geometry results as sentences and ``html`` holds the building blocks and
the page template. ``bertgeom.pipeline.report.run`` writes the page and its tables.
"""
