"""Training toolkit: build, train, evaluate and export the seed Keras models.

Typical usage::

    python -m training imdb --synthetic --quick --out exports
    python -m training list --json
"""
