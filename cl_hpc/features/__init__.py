"""The feature store: a catalog of documented feature views, their materialization, and the offline
and online stores."""
