"""Responsible-data stages that resample the pool: de-biasing (`curation.stages.debias`) and the
language mixture (`curation.stages.langmix`), after SigLIP 2's data recipe."""
