"""MLflow tracking and model registry: log a run, register a version, gate promotion to `champion`.

The only package that talks to MLflow, split by concern: `store` (which tracking store, a client,
aliases), `pyfunc` (the logged model and loading it back), `promotion` (registering a version and the
gate that moves `champion`, champion history and rollback).
"""

from pipeline.registry.promotion import (CHALLENGER, CHAMPION, CHAMPION_HISTORY_TAG, GATE_KIND_TAG, GATE_SET_TAG,
                                         MAX_HISTORY, PROMOTE_HISTORY_TAG, ModelDownloads, Rescore, apply_decision,
                                         apply_promote, champion_history, champion_trained_on, compare_challenger,
                                         comparison_markdown, decision_record, flat_metrics, move_champion,
                                         promote_history, recorded_scores, register_and_gate, rollback_champion,
                                         scores_on_gate_set)
from pipeline.registry.pyfunc import (IMAGE_SIGNATURE, MODEL_CODE, DemoirePyfunc, download_model_files,
                                      load_registered_model, load_registered_model_and_spec, log_demoire_model,
                                      model_version_info, serving_config)
from pipeline.registry.store import connect, default_tracking_uri, resolve_alias, use_tracking_store

__all__ = [
    "CHALLENGER", "CHAMPION", "CHAMPION_HISTORY_TAG", "GATE_KIND_TAG", "GATE_SET_TAG", "IMAGE_SIGNATURE", "MAX_HISTORY",
    "MODEL_CODE", "PROMOTE_HISTORY_TAG", "DemoirePyfunc", "ModelDownloads", "Rescore", "apply_decision",
    "apply_promote", "champion_history", "champion_trained_on", "compare_challenger", "comparison_markdown", "connect",
    "decision_record", "default_tracking_uri", "download_model_files", "flat_metrics", "load_registered_model",
    "load_registered_model_and_spec", "log_demoire_model", "model_version_info", "move_champion",
    "promote_history", "recorded_scores",
    "register_and_gate", "resolve_alias", "rollback_champion", "scores_on_gate_set", "serving_config",
    "use_tracking_store",
]
