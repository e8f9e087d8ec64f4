"""The metadata store's numbered yoyo migrations, applied in order by ``migrate.apply``.

Each ``NNNN-name.py`` file here is a yoyo migration (yoyo injects ``step``); this
``__init__`` only makes the directory a package, so the migrations ship in every install
of the project (setuptools includes a package's ``.py`` files, not its ``.sql`` files).
"""
