"""Device profiles: one TOML file per board, read by ``edgerun.profiles``.

A package only so that the files ship inside the wheel and resolve the same way from a
checkout, an editable install and an installed wheel.
"""
