"""Adapting a model to new ground: suggest where to label (suggest.py); the labels come back through
``dunemap prepare --patches`` and the model is fine-tuned with ``dunemap train --init-from``."""
