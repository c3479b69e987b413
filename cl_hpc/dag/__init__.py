"""The pipeline DAG: model (Plan, TaskSpec, Unit), validation and expansion (build), views (render),
resume planning (resume), import checks (targets). Import from the submodules: this package stays
light for job start-up."""
