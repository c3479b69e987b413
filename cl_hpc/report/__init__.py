"""Reports: ``python -m cl_hpc.report efficiency [RUN]`` (a terminal table) and ``html`` (self-contained
pages of a run, a model, an experiment: matplotlib SVG in jinja2 templates, no network)."""
