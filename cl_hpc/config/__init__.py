"""Configuration: the portable Resources record (resources.py), the typed Hydra schemas
(schema.py, ml.py) registered in Hydra's ConfigStore."""
