"""Scale-out: predict over record shards (in process or on Ray) and analyze on Ray actors.

Nothing here imports Ray at module level; :mod:`bertgeom.scale.ray_engine` does, when an engine
that needs it is chosen (the optional extra ``bertgeom[ray]``).
"""
