"""Python-backend steps of the ensembles (decode / encode); model.py files stay thin."""
