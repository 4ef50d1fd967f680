"""MLflow's UI: the links bnsweep prints, and the runs view the runs link opens.

What MLflow 3.17.2's and 3.18.0's UI decide, read in their source (mlflow/server/js/src;
the same code is in the installed bundle, mlflow/server/js/build/static/js):

- GenAI or model training is the browser's choice, not the experiment's.
  `useExperimentKind` (experiment-tracking/utils/ExperimentKindUtils.ts) returns the kind of
  the `workflowType` of `WorkflowTypeProvider` (common/contexts/WorkflowTypeContext.tsx)
  whenever `shouldEnableWorkflowBasedNavigation()` (common/utils/FeatureUtils.ts) is true,
  which both builds hard-code; the experiment tag `mlflow.experimentKind` is read only
  where it is false. `workflowType` is the page address's `workflowType` parameter, else
  the browser's local storage `mlflow.workflowType_v1`, which only a click on the switch
  at the top of the sidebar ("GenAI" | "Model training") writes (and only when the click
  changes what the page shows); GenAI until then.
- So an experiment opened without the parameter (from the experiment list, from the
  compare page's breadcrumb, or a run page's breadcrumb) opens on GenAI's overview
  (its sidebar's "Observability" and "Traces"; 3.17 adds a "Detect Issues" pop-up, 3.18 a
  "Send your first trace" guide) in a browser that never clicked "Model training", and
  a run page opened from the runs table (its link drops the parameter) is labelled
  "Evaluations" (the run page header's `shouldRouteToEvaluations`: a GenAI kind and no
  logged model) with GenAI's sidebar.
  No tag, run field or link parameter changes that: the README says which click does.
- A link can carry a runs-table view: `viewStateShareKey=KEY` loads the experiment tag
  `mlflow.sharedViewState.KEY` (what the UI's Share button writes; plain JSON is read),
  its search facets and its UI state except runsExpanded, runsPinned, runsHidden,
  runsVisibilityMap and autoRefreshEnabled (`useSharedExperimentViewState`). So the
  sweep cannot be unfolded by a link, but its trials can be grouped by arm, which lists
  them under one row per arm. The parameter must be on the runs tab's own address
  (experiments/ID/runs): the redirect from experiments/ID keeps only workflowType, the
  time range and the workspace.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

from bnsweep.config import EXECUTION_KEYS, REFERENCE

# Where `mlflow ui` serves a local store (its default host and port).
LOCAL_UI = "http://127.0.0.1:5000"
# MLflow's name for the runs table's model-training view in a page address (WorkflowType).
MODEL_TRAINING = "workflowType=machine_learning"
# The experiment tag a shared view lives in (MLflow's EXPERIMENT_PAGE_VIEW_STATE_SHARE_TAG_PREFIX).
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# The experiment's kind: no MLflow UI that pyproject admits reads it (above); kept because
# it is MLflow's own statement of the experiment's kind, read where the flag is off.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
ARM_TAG = "arm"  # a trial's arm (trials.norm_arm), a tag of its run


def ui_base(uri: str) -> str:
    """The UI that serves a tracking URI: a server itself, else `mlflow ui` on its default port."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


def view_key(parent_run_id: str) -> str:
    return f"bnsweep-{parent_run_id}"


def runs_view(parent_run_id: str, varied: Sequence[str], arm_keys: Sequence[str]) -> dict[str, Any]:
    """The runs table of one sweep: its trials (the filter; MLflow adds their parent run as
    "Additional runs"), grouped by arm with each arm's best (the group row shows a column's
    max), and the columns the comparison needs: the arm, the settings the study varies
    (its params, as a trial's run name writes them) and best val_acc."""
    settings = [k for k in varied if k in REFERENCE and k not in arm_keys and k not in EXECUTION_KEYS]
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "selectedColumns": [f"tags.`{ARM_TAG}`", *(f"params.`{k}`" for k in settings), "metrics.`best_val_acc`"],
        "groupBy": {"aggregateFunction": "max", "groupByKeys": [{"mode": "tag", "groupByData": ARM_TAG}]},
    }


def view_tag(parent_run_id: str, varied: Sequence[str], arm_keys: Sequence[str]) -> tuple[str, str]:
    """The experiment tag (key, value) that holds the sweep's runs view."""
    return VIEW_TAG_PREFIX + view_key(parent_run_id), json.dumps(runs_view(parent_run_id, varied, arm_keys))


def runs_link(uri: str, experiment_id: str, parent_run_id: str) -> str:
    """The sweep's runs table in its view (view_tag), model training in any browser."""
    return (f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}"
            f"&viewStateShareKey={view_key(parent_run_id)}")


def compare_link(uri: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's comparison of the given runs, with model training's sidebar."""
    query = urllib.parse.urlencode({"runs": json.dumps(list(run_ids)), "experiments": json.dumps([experiment_id])},
                                   quote_via=urllib.parse.quote)
    return f"{ui_base(uri)}/#/compare-runs?{query}&{MODEL_TRAINING}"
