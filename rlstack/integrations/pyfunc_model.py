"""The MLflow pyfunc entry point of an exported rlstack policy.

``rlstack.integrations.export.export_policy`` saves this file as the model's code
(MLflow's models-from-code), so loading an exported model runs this file and
unpickles nothing.
"""

import mlflow

from rlstack.integrations.exported import PolicyModel

mlflow.models.set_model(PolicyModel())
